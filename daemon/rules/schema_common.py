"""What the rule models share: the template variables, the default globs, size presets, and
the checks on paths and sizes a rule names.

The models themselves live in :mod:`daemon.rules.schema` (Rule) and its parts
(:mod:`~daemon.rules.schema_match`, :mod:`~daemon.rules.schema_step`,
:mod:`~daemon.rules.schema_output`); import them all from :mod:`daemon.rules.schema`.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from pydantic import BaseModel, ConfigDict

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


class StrictModel(BaseModel):
    """A part of a rule: an unknown key is an error, never ignored."""

    model_config = ConfigDict(extra="forbid")


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
