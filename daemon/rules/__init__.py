"""Rule files: what to do with which files. The language is documented in docs/rules.md.

A rule is one YAML file in the rules directory (``*.yaml`` / ``*.yml``; files starting
with ``_`` or ``.`` are skipped). Loading reports every problem in every file at once,
each as ``file:line:col: message``. Matching an arrival against the rule set and turning
it into a plan (rendered prompts, seeds, references, output paths) happens here too,
without loading any model.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from daemon.config import yamlfile
from daemon.rules import globs, templates
from daemon.errors import ConfigError, OutputError, Problem, RuleError
from daemon.types import Arrival

IMAGE_GLOBS = [
    "**/*.jpg",
    "**/*.jpeg",
    "**/*.png",
    "**/*.webp",
    "**/*.tif",
    "**/*.tiff",
    "**/*.bmp",
]
FILE_TYPES = ("jpeg", "png", "webp", "tiff", "bmp", "gif")

# Variables every prompt and path template may use; path templates add OUTPUT_VARS.
SOURCE_VARS = (
    "stem",
    "name",
    "ext",
    "source_ext",
    "dir",
    "folder",
    "top_folder",
    "source",
    "rule",
    "date",
    "width",
    "height",
)
OUTPUT_VARS = ("step", "model", "variant", "seed")

SLUG = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
VIDEO_FORMATS = ("mp4", "webp", "gif")
SIZE_PRESETS = {
    "square": (1, 1),
    "portrait": (4, 5),
    "landscape": (16, 9),
    "story": (9, 16),
    "banner": (1200, 628),
    "4:3": (4, 3),
    "3:2": (3, 2),
    "16:9": (16, 9),
    "9:16": (9, 16),
    "1:1": (1, 1),
    "4:5": (4, 5),
    "2:3": (2, 3),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(_Strict):
    min: float | None = None
    max: float | None = None

    def holds(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class Match(_Strict):
    """Which files a rule takes. Every condition given must hold."""

    source: str | None = None
    sources: list[str] = []
    include: list[str] = Field(default_factory=lambda: list(IMAGE_GLOBS))
    exclude: list[str] = []
    types: list[
        Literal["jpeg", "png", "webp", "tiff", "bmp", "gif"]
    ] = []  # by content, not by name
    min_width: int | None = Field(None, ge=1)
    max_width: int | None = Field(None, ge=1)
    min_height: int | None = Field(None, ge=1)
    max_height: int | None = Field(None, ge=1)
    min_megapixels: float | None = Field(None, gt=0)
    max_megapixels: float | None = Field(None, gt=0)
    orientation: Literal["portrait", "landscape", "square"] | None = None
    aspect: Range | None = None  # width / height
    sidecar: Literal["required", "optional"] = "optional"
    animated: Literal["first_frame", "reject"] = "first_frame"  # animated GIF/WebP/APNG inputs

    @field_validator("include", "exclude")
    @classmethod
    def _globs(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            globs.compile_glob(pattern)
        return patterns

    @property
    def source_names(self) -> list[str]:
        return ([self.source] if self.source else []) + self.sources

    @property
    def needs_image(self) -> bool:
        return bool(
            self.types
            or self.orientation
            or self.aspect
            or any(
                getattr(self, k) is not None
                for k in (
                    "min_width",
                    "max_width",
                    "min_height",
                    "max_height",
                    "min_megapixels",
                    "max_megapixels",
                )
            )
        )


class Step(_Strict):
    name: str = Field(pattern=SLUG)
    model: str | None = None
    models: list[str] | None = None  # compare: the same input and prompt through each
    variants: int = Field(1, ge=1, le=64)
    seed: int | None = Field(None, ge=0, lt=2**32)  # base seed: variant k uses seed + k
    seeds: list[int] | None = None  # explicit seeds, one per variant
    prompt: str | None = None  # replaces the rule's prompt for this step
    negative_prompt: str | None = None
    input: str | None = None  # an earlier step's name, or "source"; default: previous step
    pick: Literal["all", "first"] | list[int] = "all"  # which of the input step's outputs go on
    references: list[
        str
    ] = []  # globs, relative to the rules directory, or "NAME:glob" in a named folder
    mask: str | None = None  # "sidecar" (photo.mask.png), "alpha", or a path
    strength: float | None = Field(None, gt=0, le=1)
    steps: int | None = Field(None, ge=1, le=500)
    guidance: float | None = Field(None, ge=0, le=100)
    size: str | None = None  # "1024x768", or an aspect preset: square, portrait, 16:9, ...
    max_side: int | None = Field(None, ge=8, le=8192)
    width: int | None = Field(None, ge=8, le=8192, multiple_of=8)
    height: int | None = Field(None, ge=8, le=8192, multiple_of=8)
    frames: int | None = Field(None, ge=1, le=1000)
    fps: float | None = Field(None, gt=0, le=120)
    video_format: Literal["mp4", "webp", "gif"] = "mp4"
    params: dict[str, Any] = {}  # passed to the backend as they are

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            templates.fields(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Step:
        if (self.model is None) == (self.models is None):
            raise ValueError("give either model: PROFILE or models: [A, B, ...]")
        if self.models is not None and (
            not self.models or len(set(self.models)) != len(self.models)
        ):
            raise ValueError("models: must list at least one profile, each once")
        if self.seeds is not None and "variants" not in self.model_fields_set:
            self.variants = len(self.seeds)  # seeds: [1, 2] means two variants
        if self.seeds is not None and len(self.seeds) != self.variants:
            raise ValueError(f"seeds lists {len(self.seeds)} seeds but variants is {self.variants}")
        if self.size is not None:
            parse_size(self.size)
        if self.mask not in (None, "sidecar", "alpha"):
            templates.check(self.mask, SOURCE_VARS)
        return self

    @property
    def profiles(self) -> list[str]:
        return self.models if self.models is not None else [self.model]

    def backend_params(self) -> dict[str, Any]:
        named = {
            k: getattr(self, k)
            for k in ("strength", "steps", "guidance", "width", "height", "frames", "fps")
        }
        return {**self.params, **{k: v for k, v in named.items() if v is not None}}


def parse_size(text: str) -> tuple[int, int] | tuple[float, float]:
    """``"1024x768"`` -> pixels; a preset name or ``"W:H"`` -> an aspect ratio (floats)."""
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if match:
        w, h = int(match[1]), int(match[2])
        if w % 8 or h % 8 or not (8 <= w <= 8192 and 8 <= h <= 8192):
            raise ValueError(
                f"size {text!r}: width and height must be multiples of 8 between 8 and 8192"
            )
        return w, h
    if text in SIZE_PRESETS:
        w, h = SIZE_PRESETS[text]
        return float(w), float(h)
    match = re.fullmatch(r"(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)", text)
    if match and float(match[1]) > 0 and float(match[2]) > 0:
        return float(match[1]), float(match[2])
    raise ValueError(
        f"size {text!r} is not WIDTHxHEIGHT (1024x768), W:H (16:9) or one of {', '.join(SIZE_PRESETS)}"
    )


class Output(_Strict):
    sink: str
    path: str | None = (
        None  # default: {rule}/{stem}/{step}-{variant}.{ext} ({model} added for compare steps)
    )
    manifest: str = "{rule}/{stem}/manifest.json"
    sheet: str = "{rule}/{stem}/sheet.png"
    format: Literal["png", "jpeg", "webp"] = "png"
    quality: int = Field(92, ge=1, le=100)
    keep_icc: bool = True  # carry the source's colour profile into outputs
    on_success: Literal["keep", "move"] = "keep"
    processed_dir: str = ".processed"  # for on_success: move, relative to the source root
    quarantine: str | None = None  # where failed inputs go (see README: reliability)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        templates.check(value, SOURCE_VARS + OUTPUT_VARS)
        _check_stays_inside(value)
        suffix = PurePosixPath(value).suffix.lower()
        if suffix not in (".png", ".jpg", ".jpeg", ".webp", ".{ext}"):
            raise ValueError(
                f"path must end in .{{ext}}, .png, .jpg or .webp (the output format), not {suffix or 'nothing'!r}"
            )
        return value

    @field_validator("manifest", "sheet")
    @classmethod
    def _per_source(cls, value: str) -> str:
        templates.check(value, SOURCE_VARS)
        _check_stays_inside(value)
        return value


def _check_stays_inside(template: str) -> None:
    """Refuse at load time what the sink would refuse for every file."""
    sample = {name: "x" for name in SOURCE_VARS + OUTPUT_VARS + ("ext",)}
    try:
        templates.safe_relpath(templates.render(template, sample))
    except OutputError as exc:
        raise ValueError(str(exc)) from None


class Rule(_Strict):
    name: str = Field(pattern=SLUG)
    description: str | None = None
    priority: int = 0  # higher first
    daily_budget: float | None = Field(
        None, ge=0
    )  # USD per day for hosted models; local ones are free
    stop: bool = False  # when this rule matches, rules after it are not tried
    match: Match
    vars: dict[str, str | int | float] = {}
    prompt: str = ""
    negative_prompt: str | None = None
    steps: list[Step] = Field(min_length=1)
    output: Output

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            templates.fields(value)  # malformed or unsafe: an error at its own line
        return value

    @field_validator("vars")
    @classmethod
    def _vars(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"variable name {name!r} must be letters, digits and _")
            if name in SOURCE_VARS + OUTPUT_VARS:
                raise ValueError(f"variable {name!r} is built in; choose another name")
        return value

    @model_validator(mode="after")
    def _chain(self) -> Rule:
        seen: list[str] = []
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"two steps are named {step.name!r}; step names must be unique")
            if step.input not in (None, "source") and step.input not in seen:
                raise ValueError(
                    f"step {step.name!r} takes input from {step.input!r}, which is not an earlier step"
                )
            seen.append(step.name)
        if (
            self.output.path
            and "{model}" not in self.output.path
            and any(s.models for s in self.steps)
        ):
            raise ValueError("output.path must contain {model} when a step compares several models")
        return self

    @property
    def path_template(self) -> str:
        if self.output.path:
            return self.output.path
        if any(s.models for s in self.steps):
            return "{rule}/{stem}/{step}-{model}-{variant}.{ext}"
        return "{rule}/{stem}/{step}-{variant}.{ext}"

    def digest(self) -> str:
        """Changes when the rule's meaning changes, not when whitespace or comments do."""
        canonical = json.dumps(
            self.model_dump(mode="json", exclude={"description"}),
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def input_of(self, index: int) -> str:
        step = self.steps[index]
        if step.input:
            return step.input
        return "source" if index == 0 else self.steps[index - 1].name

    def variables_used(self) -> set[str]:
        texts = [self.prompt, self.negative_prompt] + [
            t for s in self.steps for t in (s.prompt, s.negative_prompt)
        ]
        return {name for text in texts if text for name in templates.fields(text)}


@dataclass
class LoadedRule:
    rule: Rule
    file: Path | None
    positions: yamlfile.Positions

    def where(self, *loc: str | int) -> str:
        return self.positions.where(loc)


def _known_keys() -> set[str]:
    keys: set[str] = set()
    for model in (Rule, Match, Step, Output, Range):
        keys.update(model.model_fields)
    return keys


def load_rule_file(path: Path) -> LoadedRule:
    data, positions = yamlfile.load(path)
    if not isinstance(data, dict):
        raise RuleError(
            [
                Problem(
                    f"{path}:1:1",
                    "a rule file must be a mapping with name, match, prompt, steps and output",
                )
            ]
        )
    try:
        rule = Rule.model_validate(data)
    except ValidationError as exc:
        raise RuleError(yamlfile.validation_problems(exc, positions, _known_keys())) from None
    loaded = LoadedRule(rule, path, positions)
    problems = _unknown_variables(loaded)
    if problems:
        raise RuleError(problems)
    return loaded


def _unknown_variables(loaded: LoadedRule) -> list[Problem]:
    """Variables no rule var, built-in or sidecar could provide. Sidecar vars are only known
    per file, so a rule that reads sidecars (match.sidecar) defers those to run time."""
    rule = loaded.rule
    if rule.match.sidecar == "required":
        return []
    known = set(SOURCE_VARS) | set(rule.vars)
    problems = []
    places: list[tuple[tuple[str | int, ...], str | None]] = [
        (("prompt",), rule.prompt),
        (("negative_prompt",), rule.negative_prompt),
    ]
    for i, step in enumerate(rule.steps):
        places += [
            (("steps", i, "prompt"), step.prompt),
            (("steps", i, "negative_prompt"), step.negative_prompt),
        ]
    for loc, text in places:
        for name in templates.fields(text or ""):
            if name not in known:
                problems.append(
                    Problem(
                        loaded.positions.where(loc, value=True),
                        f"unknown variable {{{name}}}",
                        yamlfile.suggest(name, known)
                        or "define it under vars:, or in a sidecar"
                        " file (then set match.sidecar: required)",
                    )
                )
    return problems


def rule_files(rules_dir: Path) -> list[Path]:
    if not rules_dir.is_dir():
        return []
    return sorted(
        p
        for p in rules_dir.iterdir()
        if p.suffix in (".yaml", ".yml") and not p.name.startswith(("_", ".")) and p.is_file()
    )


@dataclass
class ImageFacts:
    """What matching may look at without decoding pixels: from the image header."""

    type: str | None
    width: int
    height: int

    @property
    def orientation(self) -> str:
        if self.width == self.height:
            return "square"
        return "landscape" if self.width > self.height else "portrait"


@dataclass
class Verdict:
    rule: str
    matched: bool
    reasons: list[str] = field(default_factory=list)  # why not, for `darkroom match`


def judge(
    rule: Rule,
    arrival: Arrival,
    facts: ImageFacts | None,
    has_sidecar: bool,
    *,
    any_source: bool = False,
    shallow: bool = False,
) -> Verdict:
    """Whether ``rule`` takes ``arrival``, with every reason it does not. ``shallow``
    checks only what needs no read: source and globs."""
    m = rule.match
    why: list[str] = []
    if not any_source and arrival.source not in m.source_names:
        why.append(f"source {arrival.source!r} is not one of {m.source_names}")
    if m.include and not globs.match_any(m.include, arrival.key):
        why.append(f"{arrival.key} matches none of include {m.include}")
    if m.exclude and globs.match_any(m.exclude, arrival.key):
        why.append(f"{arrival.key} matches exclude {m.exclude}")
    if shallow:
        return Verdict(rule.name, not why, why)
    if m.sidecar == "required" and not has_sidecar:
        why.append("no sidecar (.txt/.json/.yaml next to the image) and match.sidecar is required")
    if m.needs_image:
        if facts is None:
            why.append("not a readable image, so its size and type are unknown")
        else:
            why += _image_reasons(m, facts)
    return Verdict(rule.name, not why, why)


def _image_reasons(m: Match, facts: ImageFacts) -> list[str]:
    mp = facts.width * facts.height / 1e6
    why = []
    if m.types and facts.type not in m.types:
        why.append(f"type {facts.type} is not one of {m.types}")
    for label, value, low, high in (
        ("width", facts.width, m.min_width, m.max_width),
        ("height", facts.height, m.min_height, m.max_height),
        ("megapixels", round(mp, 2), m.min_megapixels, m.max_megapixels),
    ):
        if low is not None and value < low:
            why.append(f"{label} {value} < min_{label} {low}")
        if high is not None and value > high:
            why.append(f"{label} {value} > max_{label} {high}")
    if m.orientation and facts.orientation != m.orientation:
        why.append(f"orientation {facts.orientation} is not {m.orientation}")
    if m.aspect and not m.aspect.holds(facts.width / facts.height):
        why.append(
            f"aspect {facts.width / facts.height:.3f} is outside {m.aspect.min}..{m.aspect.max}"
        )
    return why


class RuleSet:
    """The loaded rules, highest priority first, then by file name."""

    def __init__(self, rules: list[LoadedRule]):
        self.rules = sorted(rules, key=lambda r: -r.rule.priority)
        self.by_name = {r.rule.name: r for r in rules}

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, name: str) -> Rule:
        return self.by_name[name].rule

    @property
    def needs_image(self) -> bool:
        return any(r.rule.match.needs_image for r in self.rules)

    def verdicts(
        self,
        arrival: Arrival,
        facts: ImageFacts | None = None,
        has_sidecar: bool = False,
        *,
        any_source: bool = False,
        shallow: bool = False,
    ) -> list[Verdict]:
        """One verdict per rule, in order; after a matching ``stop: true`` rule the rest are
        reported as not tried."""
        out, stopped_by = [], None
        for loaded in self.rules:
            if stopped_by:
                out.append(
                    Verdict(
                        loaded.rule.name,
                        False,
                        [f"not tried: {stopped_by!r} matched and has stop: true"],
                    )
                )
                continue
            verdict = judge(
                loaded.rule, arrival, facts, has_sidecar, any_source=any_source, shallow=shallow
            )
            out.append(verdict)
            if verdict.matched and loaded.rule.stop and not shallow:
                stopped_by = loaded.rule.name
        return out

    def matching(
        self,
        arrival: Arrival,
        facts: ImageFacts | None = None,
        has_sidecar: bool = False,
        *,
        any_source: bool = False,
        shallow: bool = False,
    ) -> list[Rule]:
        """Every rule that takes ``arrival`` (all matching rules run unless one says stop)."""
        verdicts = self.verdicts(
            arrival, facts, has_sidecar, any_source=any_source, shallow=shallow
        )
        return [self.get(v.rule) for v in verdicts if v.matched]


