"""The packages each task needs beyond torch and diffusers, checked before anything is loaded.

A missing extra is a configuration fault: :func:`check_extras` raises BackendMissing (never
retried: the same worker would fail the same way) naming the task, the package, why the model
needs it and the exact install line. Checks use ``importlib.util.find_spec``: nothing is
imported, so checking costs nothing.

``mp4`` is not a task but an output format: :func:`check_extras` with ``formats=["mp4"]``
checks its encoder (the runner encodes clips; see :mod:`backends.video_io`).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable
from dataclasses import dataclass

from backends.base import BackendMissing


@dataclass(frozen=True)
class Extra:
    module: str  # the import name find_spec looks for
    pip: str  # what to install
    why: str  # what the model does with it


_SENTENCEPIECE = Extra(
    "sentencepiece",
    "sentencepiece>=0.2",
    "its T5 tokenizer is a SentencePiece model (tokenizer/spiece.model, no tokenizer.json)",
)
_PROTOBUF = Extra(
    "google.protobuf",
    "protobuf>=4",
    "transformers converts the SentencePiece model to a fast tokenizer through protobuf",
)
_FTFY = Extra("ftfy", "ftfy>=6", "diffusers' Wan pipelines clean every prompt with ftfy")
_TORCHVISION = Extra(
    "torchvision",
    "torchvision",
    "transformers' Qwen2-VL image processor (the pipeline's processor) is built on torchvision",
)
_IMAGEIO_FFMPEG = Extra(
    "imageio_ffmpeg", "imageio-ffmpeg>=0.5", "it bundles the ffmpeg that encodes mp4 (H.264)"
)

# Task -> the extras its pipeline needs. A literal table: read it, extend it.
TASK_EXTRAS: dict[str, tuple[Extra, ...]] = {
    "ltx-i2v": (_SENTENCEPIECE, _PROTOBUF),
    "wan-i2v": (_FTFY,),
    "multi-edit": (_TORCHVISION,),
}
FORMAT_EXTRAS: dict[str, tuple[Extra, ...]] = {"mp4": (_IMAGEIO_FFMPEG,)}


def missing_extras(task: str, formats: Iterable[str] = ()) -> list[Extra]:
    """The extras ``task`` (and the output ``formats``) need that are not installed."""
    wanted = list(TASK_EXTRAS.get(task, ()))
    for fmt in formats:
        wanted += FORMAT_EXTRAS.get(fmt, ())
    return [extra for extra in wanted if not _installed(extra.module)]


def check_extras(task: str, formats: Iterable[str] = ()) -> None:
    """Raise BackendMissing naming every missing extra of ``task`` and how to install it."""
    absent = missing_extras(task, formats)
    if not absent:
        return
    reasons = "; ".join(f"{extra.pip.split('>')[0]} ({extra.why})" for extra in absent)
    install = " ".join(f"'{_pip_line(extra)}'" for extra in absent)
    hint = ""
    if any(extra.module == "torchvision" for extra in absent):
        hint = (
            ". torchvision must be the build made for the installed torch (same CUDA or CPU "
            "flavour, from the same index as torch); where the platform has no such build, "
            "run multi-image edits with a hosted profile (nano-banana-pro, seedream-4)"
        )
    raise BackendMissing(
        f"task {task} cannot load: it needs {reasons}. Install: pip install {install}{hint}"
    )


def _pip_line(extra: Extra) -> str:
    if extra.module != "torchvision":
        return extra.pip
    version = _torch_version()
    if version is None:
        return "torchvision"
    major, minor = version
    # torchvision 0.(minor + 15) is built for torch 2.minor (2.11 -> 0.26, 2.13 -> 0.28).
    return f"torchvision==0.{minor + 15}.*" if major == 2 else "torchvision"


def _torch_version() -> tuple[int, int] | None:
    try:
        from importlib.metadata import version

        found = re.match(r"(\d+)\.(\d+)", version("torch"))
    except Exception:  # noqa: BLE001 - no torch metadata: give the unpinned line
        return None
    return (int(found.group(1)), int(found.group(2))) if found else None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing ("google" for google.protobuf)
        return False
