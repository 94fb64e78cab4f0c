"""Rule files: what to do with which files.

A rule is one YAML file in the rules directory (``*.yaml`` / ``*.yml``; files starting
with ``_`` or ``.`` are skipped). Loading reports every problem in every file at once,
each as ``file:line:col: message``. Matching an arrival against the rule set and turning
it into a plan (rendered prompts, seeds, output paths) happens here too, without loading
any model.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from daemon import globs, templates, yamlfile
from daemon.errors import ConfigError, OutputError, Problem, RuleError
from daemon.jobs import Arrival

IMAGE_GLOBS = ["**/*.jpg", "**/*.jpeg", "**/*.png", "**/*.webp", "**/*.tif", "**/*.tiff", "**/*.bmp"]

# Variables every prompt and path template may use; path templates add OUTPUT_VARS.
SOURCE_VARS = ("stem", "name", "ext", "dir", "source", "rule", "date")
OUTPUT_VARS = ("step", "model", "variant", "seed")

SLUG = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Match(_Strict):
    source: str | None = None
    sources: list[str] = []
    include: list[str] = Field(default_factory=lambda: list(IMAGE_GLOBS))
    exclude: list[str] = []

    @field_validator("include", "exclude")
    @classmethod
    def _globs(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            globs.compile_glob(pattern)
        return patterns

    @property
    def source_names(self) -> list[str]:
        return ([self.source] if self.source else []) + self.sources


class Step(_Strict):
    name: str = Field(pattern=SLUG)
    model: str
    variants: int = Field(1, ge=1, le=64)
    seed: int | None = Field(None, ge=0, lt=2**32)  # base seed: variant k uses seed + k
    seeds: list[int] | None = None  # explicit seeds, one per variant
    prompt: str | None = None  # replaces the rule's prompt for this step
    negative_prompt: str | None = None
    input: str | None = None  # an earlier step's name, or "source"; default: previous step
    strength: float | None = Field(None, gt=0, le=1)
    steps: int | None = Field(None, ge=1, le=200)
    guidance: float | None = Field(None, ge=0, le=50)
    width: int | None = Field(None, ge=8, le=8192, multiple_of=8)
    height: int | None = Field(None, ge=8, le=8192, multiple_of=8)
    params: dict[str, Any] = {}  # passed to the backend as they are

    @model_validator(mode="after")
    def _seeds_fit(self) -> Step:
        if self.seeds is not None and len(self.seeds) != self.variants:
            raise ValueError(f"seeds lists {len(self.seeds)} seeds but variants is {self.variants}")
        return self

    def backend_params(self) -> dict[str, Any]:
        named = {k: getattr(self, k) for k in ("strength", "steps", "guidance", "width", "height")}
        return {**self.params, **{k: v for k, v in named.items() if v is not None}}


def _check_stays_inside(template: str) -> None:
    """Refuse at load time what the sink would refuse for every file."""
    sample = {name: "x" for name in SOURCE_VARS + OUTPUT_VARS}
    try:
        templates.safe_relpath(templates.render(template, sample))
    except OutputError as exc:
        raise ValueError(str(exc)) from None


class Output(_Strict):
    sink: str
    path: str = "{rule}/{stem}/{step}-{variant}.png"
    manifest: str = "{rule}/{stem}/manifest.json"
    sheet: str = "{rule}/{stem}/sheet.png"

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        templates.check(value, SOURCE_VARS + OUTPUT_VARS)
        _check_stays_inside(value)
        suffix = PurePosixPath(value).suffix.lower()
        if suffix not in (".png", ".jpg", ".jpeg", ".webp"):
            raise ValueError(f"path must end in .png, .jpg, .jpeg or .webp (the output format), not {suffix or 'nothing'!r}")
        return value

    @field_validator("manifest", "sheet")
    @classmethod
    def _per_source(cls, value: str) -> str:
        templates.check(value, SOURCE_VARS)
        _check_stays_inside(value)
        return value


class Rule(_Strict):
    name: str = Field(pattern=SLUG)
    description: str | None = None
    match: Match
    prompt: str = ""
    negative_prompt: str | None = None
    steps: list[Step] = Field(min_length=1)
    output: Output

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            templates.check(value, SOURCE_VARS)
        return value

    @model_validator(mode="after")
    def _chain(self) -> Rule:
        seen: list[str] = []
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"two steps are named {step.name!r}; step names must be unique")
            if step.input not in (None, "source") and step.input not in seen:
                raise ValueError(f"step {step.name!r} takes input from {step.input!r}, which is not an earlier step")
            for text in (step.prompt, step.negative_prompt):
                if text is not None:
                    templates.check(text, SOURCE_VARS)
            seen.append(step.name)
        return self

    def digest(self) -> str:
        """Changes when the rule's meaning changes, not when whitespace or comments do."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def input_of(self, index: int) -> str:
        step = self.steps[index]
        if step.input:
            return step.input
        return "source" if index == 0 else self.steps[index - 1].name


@dataclass
class LoadedRule:
    rule: Rule
    file: Path
    positions: yamlfile.Positions

    def where(self, *loc: str | int) -> str:
        return self.positions.where(loc)


def _known_keys() -> set[str]:
    keys: set[str] = set()
    for model in (Rule, Match, Step, Output):
        keys.update(model.model_fields)
    return keys


