"""Where a rule's outputs go: the ``output:`` section (Output) and the default folders.
Import them from :mod:`daemon.rules.schema`."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import Field, field_validator

from daemon.errors import OutputError
from daemon.rules import templates
from daemon.rules.schema_common import OUTPUT_VARS, SOURCE_VARS, StrictModel

# The default output folder of an asset: unique per (source folder, file name), readable.
# ``{dir}`` empty leaves no double slash (paths are normalised).
DEFAULT_FOLDER = "{rule}/{dir}/{stem}.{source_ext}"
# A brief's rows: one folder each, inside the brief's own ({row} is "" for a one-prompt brief).
BRIEF_FOLDER = "{rule}/{dir}/{name}/{row}"


class Output(StrictModel):
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
