"""A rule's steps: the ``steps:`` entries (Step) and the prompt variations one fans out
over (Variation). Import them from :mod:`daemon.rules.schema`."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from daemon.rules import templates
from daemon.rules.schema_common import (
    MAX_VARIATIONS,
    OUTPUT_VARS,
    SIDECAR_REFERENCES,
    SLUG,
    SOURCE_VARS,
    StrictModel,
    check_confined,
    parse_size,
)


class Step(StrictModel):
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

    @functools.cached_property
    def variations(self) -> tuple[Variation, ...]:
        """The prompt variations this step fans out over (one, without id, when none).
        Once per step object: every plan of a burst asks."""
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
        return tuple(out)

    @functools.cached_property
    def profiles(self) -> tuple[str, ...]:
        """The model profiles this step runs: one, or each one it compares."""
        if self.models is not None:
            return tuple(self.models)
        return (self.model,) if self.model is not None else ()  # _consistent: never empty

    def backend_params(self) -> dict[str, Any]:
        """What the backend gets: ``params`` and the named ones set (a new dict each time:
        a plan's may change)."""
        return dict(self._backend_params)

    @functools.cached_property
    def _backend_params(self) -> dict[str, Any]:
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
