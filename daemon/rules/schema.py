"""The rule file's schema: the pydantic models of a rule (Rule, Match, Step, Output, Range).

These models are the rule language: their fields are the keys a rule file may use, their
validators the checks that need no config (``daemon.rules.load.cross_check`` does the rest),
and ``darkroom rules schema`` prints them as JSON Schema. Docstrings of the models become
descriptions in that schema, so they are changed only together with ``rules/schema.json``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from daemon.errors import OutputError
from daemon.rules import globs, templates
from daemon.rules.metadata import META_VARS

IMAGE_GLOBS = [
    "**/*.jpg",
    "**/*.jpeg",
    "**/*.png",
    "**/*.webp",
    "**/*.tif",
    "**/*.tiff",
    "**/*.bmp",
    "**/*.heic",
    "**/*.heif",
    "**/*.avif",
]
FILE_TYPES = ("jpeg", "png", "webp", "tiff", "bmp", "gif", "heif", "avif")
# Briefs without a photo: a rule with ``match: {briefs: true}`` takes these (and only these).
# The ".brief" part is what tells a brief from an image's sidecar (photo.yaml).
BRIEF_SUFFIXES = (".brief.yaml", ".brief.yml", ".brief.csv")
BRIEF_GLOBS = [f"**/*{suffix}" for suffix in BRIEF_SUFFIXES]
MAX_COMPANION_IMAGES = 13  # with the arriving image: 14, the most a hosted model takes


def is_brief(key: str) -> bool:
    """Whether ``key`` names a brief (``*.brief.yaml``, ``*.brief.csv``): never a sidecar."""
    return key.lower().endswith(BRIEF_SUFFIXES)


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
    "sidecar",  # the text of a .txt sidecar ("" when there is none)
    "row",  # a brief's row: its name or "row-N" ("" for a one-prompt brief and for photos)
    "brief",  # a brief row's prompt, as written ("" for photos)
    *META_VARS,  # {meta.caption}, {meta.keywords}, ...: the image's own metadata
)
# {variation}: a prompt variation's short id ("p1", "calm-summer"); "" for other steps.
OUTPUT_VARS = ("step", "model", "variant", "seed", "variation")
# What a reviewer's decision adds, for rules started by one (on: approved / a refine round).
DECISION_VARS = ("decision", "note", "decided_by", "parent_rule", "parent_key", "round")
# In a step's references: the references the photo's sidecar lists.
SIDECAR_REFERENCES = "sidecar"
MAX_VARIATIONS = 64  # prompts x matrix combinations of one step

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
        Literal["jpeg", "png", "webp", "tiff", "bmp", "gif", "heif", "avif"]
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
    # Briefs without a photo: the rule takes *.brief.yaml / *.brief.csv files (and no images);
    # each row runs the steps from its prompt alone (the first step: a text-to-image model).
    briefs: bool = False

    @model_validator(mode="after")
    def _brief_conditions(self) -> Match:
        if not self.briefs:
            return self
        if "include" not in self.model_fields_set:
            self.include = list(BRIEF_GLOBS)
        photo_only = [k for k in _PHOTO_CONDITIONS if getattr(self, k) not in (None, [])]
        if self.sidecar == "required":
            photo_only.append("sidecar")
        if photo_only:
            raise ValueError(
                f"a brief has no photo, so {', '.join(photo_only)} cannot hold for it:"
                " remove them, or make a separate rule for photos"
            )
        return self

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


_PHOTO_CONDITIONS = (
    "types",
    "min_width",
    "max_width",
    "min_height",
    "max_height",
    "min_megapixels",
    "max_megapixels",
    "orientation",
    "aspect",
)


class Companion(_Strict):
    """An image that goes to a step's model together with the arriving one (``product.jpg`` +
    ``product.scene.jpg``). ``path`` is a template relative to the arriving file's folder
    (``{stem}.scene.jpg``) and may be a glob (``*.jpg``: the folder's other images, at most
    ``max``). The group is complete when every required companion has arrived; whichever file
    of the group settles last starts it (see docs/rules.md)."""

    path: str
    required: bool = True
    max: int = Field(1, ge=1, le=MAX_COMPANION_IMAGES)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        templates.check(value, SOURCE_VARS)
        check_confined(value)
        if "/" in value.replace("\\", "/"):
            raise ValueError(
                f"companion path {value!r} must name a file in the arriving file's folder"
                " (no '/'): a companion lives next to its photo"
            )
        return value


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
    # Globs (templates), relative to the rules directory or "NAME:glob" in a named folder;
    # "sidecar": the references the photo's sidecar lists.
    references: list[str] = []
    mask: str | None = None  # "sidecar" (photo.mask.png), "alpha", or a path (a template)
    # Names of the rule's companions this step's model gets with its input (after the input,
    # before the references): several inputs for one output.
    companions: list[str] = []
    prompts: list[str] | None = None  # prompt variations: one unit per prompt
    prompt_matrix: dict[str, list[str | int | float]] | None = None  # every combination
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

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value or len(set(value)) != len(value):
            raise ValueError("prompts: must list at least one prompt, each once")
        for prompt in value:
            templates.fields(prompt)
        return value

    @field_validator("prompt_matrix")
    @classmethod
    def _matrix(
        cls, value: dict[str, list[str | int | float]] | None
    ) -> dict[str, list[str | int | float]] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("prompt_matrix: name at least one variable with its values")
        for name, values in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"prompt_matrix variable {name!r} must be letters, digits and _")
            if name in SOURCE_VARS + OUTPUT_VARS:
                raise ValueError(f"prompt_matrix variable {name!r} is built in; choose another")
            if not values or len(set(map(str, values))) != len(values):
                raise ValueError(f"prompt_matrix.{name}: list at least one value, each once")
        return value

    @field_validator("references")
    @classmethod
    def _references(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if pattern != SIDECAR_REFERENCES:
                check_confined(pattern.partition(":")[2] if _named(pattern) else pattern)
        return value

    @field_validator("params")
    @classmethod
    def _watermark(cls, value: dict[str, Any]) -> dict[str, Any]:
        watermark = value.get("watermark")
        if isinstance(watermark, str):
            check_confined(watermark.partition(":")[2] if _named(watermark) else watermark)
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
            check_confined(self.mask.partition(":")[2] if _named(self.mask) else self.mask)
        if self.prompts is not None and self.prompt is not None:
            raise ValueError("give either prompt: or prompts: [...], not both")
        if len(self.variations) * len(self.profiles) > MAX_VARIATIONS:
            raise ValueError(
                f"this step makes {len(self.variations) * len(self.profiles)} prompt and model"
                f" combinations; at most {MAX_VARIATIONS} (split it into several steps)"
            )
        return self

    @property
    def variations(self) -> list[Variation]:
        """The prompt variations this step fans out over (one, without id, when none)."""
        prompts: list[tuple[str, str | None]] = (
            [(f"p{i + 1}", p) for i, p in enumerate(self.prompts)] if self.prompts else [("", None)]
        )
        combos: list[tuple[str, dict[str, str | int | float]]] = [("", {})]
        for name, values in (self.prompt_matrix or {}).items():
            slugs = _unique_slugs([str(v) for v in values])
            combos = [
                ("-".join(x for x in (ident, slug) if x), {**chosen, name: value})
                for ident, chosen in combos
                for slug, value in zip(slugs, values, strict=True)
            ]
        out = []
        for pid, prompt in prompts:
            for mid, chosen_values in combos:
                ident = "-".join(x for x in (pid, mid) if x)
                out.append(Variation(ident or None, prompt, chosen_values))
        return out

    @property
    def profiles(self) -> list[str]:
        """The model profiles this step runs: one, or each one it compares."""
        if self.models is not None:
            return self.models
        return [self.model] if self.model is not None else []  # _consistent: never empty

    def backend_params(self) -> dict[str, Any]:
        named = {
            k: getattr(self, k)
            for k in ("strength", "steps", "guidance", "width", "height", "frames", "fps")
        }
        return {**self.params, **{k: v for k, v in named.items() if v is not None}}


@dataclass(frozen=True)
class Variation:
    """One prompt variation of a step: its short id (in output names; None when the step
    has no variations), its own prompt (from ``prompts:``; None: the step's or the rule's)
    and its ``prompt_matrix`` values."""

    id: str | None
    prompt: str | None
    values: dict[str, str | int | float]


def _unique_slugs(values: list[str]) -> list[str]:
    """Short, path-safe, distinct ids for matrix values: "Golden hour" -> "golden-hour"."""
    slugs: list[str] = []
    for value in values:
        slug = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")[:20].strip("-") or "v"
        base, n = slug, 2
        while slug in slugs:
            slug, n = f"{base}{n}", n + 1
        slugs.append(slug)
    return slugs


def _named(pattern: str) -> bool:
    """Whether ``pattern`` names a reference folder: ``brand:logos/*.png``."""
    name, sep, _rest = pattern.partition(":")
    return bool(sep) and bool(re.fullmatch(r"[A-Za-z0-9_-]{2,}", name))


def check_confined(pattern: str) -> None:
    """Refuse a path a rule names (reference, mask, watermark) that could leave its folder:
    absolute, home-relative, a drive letter, or with a ``..`` segment. Checked on the template
    as written (``check``) and again on every rendered value (plan time)."""
    text = pattern.replace("\\", "/")
    if text.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", text):
        raise ValueError(
            f"{pattern!r} must be relative to the rules folder (or a reference_dirs entry,"
            " as NAME:path); absolute paths are not allowed"
        )
    if ".." in PurePosixPath(text).parts:
        raise ValueError(
            f"{pattern!r} must stay inside the rules folder (or its reference_dirs entry);"
            " '..' is not allowed"
        )


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
        f"size {text!r} is not WIDTHxHEIGHT (1024x768), W:H (16:9)"
        f" or one of {', '.join(SIZE_PRESETS)}"
    )


# The default output folder of an asset: unique per (source folder, file name), readable.
# ``{dir}`` empty leaves no double slash (paths are normalised).
DEFAULT_FOLDER = "{rule}/{dir}/{stem}.{source_ext}"
# A brief's rows: one folder each, inside the brief's own ({row} is "" for a one-prompt brief).
BRIEF_FOLDER = "{rule}/{dir}/{name}/{row}"


class Output(_Strict):
    """Where a rule's outputs go. Every output folder belongs to one input; see docs/rules.md."""

    sink: str
    path: str | None = None  # default: {rule}/{dir}/{stem}.{source_ext}/{step}-{variant}.{ext}
    manifest: str | None = None  # default: manifest.json in the outputs' folder
    sheet: str | None = None  # default: sheet.png in the outputs' folder
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
                "path must end in .{ext}, .png, .jpg or .webp (the output format),"
                f" not {suffix or 'nothing'!r}"
            )
        return value

    @field_validator("manifest", "sheet")
    @classmethod
    def _per_source(cls, value: str | None) -> str | None:
        if value is None:
            return None
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
    # What starts it: a file arriving, or a reviewer's decision on another rule's output
    # (the decided variant is the input; ``after`` limits which rules' outputs).
    on: Literal["arrival", "approved", "rejected"] = "arrival"
    after: list[str] = []
    # The rule a "refine" on one of this rule's outputs runs (default: this rule again).
    refine: str | None = Field(None, pattern=SLUG)
    match: Match = Field(default_factory=Match)
    vars: dict[str, str | int | float] = {}
    # Images that arrive with the photo: name -> Companion (or just its path template).
    companions: dict[str, Companion] = {}
    prompt: str = ""
    negative_prompt: str | None = None
    steps: list[Step] = Field(min_length=1)

    @field_validator("companions", mode="before")
    @classmethod
    def _companions(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name in value:
                if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", str(name)):
                    raise ValueError(f"companion name {name!r} must be letters, digits, _ and -")
            return {k: {"path": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

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
        if self.after and self.on == "arrival":
            raise ValueError(
                "'after' names the rules whose decided outputs start this one:"
                " it needs on: approved or on: rejected"
            )
        seen: list[str] = []
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"two steps are named {step.name!r}; step names must be unique")
            if step.input not in (None, "source") and step.input not in seen:
                raise ValueError(
                    f"step {step.name!r} takes input from {step.input!r},"
                    " which is not an earlier step"
                )
            seen.append(step.name)
            unknown = [c for c in step.companions if c not in self.companions]
            if unknown:
                known = ", ".join(self.companions) or "none: add a companions: section"
                raise ValueError(
                    f"step {step.name!r} names companions {unknown} the rule does not define"
                    f" (defined: {known})"
                )
        if self.match.briefs and self.companions:
            raise ValueError("a rule that takes briefs has no photo to pair companions with")
        if self.match.briefs and self.output.path:
            folder = PurePosixPath(self.output.path).parent
            if "row" not in templates.fields(str(folder)):
                raise ValueError(
                    "output.path of a rule that takes briefs must name {row} in its folder"
                    " (each row of a brief owns its own folder), e.g."
                    " {rule}/{name}/{row}/{step}-{variant}.{ext}"
                )
        if (
            self.output.path
            and "{model}" not in self.output.path
            and any(s.models for s in self.steps)
        ):
            raise ValueError("output.path must contain {model} when a step compares several models")
        matrix = self.matrix_variables() - set(self.vars)
        for step in self.steps:
            texts: list[str | None] = [
                *(step.prompts or [step.prompt if step.prompt is not None else self.prompt])
            ]
            texts.append(step.negative_prompt or self.negative_prompt)
            named = {n for t in texts if t for n in templates.fields(t)}
            lacking = sorted((named & matrix) - set(step.prompt_matrix or {}))
            if lacking:
                raise ValueError(
                    f"step {step.name!r} has no prompt_matrix for"
                    f" {', '.join('{' + n + '}' for n in lacking)}, which its prompt names;"
                    " give the step its own prompt: (or the same prompt_matrix)"
                )
        if (
            self.output.path
            and "{variation}" not in self.output.path
            and any(s.prompts or s.prompt_matrix for s in self.steps)
        ):
            raise ValueError(
                "output.path must contain {variation} when a step has prompts: or prompt_matrix:"
            )
        return self

    @property
    def path_template(self) -> str:
        if self.output.path:
            return self.output.path
        if self.match.briefs:  # one folder per row: summer.brief.csv/row-3/...
            return BRIEF_FOLDER + "/{step}-{variant}.{ext}"
        varies = "-{variation}" if any(s.prompts or s.prompt_matrix for s in self.steps) else ""
        if any(s.models for s in self.steps):
            return DEFAULT_FOLDER + "/{step}-{model}" + varies + "-{variant}.{ext}"
        return DEFAULT_FOLDER + "/{step}" + varies + "-{variant}.{ext}"

    @property
    def folder_template(self) -> str:
        """The folder of the outputs: the leading part of the path template that names no
        output variable ({step}, {model}, ...) — when it names the file ({stem} or {name}),
        so that it is one input's folder; else the default folder."""
        kept: list[str] = []
        for part in PurePosixPath(self.path_template).parts[:-1]:
            if set(templates.fields(part)) & set(OUTPUT_VARS + ("ext",)):
                break
            kept.append(part)
        folder = "/".join(kept)
        if self.match.briefs:
            return folder if "row" in templates.fields(folder) else BRIEF_FOLDER
        return folder if {"stem", "name"} & set(templates.fields(folder)) else DEFAULT_FOLDER

    @property
    def manifest_template(self) -> str:
        return self.output.manifest or f"{self.folder_template}/manifest.json"

    @property
    def sheet_template(self) -> str:
        return self.output.sheet or f"{self.folder_template}/sheet.png"

    def digest(self) -> str:
        """Changes when the rule's meaning changes, not when whitespace or comments do."""
        return self._digest

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Rule:
        copied = super().model_copy(update=update, deep=deep)
        for cached in ("_digest", "uses_metadata"):  # computed from the fields: not copied
            copied.__dict__.pop(cached, None)
        return copied

    @functools.cached_property
    def _digest(self) -> str:
        # Once per rule object: every plan names it (a burst plans thousands).
        meaning = self.model_dump(mode="json", exclude={"description"})
        for step in meaning["steps"]:
            # Keys added later count only when used: an unchanged rule keeps its digest.
            for key in ("prompts", "prompt_matrix"):
                if step.get(key) is None:
                    step.pop(key, None)
            if not step.get("companions"):
                step.pop("companions", None)
        if not meaning.get("companions"):
            meaning.pop("companions", None)
        if not meaning["match"].get("briefs"):
            meaning["match"].pop("briefs", None)
        for key, default in (("on", "arrival"), ("after", []), ("refine", None)):
            if meaning.get(key) == default:
                meaning.pop(key, None)
        canonical = json.dumps(
            meaning,
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

    def template_variables(self) -> set[str]:
        """Every variable any template of the rule names: prompts, prompt variations,
        references, masks, watermarks and output paths."""
        texts = [self.prompt, self.negative_prompt, self.path_template, self.output.manifest]
        texts += [self.output.sheet]
        for step in self.steps:
            texts += [step.prompt, step.negative_prompt, *(step.prompts or []), *step.references]
            texts += [step.mask, step.params.get("watermark")]
        return {name for text in texts if isinstance(text, str) for name in templates.fields(text)}

    @functools.cached_property
    def uses_metadata(self) -> bool:
        """Whether a template names ``{meta.*}``: then intake reads the image's metadata."""
        return any(name.startswith("meta.") for name in self.template_variables())

    def matrix_variables(self) -> set[str]:
        """The names the steps' ``prompt_matrix`` define (known to their prompts)."""
        return {name for s in self.steps for name in (s.prompt_matrix or {})}
