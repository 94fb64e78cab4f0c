"""Helpers shared by the diffusers backends: lazy imports, loading, and error translation.

Importing this module imports neither torch nor diffusers; each helper imports what it needs
when called. Errors are translated here, at the seam, into :mod:`backends.base`'s tree:

- a missing package              -> BackendMissing with the pip command;
- weights not found              -> ModelUnavailable naming the model and how to get it;
- out of memory                  -> DeviceError(out_of_memory=True);
- a CUDA error (poisoned context) -> DeviceError(sticky=True);
- anything else from the library -> BackendError with the original message.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backends.base import (
    BackendError,
    BackendMissing,
    DeviceError,
    InvalidRequest,
    ModelSpec,
    ModelUnavailable,
)

PIP_NAMES = {
    "torch": "torch",
    "diffusers": "diffusers>=0.35",
    "transformers": "transformers>=4.45",
    "accelerate": "accelerate>=1.0",
    "safetensors": "safetensors>=0.4",
    "peft": "peft>=0.17",
}
DTYPES = ("float32", "float16", "bfloat16")
_TRUE = {"1", "true", "yes", "on"}


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
    hint = " (for a GPU, the CUDA build: see https://pytorch.org/get-started/locally/)"
    return BackendMissing(
        f"{who} needs the Python package {name!r}, which is not installed: "
        f"pip install '{pip}'{hint if name == 'torch' else ''} ({exc})"
    )


def torch_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise InvalidRequest(
            f"unknown dtype {name!r}: set the profile's dtype to one of {', '.join(DTYPES)}"
        )
    return getattr(torch, name)


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


def from_pretrained(auto_class: Any, spec: ModelSpec, location: str, task: str) -> Any:
    """``auto_class.from_pretrained(location)`` with the spec's dtype and revision, translated.

    The loaded pipeline gets the spec's runtime options (:func:`configure`: LoRAs, VAE tiling
    and slicing) before it is returned, so every backend that loads through here has them.
    Device placement (including CPU offload) is :func:`place`'s job.
    """
    pipe = _load(auto_class, spec, location, task)
    configure(pipe, spec, task)
    return pipe


def _load(auto_class: Any, spec: ModelSpec, location: str, task: str) -> Any:
    kwargs: dict[str, Any] = {_dtype_keyword(): torch_dtype(spec.dtype)}
    is_local = Path(location).is_dir()
    if spec.option("variant"):
        kwargs["variant"] = spec.option("variant")
    if not is_local:
        if spec.revision:
            kwargs["revision"] = spec.revision
        cache = hf_cache_dir()
        if cache:
            kwargs["cache_dir"] = cache
        if offline():
            kwargs["local_files_only"] = True
    with device_errors(spec, f"loading {spec.model}"), quiet_progress(), warnings.catch_warnings():
        # diffusers 0.42 passes a deprecated argument to huggingface_hub on every hub load.
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
        try:
            return auto_class.from_pretrained(location, **kwargs)
        except ImportError as exc:
            raise missing(exc, f"task {task}") from exc
        except (OSError, ValueError) as exc:
            if is_local or isinstance(exc, OSError) or _from_hub(exc):
                raise unavailable(spec, location, is_local, exc) from exc
            raise


OFFLOAD_MODES = ("model", "sequential")


def configure(pipe: Any, spec: ModelSpec, task: str) -> None:
    """Apply the spec's options that change the pipeline, not where it runs.

    - ``loras``: LoRA adapters, see :mod:`backends.lora`;
    - ``vae_tiling`` (bool): decode/encode large images tile by tile (sizes up to 2048 px);
    - ``vae_slicing`` (bool): decode a batch one image at a time.
    """
    from backends import lora

    lora.load_loras(pipe, spec, task)
    for option, method in (("vae_tiling", "enable_tiling"), ("vae_slicing", "enable_slicing")):
        value = spec.option(option, False)
        if not isinstance(value, bool):
            raise InvalidRequest(f"option {option} must be true or false, not {value!r}")
        if not value:
            continue
        vae = getattr(pipe, "vae", None)
        if vae is None or not hasattr(vae, method):
            raise InvalidRequest(
                f"option {option}: {type(pipe).__name__}'s VAE "
                f"({type(vae).__name__}) cannot do it; remove the option from the profile"
            )
        getattr(vae, method)()


def place(pipe: Any, spec: ModelSpec) -> Any:
    """Put ``pipe`` on the spec's device, or offload it (option ``cpu_offload``).

    ``cpu_offload: model`` keeps each model on the CPU until it runs
    (``enable_model_cpu_offload``: a little slower, much less device memory);
    ``sequential`` moves one layer at a time (slow, least memory). On a CPU device
    offloading is meaningless and the pipeline simply stays on the CPU.
    """
    mode = spec.option("cpu_offload")
    if mode in (None, False, "", "none"):
        mode = None
    elif mode not in OFFLOAD_MODES:
        raise InvalidRequest(
            f"option cpu_offload {mode!r} must be one of {', '.join(OFFLOAD_MODES)} (or absent)"
        )
    with device_errors(spec, f"moving {spec.model} to {spec.device}"):
        if mode is None or spec.device == "cpu":
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


def unavailable(
    spec: ModelSpec, location: str, is_local: bool, exc: BaseException
) -> ModelUnavailable:
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
    return ModelUnavailable(
        f"model {spec.model}{rev} is not available: {where}its weights are not in the Hugging "
        f"Face cache {cache}. Fix: on a machine with hub access run "
        f"`HF_HOME=<dir> hf download {spec.model}{rev_flag}` and copy <dir> to this "
        f"machine's HF_HOME, "
        f"or point the profile's model at a local directory holding the pipeline "
        f"(model_index.json). ({type(exc).__name__}: {exc})"
    )


def _from_hub(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("huggingface_hub")


def _dtype_keyword() -> str:
    # diffusers 0.42 renamed from_pretrained's torch_dtype to dtype (the old name warns);
    # older releases know only torch_dtype.
    try:
        from diffusers.utils import deprecation_utils
    except ImportError:
        return "torch_dtype"
    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


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
                f"(option max_batch), the image size or the dtype ({exc})",
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
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and spec.device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


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
