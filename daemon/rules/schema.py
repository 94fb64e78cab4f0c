"""The rule file's schema: the pydantic models of a rule (Rule, Match, Step, Output, Range).

These models are the rule language: their fields are the keys a rule file may use, their
validators the checks that need no config (``daemon.rules.load.cross_check`` does the rest),
and ``darkroom rules schema`` prints them as JSON Schema. Docstrings of the models become
descriptions in that schema, so they are changed only together with ``rules/schema.json``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from daemon.errors import OutputError
from daemon.rules import globs, templates

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
                    f"step {step.name!r} takes input from {step.input!r},"
                    " which is not an earlier step"
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
            return DEFAULT_FOLDER + "/{step}-{model}-{variant}.{ext}"
        return DEFAULT_FOLDER + "/{step}-{variant}.{ext}"

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
        return folder if {"stem", "name"} & set(templates.fields(folder)) else DEFAULT_FOLDER

    @property
    def manifest_template(self) -> str:
        return self.output.manifest or f"{self.folder_template}/manifest.json"

    @property
    def sheet_template(self) -> str:
        return self.output.sheet or f"{self.folder_template}/sheet.png"

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
