"""Placement: where a loaded pipeline's weights live while it runs, and the out-of-memory ladder.

Option ``cpu_offload``: absent/false keeps the whole pipeline on the spec's device; ``model``
(or ``true``) keeps each model on the CPU until it runs (``enable_model_cpu_offload``: a little
slower, much less device memory); ``sequential`` moves one layer at a time (slow, least
memory). On a CPU device offloading is meaningless and the pipeline simply stays on the CPU.

**The out-of-memory ladder.** After an out-of-memory error the caller first lowers the batch
(the pool's job: ``max_batch``), then walks :func:`oom_ladder`: model offload, then sequential
offload. The weights are not loaded again for a rung: :func:`replace` moves the pipeline that
ran out of memory off the device (releasing its copy there) and offloads that same pipeline.
:func:`weights_key` says which specs hold the same weights (they differ only in placement), so
a cache holding the failing spec re-places it instead of loading a second copy beside it.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from backends.base import BackendMissing, DeviceError, InvalidRequest, ModelSpec
from backends.runtime.errors import device_errors, empty_cache
from backends.runtime.imports import missing

OFFLOAD_MODES = ("model", "sequential")
# Options that change where weights live or how a call is cut, never which weights are loaded.
PLACEMENT_OPTIONS = frozenset({"cpu_offload", "max_batch"})
# Tests set this to run the real offload code on a CPU-only machine (model offload works there).
OFFLOAD_ON_CPU = False


def offload_mode(spec: ModelSpec) -> str | None:
    """The spec's ``cpu_offload`` as ``None``, ``"model"`` or ``"sequential"`` (``true`` = model)."""
    mode = spec.option("cpu_offload")
    if mode in (None, False, "", "none", "false"):
        return None
    if mode is True or mode == "true":
        return "model"
    if mode not in OFFLOAD_MODES:
        raise InvalidRequest(
            f"option cpu_offload {mode!r} must be one of {', '.join(OFFLOAD_MODES)} "
            "(or true = model, false = none)"
        )
    return str(mode)


def with_options(spec: ModelSpec, **changes: Any) -> ModelSpec:
    """``spec`` with options changed (``None`` removes one)."""
    options = {k: spec.option(k) for k, _ in spec.options}
    for key, value in changes.items():
        if value is None:
            options.pop(key, None)
        else:
            options[key] = value
    return dataclasses.replace(spec, options=ModelSpec.freeze_options(options))


def weights_key(spec: ModelSpec) -> ModelSpec:
    """``spec`` without its placement options: two specs with equal keys hold the same weights.

    A model cache must never hold two loaded specs with the same key: re-place the one it has
    (:func:`replace`) instead of loading the other beside it.
    """
    return with_options(spec, **dict.fromkeys(PLACEMENT_OPTIONS))


def oom_ladder(spec: ModelSpec) -> list[ModelSpec]:
    """The specs to try, in order, after ``spec`` ran out of memory at batch 1.

    Model offload, then sequential offload, skipping rungs at or above the current one; empty
    on a CPU device (nothing to offload to) or when ``spec`` is already sequential.
    """
    if spec.device.split(":")[0] == "cpu" and not OFFLOAD_ON_CPU:
        return []
    current = offload_mode(spec)
    start = 0 if current is None else OFFLOAD_MODES.index(current) + 1
    return [with_options(spec, cpu_offload=mode) for mode in OFFLOAD_MODES[start:]]


def check_device(spec: ModelSpec) -> None:
    """Fail before loading weights when the device cannot exist in this process."""
    import torch

    kind = spec.device.split(":")[0]
    if kind != "cuda":
        return
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        raise BackendMissing(
            f"device {spec.device} needs a CUDA build of torch, but torch {torch.__version__} "
            "is a CPU build: install the CUDA build (https://pytorch.org/get-started/locally/) "
            "or set the profile's device to cpu"
        )
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device {spec.device}: no CUDA device is visible to this process "
            "(check the driver, CUDA_VISIBLE_DEVICES and the service's device access)",
            sticky=True,
        )


def place(pipe: Any, spec: ModelSpec) -> Any:
    """Put ``pipe`` on the spec's device, or offload it (option ``cpu_offload``)."""
    mode = offload_mode(spec)
    on_cpu = spec.device.split(":")[0] == "cpu" and not OFFLOAD_ON_CPU
    with device_errors(spec, f"moving {spec.model} to {spec.device}"):
        if mode is None or on_cpu:
            pipe = pipe.to(spec.device)
        else:
            try:
                importlib.import_module("accelerate")
            except ImportError as exc:
                raise missing(exc, f"option cpu_offload={mode}") from exc
            if mode == "model":
                pipe.enable_model_cpu_offload(device=spec.device)
            else:
                pipe.enable_sequential_cpu_offload(device=spec.device)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def replace(pipe: Any, old: ModelSpec, new: ModelSpec) -> Any:
    """Place the loaded ``pipe`` (placed for ``old``) as ``new`` says, without loading it again.

    The copy on the device is released first: offload hooks are removed and every module goes
    back to the CPU (device memory emptied) before ``new``'s placement is applied, so at no
    moment are two copies on the device. ``old`` and ``new`` must hold the same weights.
    """
    if weights_key(old) != weights_key(new):
        raise InvalidRequest(
            f"cannot re-place {old.model} as {new.model}: the specs differ in more than "
            f"{', '.join(sorted(PLACEMENT_OPTIONS))}; load the new spec instead"
        )
    if offload_mode(old) == offload_mode(new):
        return pipe
    with device_errors(new, f"moving {new.model} off {old.device}"):
        if hasattr(pipe, "remove_all_hooks"):
            pipe.remove_all_hooks()
        pipe = pipe.to("cpu")
    empty_cache(old)
    # A re-placed pipeline's modules carry hooks now: new loads must not share them.
    from backends.runtime.sharing import forget

    forget(pipe)
    return place(pipe, new)
