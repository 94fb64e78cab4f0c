"""The Hugging Face side of loading: cache location, offline mode, "weights not here" messages.

Also :func:`quiet_progress`: no tqdm bars from diffusers/transformers while loading or saving.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backends.base import ModelSpec, ModelUnavailable

_TRUE = {"1", "true", "yes", "on"}


def offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hf_cache_dir() -> str | None:
    """The hub cache as the environment says *now* (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    return None


def unavailable(
    spec: ModelSpec, location: str, is_local: bool, exc: BaseException
) -> ModelUnavailable:
    """ModelUnavailable for a failed load: what is missing, where it was looked for, how to fix."""
    if is_local:
        return ModelUnavailable(
            f"model {spec.model}: the directory {location} is not a loadable diffusers pipeline "
            f"(it needs model_index.json and one folder per component): {exc}"
        )
    rev = f" at revision {spec.revision}" if spec.revision else ""
    rev_flag = f" --revision {spec.revision}" if spec.revision else ""
    cache = hf_cache_dir()
    if cache is None:
        try:
            from huggingface_hub import constants

            cache = constants.HF_HUB_CACHE
        except ImportError:
            cache = "~/.cache/huggingface/hub"
    where = "offline (HF_HUB_OFFLINE is set), " if offline() else ""
    gated = ""
    text = str(exc).lower()
    if "gated" in text or "401" in text or "403" in text or "restricted" in text:
        gated = (
            " The repository is gated: accept its licence on huggingface.co with your account "
            "and set HF_TOKEN (docs/models.md)."
        )
    return ModelUnavailable(
        f"model {spec.model}{rev} is not available: {where}its weights are not in the Hugging "
        f"Face cache {cache}. Fix: on a machine with hub access run "
        f"`HF_HOME=<dir> hf download {spec.model}{rev_flag}` and copy <dir> to this "
        f"machine's HF_HOME, "
        f"or point the profile's model at a local directory holding the pipeline "
        f"(model_index.json).{gated} ({type(exc).__name__}: {exc})"
    )


def from_hub(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by huggingface_hub (then it is about the weights, not the code)."""
    return type(exc).__module__.startswith("huggingface_hub")


@contextmanager
def quiet_progress() -> Iterator[None]:
    """No tqdm bars from diffusers/transformers while loading or saving (they flood logs)."""
    modules = []
    for name in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            continue
    enabled = [m.is_progress_bar_enabled() for m in modules]
    for m in modules:
        m.disable_progress_bar()
    try:
        yield
    finally:
        for m, was in zip(modules, enabled, strict=True):
            if was:
                m.enable_progress_bar()