def load_rules(rules_dir: Path) -> RuleSet:
    """Load every rule file; raise one RuleError listing every problem in every file."""
    problems: list[Problem] = []
    loaded: list[LoadedRule] = []
    for path in rule_files(rules_dir):
        try:
            loaded.append(load_rule_file(path))
        except ConfigError as exc:
            problems.extend(exc.problems)
    names: dict[str, LoadedRule] = {}
    for item in loaded:
        other = names.get(item.rule.name)
        if other:
            problems.append(
                Problem(
                    item.where("name"),
                    f"rule name {item.rule.name!r} is already used by {other.file}",
                )
            )
        names[item.rule.name] = item
    if problems:
        raise RuleError(problems)
    return RuleSet(loaded)


def cross_check(
    rules: RuleSet,
    sources: set[str],
    sinks: set[str],
    profiles: set[str],
    reference_dirs: dict[str, Path] | None = None,
    rules_dir: Path | None = None,
) -> list[Problem]:
    """Problems only visible with the config: unknown sources, sinks, profiles, references."""
    problems = []
    for item in rules.rules:
        rule = item.rule
        if not rule.match.source_names:
            problems.append(
                Problem(item.where("match"), "match names no source; add 'source: NAME'")
            )
        for i, name in enumerate(rule.match.source_names):
            if name not in sources:
                loc = (
                    ("match", "source")
                    if rule.match.source == name
                    else ("match", "sources", i - bool(rule.match.source))
                )
                problems.append(
                    Problem(
                        item.positions.where(loc, value=True),
                        f"unknown source {name!r}; configured sources: {', '.join(sorted(sources)) or 'none'}",
                        yamlfile.suggest(name, sources),
                    )
                )
        if rule.output.sink not in sinks:
            problems.append(
                Problem(
                    item.positions.where(("output", "sink"), value=True),
                    f"unknown sink {rule.output.sink!r}; configured sinks: {', '.join(sorted(sinks)) or 'none'}",
                    yamlfile.suggest(rule.output.sink, sinks),
                )
            )
        for i, step in enumerate(rule.steps):
            for j, profile in enumerate(step.profiles):
                if profile not in profiles:
                    loc = ("steps", i, "model") if step.model else ("steps", i, "models", j)
                    problems.append(
                        Problem(
                            item.positions.where(loc, value=True),
                            f"unknown model profile {profile!r}; see 'darkroom models'",
                            yamlfile.suggest(profile, profiles),
                        )
                    )
            for j, pattern in enumerate(step.references):
                try:
                    if not resolve_references(
                        [pattern], rules_dir or Path("."), reference_dirs or {}
                    ):
                        problems.append(
                            Problem(
                                item.positions.where(("steps", i, "references", j), value=True),
                                f"references {pattern!r} matches no file",
                            )
                        )
                except ValueError as exc:
                    problems.append(
                        Problem(
                            item.positions.where(("steps", i, "references", j), value=True),
                            str(exc),
                        )
                    )
    return problems


