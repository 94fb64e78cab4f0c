"""Error translation at the seam: what torch and diffusers raise -> the :mod:`backends.base` tree.

- out of memory                  -> DeviceError(out_of_memory=True) (the pool may retry smaller);
- a CUDA error (poisoned context) -> DeviceError(sticky=True) (the worker must be replaced);
- anything else from the library -> BackendError with the original message.

Missing packages (:mod:`backends.runtime.imports`) and missing weights
(:mod:`backends.runtime.hub`) are translated where they are met.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from backends.base import BackendError, DeviceError, ModelSpec

_STICKY_MARKERS = (
    "cuda error",
    "cublas_status",
    "cudnn_status",
    "cudnn error",
    "device-side assert",
    "illegal memory access",
    "unspecified launch failure",
    "hip error",
)
_OOM_MARKERS = ("out of memory", "can't allocate memory", "defaultcpuallocator")


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MARKERS)


def is_sticky(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    accelerator_error = getattr(torch, "AcceleratorError", None) if torch else None
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _STICKY_MARKERS)


@contextmanager
def device_errors(spec: ModelSpec, doing: str) -> Iterator[None]:
    """Translate what the library raises while ``doing`` into the backend error tree."""
    try:
        yield
    except BackendError:
        raise
    except Exception as exc:
        sticky = is_sticky(exc)
        if is_out_of_memory(exc):
            if not sticky:
                empty_cache(spec)
            raise DeviceError(
                f"out of memory on {spec.device} while {doing}: lower the batch "
                f"(option max_batch), the image size or the dtype, or set the profile's "
                f"cpu_offload to model or sequential ({exc})",
                out_of_memory=True,
                sticky=sticky,
            ) from exc
        if sticky:
            raise DeviceError(
                f"device {spec.device} failed while {doing}; this worker's CUDA context is "
                f"unusable and the worker must be replaced ({exc})",
                sticky=True,
            ) from exc
        raise BackendError(f"{doing} failed: {type(exc).__name__}: {exc}") from exc


def empty_cache(spec: ModelSpec) -> None:
    """Give freed device memory back (after an OOM or an unload): collect, then empty CUDA's cache."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and spec.device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
