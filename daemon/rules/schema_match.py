"""Which files a rule takes: the ``match:`` section (Match, Range) and the ``companions:``
that arrive with a photo (Companion). Import them from :mod:`daemon.rules.schema`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from daemon.rules import globs, templates
from daemon.rules.schema_common import (
    BRIEF_GLOBS,
    IMAGE_GLOBS,
    MAX_COMPANION_IMAGES,
    SOURCE_VARS,
    StrictModel,
    check_confined,
)


class Range(StrictModel):
    min: float | None = None
    max: float | None = None

    def holds(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class Match(StrictModel):
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


class Companion(StrictModel):
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