def resolve_references(
    patterns: list[str], rules_dir: Path, reference_dirs: dict[str, Path]
) -> list[Path]:
    """Reference images, sorted: ``glob`` relative to the rules directory, or ``NAME:glob``
    inside the configured reference folder NAME. Symlinks leaving the folder are refused."""
    found: list[Path] = []
    for pattern in patterns:
        base = rules_dir
        name, sep, rest = pattern.partition(":")
        if sep and name in reference_dirs:
            base, pattern = reference_dirs[name], rest
        elif sep and re.fullmatch(r"[A-Za-z0-9_-]+", name) and len(name) > 1:
            raise ValueError(
                f"reference folder {name!r} is not configured (reference_dirs: {', '.join(reference_dirs) or 'none'})"
            )
        if pattern.startswith("/") or ".." in PurePosixPath(pattern).parts:
            raise ValueError(
                f"reference {pattern!r} must stay inside its folder (no absolute paths or '..')"
            )
        root = base.resolve()
        for path in sorted(base.glob(pattern)):
            if path.is_file() and path.resolve().is_relative_to(root):
                found.append(path)
    return found


# -- planning -----------------------------------------------------------------------------


def source_variables(
    rule: Rule, arrival: Arrival, facts: ImageFacts | None = None, now: float | None = None
) -> dict[str, Any]:
    key = PurePosixPath(arrival.key)
    parts = key.parts[:-1]
    ext = key.suffix.lstrip(".").lower()
    return {
        "stem": key.stem,
        "name": key.name,
        "ext": ext,
        "source_ext": ext,
        "dir": "/".join(parts),
        "folder": parts[-1] if parts else "",
        "top_folder": parts[0] if parts else "",
        "source": arrival.source,
        "rule": rule.name,
        "date": time.strftime("%Y-%m-%d", time.localtime(now)),
        "width": facts.width if facts else "",
        "height": facts.height if facts else "",
    }


