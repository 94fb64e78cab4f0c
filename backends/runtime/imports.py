"""Lazy imports of the heavy libraries: a missing package becomes BackendMissing with its pip line."""

from __future__ import annotations

import importlib
from typing import Any

from backends.base import BackendMissing, InvalidRequest

# What to pip install for each import name (the floor is the oldest release we support).
PIP_NAMES = {
    "torch": "torch",
    "diffusers": "diffusers>=0.36",
    "transformers": "transformers>=4.45",
    "accelerate": "accelerate>=1.0",
    "safetensors": "safetensors>=0.4",
    "peft": "peft>=0.17",
    "sentencepiece": "sentencepiece>=0.2",
    "google": "protobuf>=4",
    "ftfy": "ftfy>=6",
    "imageio_ffmpeg": "imageio-ffmpeg>=0.5",
    "imageio": "imageio>=2.30",
    "torchvision": "torchvision",
}
DTYPES = ("float32", "float16", "bfloat16")
_TORCH_HINT = " (for a GPU, the CUDA build: see https://pytorch.org/get-started/locally/)"


def require(module: str, task: str) -> Any:
    """Import ``module`` or raise BackendMissing with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing(exc, f"task {task}") from exc


def missing(exc: ImportError, who: str) -> BackendMissing:
    """BackendMissing for ``exc``, saying that ``who`` (``task img2img``) needs the package."""
    name = (getattr(exc, "name", None) or str(exc)).split(".")[0]
    pip = PIP_NAMES.get(name, name)
    return BackendMissing(
        f"{who} needs the Python package {name!r}, which is not installed: "
        f"pip install '{pip}'{_TORCH_HINT if name == 'torch' else ''} ({exc})"
    )


def torch_dtype(name: str) -> Any:
    """The torch dtype called ``name``, or InvalidRequest naming the ones a profile may use."""
    import torch

    if name not in DTYPES:
        raise InvalidRequest(
            f"unknown dtype {name!r}: set the profile's dtype to one of {', '.join(DTYPES)}"
        )
    return getattr(torch, name)