def load_rule_file(path: Path) -> LoadedRule:
    data, positions = yamlfile.load(path)
    if not isinstance(data, dict):
        raise RuleError([Problem(f"{path}:1:1", "a rule file must be a mapping with name, match, prompt, steps and output")])
    try:
        rule = Rule.model_validate(data)
    except ValidationError as exc:
        raise RuleError(yamlfile.validation_problems(exc, positions, _known_keys())) from None
    except templates.TemplateError as exc:  # raised outside pydantic's wrapping
        raise RuleError([Problem(str(path), str(exc))]) from None
    return LoadedRule(rule, path, positions)


def rule_files(rules_dir: Path) -> list[Path]:
    if not rules_dir.is_dir():
        return []
    return sorted(
        p for p in rules_dir.iterdir()
        if p.suffix in (".yaml", ".yml") and not p.name.startswith(("_", ".")) and p.is_file()
    )


class RuleSet:
    """The loaded rules, in file-name order."""

    def __init__(self, rules: list[LoadedRule]):
        self.rules = rules
        self.by_name = {r.rule.name: r for r in rules}

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, name: str) -> Rule:
        return self.by_name[name].rule

    def matching(self, arrival: Arrival, *, any_source: bool = False) -> list[Rule]:
        """Every rule whose match selects ``arrival`` (all matching rules run)."""
        out = []
        for loaded in self.rules:
            match = loaded.rule.match
            if not any_source and arrival.source not in match.source_names:
                continue
            if globs.selects(arrival.key, match.include, match.exclude):
                out.append(loaded.rule)
        return out


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
            problems.append(Problem(item.where("name"), f"rule name {item.rule.name!r} is already used by {other.file}"))
        names[item.rule.name] = item
    if problems:
        raise RuleError(problems)
    return RuleSet(loaded)


def cross_check(rules: RuleSet, sources: set[str], sinks: set[str], profiles: set[str]) -> list[Problem]:
    """Problems only visible with the config: unknown sources, sinks and model profiles."""
    problems = []
    for item in rules.rules:
        rule = item.rule
        if not rule.match.source_names:
            problems.append(Problem(item.where("match"), "match names no source; add 'source: NAME'",
                                    yamlfile.suggest("", sources)))
        for i, name in enumerate(rule.match.source_names):
            if name not in sources:
                loc = ("match", "source") if rule.match.source == name else ("match", "sources", i - bool(rule.match.source))
                problems.append(Problem(item.where(*loc), f"unknown source {name!r}; configured sources: {', '.join(sorted(sources)) or 'none'}",
                                        yamlfile.suggest(name, sources)))
        if rule.output.sink not in sinks:
            problems.append(Problem(item.where("output", "sink"), f"unknown sink {rule.output.sink!r}; configured sinks: {', '.join(sorted(sinks)) or 'none'}",
                                    yamlfile.suggest(rule.output.sink, sinks)))
        for i, step in enumerate(rule.steps):
            if step.model not in profiles:
                problems.append(Problem(item.where("steps", i, "model"), f"unknown model profile {step.model!r}; see 'darkroom models'",
                                        yamlfile.suggest(step.model, profiles)))
    return problems


# -- planning -----------------------------------------------------------------------------


def source_variables(rule: Rule, arrival: Arrival, now: float | None = None) -> dict[str, str]:
    key = PurePosixPath(arrival.key)
    return {
        "stem": key.stem,
        "name": key.name,
        "ext": key.suffix.lstrip(".").lower(),
        "dir": str(key.parent) if str(key.parent) != "." else "",
        "source": arrival.source,
        "rule": rule.name,
        "date": time.strftime("%Y-%m-%d", time.localtime(now)),
    }


def plan_for(rule: Rule, arrival: Arrival, sha256: str, rng: random.Random | None = None) -> dict[str, Any]:
    """Everything needed to run ``rule`` on ``arrival``, as JSON-able data.

    Random seeds are drawn here, once, so retries and restarts reuse them and the
    manifest can record them.
    """
    rng = rng or random.SystemRandom()
    variables = source_variables(rule, arrival)
    steps = []
    for index, step in enumerate(rule.steps):
        if step.seeds is not None:
            seeds = list(step.seeds)
        else:
            base = step.seed if step.seed is not None else rng.randrange(2**31)
            seeds = [(base + k) % 2**32 for k in range(step.variants)]
        prompt = step.prompt if step.prompt is not None else rule.prompt
        negative = step.negative_prompt if step.negative_prompt is not None else rule.negative_prompt
        steps.append({
            "name": step.name,
            "model": step.model,
            "input": rule.input_of(index),
            "prompt": templates.render(prompt, variables),
            "negative_prompt": templates.render(negative, variables) if negative else None,
            "seeds": seeds,
            "params": step.backend_params(),
        })
    return {
        "rule": rule.name,
        "digest": rule.digest(),
        "sha256": sha256,
        "arrival": {"source": arrival.source, "key": arrival.key, "uri": arrival.uri, "size": arrival.size,
                    "etag": arrival.etag},
        "vars": variables,
        "prompt": templates.render(rule.prompt, variables),
        "negative_prompt": templates.render(rule.negative_prompt, variables) if rule.negative_prompt else None,
        "sink": rule.output.sink,
        "path": rule.output.path,
        "manifest": templates.safe_relpath(templates.render(rule.output.manifest, variables)),
        "sheet": templates.safe_relpath(templates.render(rule.output.sheet, variables)),
        "steps": steps,
    }


def output_path(plan: dict[str, Any], step: dict[str, Any], variant: int, seed: int) -> str:
    variables = {**plan["vars"], "step": step["name"], "model": step["model"], "variant": variant, "seed": seed}
    return templates.safe_relpath(templates.render(plan["path"], variables))