@dataclass
class Sidecar:
    """Per-file values next to an image: ``photo.txt`` (the prompt) or ``photo.json`` /
    ``photo.yaml`` (``vars`` plus overrides of prompt, negative_prompt, seed, steps)."""

    key: str
    sha256: str
    vars: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None

    OVERRIDES = ("prompt", "negative_prompt", "seed", "steps", "vars")

    @classmethod
    def parse(cls, key: str, data: bytes) -> Sidecar:
        from daemon.errors import InputError

        sha = hashlib.sha256(data).hexdigest()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{key}: sidecar is not UTF-8 text") from None
        if key.lower().endswith(".txt"):
            return cls(key, sha, prompt=text.strip())
        try:
            values = (
                json.loads(text) if key.lower().endswith(".json") else yamlfile.loads(text, key)[0]
            )
        except (ValueError, ConfigError) as exc:
            raise InputError(
                f"{key}: sidecar is not valid {'JSON' if key.endswith('.json') else 'YAML'}: {exc}"
            ) from None
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise InputError(f"{key}: sidecar must be a mapping of {', '.join(cls.OVERRIDES)}")
        unknown = set(values) - set(cls.OVERRIDES)
        if unknown:
            raise InputError(
                f"{key}: unknown sidecar key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(cls.OVERRIDES)}"
            )
        variables = values.get("vars") or {}
        if not isinstance(variables, dict) or not all(
            isinstance(v, (str, int, float)) for v in variables.values()
        ):
            raise InputError(f"{key}: sidecar vars must be a mapping of names to text or numbers")
        seed, steps = values.get("seed"), values.get("steps")
        for label, number in (("seed", seed), ("steps", steps)):
            if number is not None and (not isinstance(number, int) or number < 0):
                raise InputError(f"{key}: sidecar {label} must be a whole number >= 0")
        return cls(
            key,
            sha,
            vars=dict(variables),
            prompt=values.get("prompt"),
            negative_prompt=values.get("negative_prompt"),
            seed=seed,
            steps=steps,
        )


