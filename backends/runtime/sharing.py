"""Weight sharing: pipelines of several tasks on one base model hold its modules once.

The first load goes through ``from_pretrained`` and is remembered (weakly) under the key
(resolved model location, revision, dtype, device, the options that change the weights);
a later load with the same key is built with ``TargetPipeline.from_pipe(existing)``, which
reuses the loaded modules (``kontext`` + ``kontext-inpaint`` on FLUX.1-Kontext-dev hold one
transformer, not two). Each pipeline gets its own scheduler. A backend's ``unload`` drops
only its own pipeline; the modules are freed when no pipeline holds them. When ``from_pipe``
fails or leaves a module out (a component of another type), the model is loaded again with
``from_pretrained`` and the reason is logged at debug level. Not shared: specs with
``share: false``; the ``ip-adapter`` task (it loads an adapter into the UNet after loading);
specs with ``cpu_offload`` (offload hooks sit on the modules); specs whose weight-changing
options differ (``loras``, ``vae_tiling``, ``compile``, ...: every option except the
run-time ones in :data:`RUNTIME_OPTIONS`).
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backends.base import InvalidRequest, ModelSpec
from backends.runtime.hub import quiet_progress
from backends.runtime.imports import torch_dtype

log = logging.getLogger("darkroom.backends")

# Options that change only how a backend calls its pipeline, never the loaded modules: specs
# that differ only in these still share. Every other option is part of the sharing key.
RUNTIME_OPTIONS = frozenset(
    {
        "share",
        "max_batch",
        "generator_device",
        "max_sequence_length",
        "max_images",
        "max_references",
        "max_output_side",
    }
)
# Tasks that change their pipeline's modules after from_pretrained returns.
UNSHARED_TASKS = frozenset({"ip-adapter"})

_shared: dict[tuple[Any, ...], list[weakref.ref]] = {}
_shared_lock = threading.Lock()


def share_key(spec: ModelSpec, location: str, task: str) -> tuple[Any, ...] | None:
    """What two loads must agree on to share modules; None when this load must not share."""
    share = spec.option("share", True)
    if not isinstance(share, bool):
        raise InvalidRequest(f"option share must be true or false, not {share!r}")
    # Sequential offload hooks sit on every layer; from_pipe casts every module to one dtype.
    sequential = spec.option("cpu_offload") == "sequential"
    if not share or task in UNSHARED_TASKS or sequential or spec.option("fp32_components"):
        return None
    where = str(Path(location).resolve()) if Path(location).is_dir() else location
    options = tuple((k, v) for k, v in spec.options if k not in RUNTIME_OPTIONS)
    return (where, spec.revision, spec.dtype, spec.device, options)


def shared_pipelines(key: tuple[Any, ...]) -> list[Any]:
    """The live pipelines remembered under ``key`` (oldest first)."""
    with _shared_lock:
        refs = _shared.get(key, [])
        live = [p for p in (r() for r in refs) if p is not None]
        if live:
            _shared[key] = [weakref.ref(p) for p in live]
        else:
            _shared.pop(key, None)
        return live


def remember(key: tuple[Any, ...], pipe: Any) -> None:
    try:
        ref = weakref.ref(pipe)
    except TypeError:  # not weak-referenceable: never shared
        return
    with _shared_lock:
        _shared.setdefault(key, []).append(ref)


def from_shared(auto_class: Any, spec: ModelSpec, key: tuple[Any, ...]) -> Any | None:
    """A pipeline of ``auto_class`` built from a live one with ``key``, or None (then load)."""
    for existing in shared_pipelines(key):
        try:
            pipe = _from_pipe(auto_class, existing, spec, key[0])
        except Exception as exc:  # noqa: BLE001 - any failure here only costs a second load
            log.debug(
                "from_pipe failed; loading again: %s from %s for %s: %s: %s",
                spec.model,
                type(existing).__name__,
                getattr(auto_class, "__name__", auto_class),
                type(exc).__name__,
                exc,
            )
            continue
        log.debug(
            "from_pipe: %s %s shares the modules of the loaded %s",
            spec.model,
            type(pipe).__name__,
            type(existing).__name__,
        )
        remember(key, pipe)
        return pipe
    return None


def _from_pipe(auto_class: Any, existing: Any, spec: ModelSpec, location: str) -> Any:
    import diffusers

    target = auto_class
    kwargs: dict[str, Any] = {}
    if target is diffusers.DiffusionPipeline:
        target = _default_pipeline_class(diffusers, location)
    if isinstance(target, type) and issubclass(target, diffusers.DiffusionPipeline):
        # DiffusionPipeline.from_pipe casts every module to this dtype (default float32): the
        # modules are shared, so it must be theirs (the key holds the dtype).
        kwargs["dtype"] = torch_dtype(spec.dtype)
    scheduler = getattr(existing, "scheduler", None)
    if scheduler is not None and hasattr(scheduler, "config"):
        # Schedulers keep per-call state (timesteps, step index): one each.
        kwargs["scheduler"] = type(scheduler).from_config(scheduler.config)
    with quiet_progress(), _quiet_diffusers():
        pipe = target.from_pipe(existing, **kwargs)
    _check_shared(existing, pipe)
    return pipe


def _default_pipeline_class(diffusers: Any, location: str) -> Any:
    """The class ``DiffusionPipeline.from_pretrained`` would pick (local folders only)."""
    index = Path(location) / "model_index.json"
    if not index.is_file():
        raise ValueError(f"no local model_index.json at {location} to name the pipeline class")
    name = json.loads(index.read_text()).get("_class_name")
    cls = getattr(diffusers, str(name), None)
    if cls is None:
        raise ValueError(f"diffusers has no pipeline class {name!r}")
    return cls


def _check_shared(existing: Any, pipe: Any) -> None:
    """Every module both pipelines name must be the same object (from_pipe may drop one)."""
    import torch

    theirs = existing.components
    for name, module in pipe.components.items():
        other = theirs.get(name)
        if isinstance(other, torch.nn.Module) and module is not other:
            raise ValueError(f"component {name} was not carried over ({type(other).__name__})")


@contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """from_pipe's no-op dtype cast warns about 'modules that should be kept in float32'."""
    try:
        from diffusers.utils import logging as dlogging
    except ImportError:
        yield
        return
    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        yield
    finally:
        dlogging.set_verbosity(level)


def forget(pipe: Any) -> None:
    """Share nothing more from ``pipe`` (its placement changed: see placement.replace)."""
    with _shared_lock:
        for key in list(_shared):
            _shared[key] = [r for r in _shared[key] if r() is not None and r() is not pipe]
            if not _shared[key]:
                del _shared[key]