SIDECAR_SUFFIXES = (".txt", ".json", ".yaml", ".yml")


def sidecar_keys(image_key: str) -> list[str]:
    stem = str(PurePosixPath(image_key).with_suffix(""))
    return [stem + suffix for suffix in SIDECAR_SUFFIXES]


def mask_key(image_key: str) -> str:
    return str(PurePosixPath(image_key).with_suffix("")) + ".mask.png"


def is_sidecar(key: str) -> bool:
    lower = key.lower()
    return lower.endswith(SIDECAR_SUFFIXES) or lower.endswith(".mask.png")


class TemplateVariableError(ValueError):
    pass


def _render(text: str, variables: dict[str, Any], where: str) -> str:
    try:
        return templates.render(text, variables)
    except templates.TemplateError as exc:
        raise TemplateVariableError(f"{where}: {exc}") from None


def plan_for(
    rule: Rule,
    arrival: Arrival,
    sha256: str,
    *,
    facts: ImageFacts | None = None,
    sidecar: Sidecar | None = None,
    references: dict[str, list[dict[str, str]]] | None = None,
    extra_content: str | None = None,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Everything needed to run ``rule`` on ``arrival``, as JSON-able data.

    Random seeds are drawn here, once, so retries and restarts reuse them and the
    manifest can record them. ``references`` maps step names to resolved reference files
    ({path, sha256}). A variable no one defines makes the plan carry an ``error`` naming
    it: its jobs then fail with that reason instead of running.
    """
    rng = rng or random.SystemRandom()
    errors: list[str] = []

    def render(text: str, where: str) -> str:
        try:
            return _render(text, variables, where)
        except TemplateVariableError as exc:
            errors.append(str(exc))
            return text

    variables: dict[str, Any] = {
        **rule.vars,
        **(sidecar.vars if sidecar else {}),
        **source_variables(rule, arrival, facts),
    }
    base_prompt = sidecar.prompt if sidecar and sidecar.prompt is not None else rule.prompt
    base_negative = (
        sidecar.negative_prompt
        if sidecar and sidecar.negative_prompt is not None
        else rule.negative_prompt
    )
    units = []
    for index, step in enumerate(rule.steps):
        if sidecar and sidecar.seed is not None and step.seeds is None:
            seeds = [(sidecar.seed + k) % 2**32 for k in range(step.variants)]
        elif step.seeds is not None:
            seeds = list(step.seeds)
        else:
            base = step.seed if step.seed is not None else rng.randrange(2**31)
            seeds = [(base + k) % 2**32 for k in range(step.variants)]
        prompt = step.prompt if step.prompt is not None else base_prompt
        negative = step.negative_prompt if step.negative_prompt is not None else base_negative
        params = step.backend_params()
        if sidecar and sidecar.steps is not None:
            params["steps"] = sidecar.steps
        mask = step.mask
        if mask not in (None, "sidecar", "alpha"):
            mask = render(mask, f"steps[{index}].mask")
        for profile in step.profiles:
            units.append(
                {
                    "id": step.name if step.models is None else f"{step.name}:{profile}",
                    "name": step.name,
                    "model": profile,
                    "input": rule.input_of(index),
                    "pick": step.pick,
                    "prompt": render(prompt, f"step {step.name!r} prompt"),
                    "negative_prompt": render(negative, f"step {step.name!r} negative_prompt")
                    if negative
                    else None,
                    "seeds": seeds,
                    "params": params,
                    "size": step.size,
                    "max_side": step.max_side,
                    "references": (references or {}).get(step.name, []),
                    "mask": mask,
                    "video_format": step.video_format,
                }
            )
    plan = {
        "rule": rule.name,
        "digest": rule.digest(),
        "sha256": sha256,
        "content": content_id(sha256, sidecar, extra_content),
        "sidecar": {"key": sidecar.key, "sha256": sidecar.sha256} if sidecar else None,
        "arrival": {
            "source": arrival.source,
            "key": arrival.key,
            "uri": arrival.uri,
            "size": arrival.size,
            "etag": arrival.etag,
        },
        "vars": {k: v for k, v in variables.items()},
        "prompt": render(base_prompt, "prompt"),
        "negative_prompt": render(base_negative, "negative_prompt") if base_negative else None,
        "sink": rule.output.sink,
        "path": rule.path_template,
        "format": rule.output.format,
        "quality": rule.output.quality,
        "keep_icc": rule.output.keep_icc,
        "on_success": rule.output.on_success,
        "quarantine": rule.output.quarantine,
        "daily_budget": rule.daily_budget,
        "animated": rule.match.animated,
        "processed_dir": rule.output.processed_dir,
        "manifest": _per_source_path(rule.output.manifest, variables, sha256),
        "sheet": _per_source_path(rule.output.sheet, variables, sha256),
        "steps": units,
    }
    if errors:
        plan["error"] = "; ".join(dict.fromkeys(errors))
    return plan


def _per_source_path(template: str, variables: dict[str, Any], sha256: str) -> str:
    safe = {k: path_safe(v, keep_slashes=k == "dir") for k, v in variables.items()}
    try:
        return templates.safe_relpath(templates.render(template, safe))
    except OutputError:
        # A name that cannot be a path still needs a place for its failure report.
        return f"{variables['rule']}/_unplaceable/{sha256[:16]}/{PurePosixPath(template).name}"


def content_id(sha256: str, sidecar: Sidecar | None, extra: str | None = None) -> str:
    """The identity of what is processed: the image's bytes, plus its sidecar's (and mask's)
    if any, so that editing ``photo.txt`` makes the photo new work."""
    if sidecar is None and extra is None:
        return sha256
    parts = [sha256, sidecar.sha256 if sidecar else "", extra or ""]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def path_safe(value: Any, *, keep_slashes: bool = False) -> Any:
    """A variable's value as a path piece: control and invisible characters (a newline in a
    file name) become "_", and so does "/" except in values that are paths (``dir``)."""
    if not isinstance(value, str):
        return value
    out = "".join("_" if unicodedata.category(c) in ("Cc", "Cf") else c for c in value)
    return out if keep_slashes else out.replace("/", "_").replace("\\", "_")


def output_path(
    plan: dict[str, Any], unit: dict[str, Any], variant: int, seed: int, *, video: bool = False
) -> str:
    ext = unit["video_format"] if video else EXTENSIONS[plan.get("format", "png")]
    template = plan["path"]
    if template.endswith((".png", ".jpg", ".jpeg", ".webp")) and video:
        template = template.rsplit(".", 1)[0] + ".{ext}"
    variables = {
        **plan["vars"],
        "step": unit["name"],
        "model": unit["model"],
        "variant": variant,
        "seed": seed,
        "ext": ext,
    }
    safe = {k: path_safe(v, keep_slashes=k == "dir") for k, v in variables.items()}
    return templates.safe_relpath(templates.render(template, safe))
