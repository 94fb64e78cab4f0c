"""Helpers shared by the diffusers backends: lazy imports, loading, and error translation.

Importing this module imports neither torch nor diffusers; each helper imports what it needs
when called. Errors are translated here, at the seam, into :mod:`backends.base`'s tree:

- a missing package              -> BackendMissing with the pip command;
- weights not found              -> ModelUnavailable naming the model and how to get it;
- out of memory                  -> DeviceError(out_of_memory=True);
- a CUDA error (poisoned context) -> DeviceError(sticky=True);
- anything else from the library -> BackendError with the original message.

Every pipeline backend loads through :func:`from_pretrained` and places through :func:`place`,
so the spec options below work for every task:

- ``variant``, ``loras``, ``vae_tiling``, ``vae_slicing``: how the weights are loaded and
  configured (:func:`configure`);
- ``cpu_offload`` (``model`` / ``sequential``): where they live while running (:func:`place`);
- ``compile`` (default off): ``true`` compiles the denoiser (``pipe.transformer`` or
  ``pipe.unet``) with ``torch.compile`` after loading; a string picks torch.compile's mode
  (``default``, ``reduce-overhead``, ``max-autotune``, ``max-autotune-no-cudagraphs``).
  Compiling happens lazily, on the first call, and takes a while (15-45 s for the tiny
  Kontext model on a 2-core CPU, 16 s on an H100; more for real models): worth it for a
  worker that runs many jobs on one model, not for a single image. If torch.compile is unavailable or fails —
  when wrapping or on a call — a warning is logged and the denoiser runs uncompiled;
- ``share`` (default true): see below.

**Sharing.** Pipelines of different tasks on the same base model share its weights: the
first load goes through ``from_pretrained`` and is remembered (weakly) under the key
(resolved model location, revision, dtype, device, the options that change the weights);
a later load with the same key is built with ``TargetPipeline.from_pipe(existing)``, which
reuses the loaded modules (``kontext`` + ``kontext-inpaint`` on FLUX.1-Kontext-dev hold one
transformer, not two). Each pipeline gets its own scheduler. A backend's ``unload`` drops
only its own pipeline; the modules are freed when no pipeline holds them. When ``from_pipe``
fails or leaves a module out (a component of another type), the model is loaded again with
``from_pretrained`` and the reason is logged at debug level. Not shared: specs with
``share: false``; the ``ip-adapter`` task (it loads an adapter into the UNet after loading);
specs whose weight-changing options differ (``loras``, ``vae_tiling``, ``compile``, ...:
every option except the run-time ones in :data:`RUNTIME_OPTIONS`).
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import os
import sys
import threading
import warnings
import weakref
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

log = logging.getLogger("darkroom.backends")


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
    and slicing; :func:`compile_denoiser`) before it is returned, so every backend that loads
    through here has them. When a pipeline with the same :func:`share_key` is already loaded
    in this process, the new one is built from it with ``from_pipe`` and shares its modules
    (they are configured and compiled already). Device placement (including CPU offload) is
    :func:`place`'s job.
    """
    key = share_key(spec, location, task)
    if key is not None:
        pipe = _from_shared(auto_class, spec, key)
        if pipe is not None:
            return pipe
    pipe = _load(auto_class, spec, location, task)
    configure(pipe, spec, task)
    compile_denoiser(pipe, spec)
    if key is not None:
        _remember(key, pipe)
    return pipe


# -- sharing loaded modules between pipelines (see the module docstring) ------------------------

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
    if not share or task in UNSHARED_TASKS or spec.option("cpu_offload") == "sequential":
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


def _remember(key: tuple[Any, ...], pipe: Any) -> None:
    try:
        ref = weakref.ref(pipe)
    except TypeError:  # not weak-referenceable: never shared
        return
    with _shared_lock:
        _shared.setdefault(key, []).append(ref)


def _from_shared(auto_class: Any, spec: ModelSpec, key: tuple[Any, ...]) -> Any | None:
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
        _remember(key, pipe)
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


# -- torch.compile ----------------------------------------------------------------------------

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DENOISERS = ("transformer", "unet")


def compile_mode(spec: ModelSpec) -> str | None:
    """The spec's ``compile`` option as a torch.compile mode, None when off."""
    value = spec.option("compile", False)
    if value is False or value is None:
        return None
    if value is True:
        return "default"
    if isinstance(value, str) and value in COMPILE_MODES:
        return value
    raise InvalidRequest(
        f"option compile {value!r} must be true, false or one of {', '.join(COMPILE_MODES)}"
    )


def compile_denoiser(pipe: Any, spec: ModelSpec) -> bool:
    """Compile ``pipe``'s denoiser in place when the spec asks; True if it is now compiled.

    ``module.compile()`` compiles lazily, at the first call. Failing to wrap here, or a
    compiler error on a call later, logs a warning and the module runs uncompiled from then on.
    """
    mode = compile_mode(spec)
    if mode is None:
        return False
    name = next((n for n in DENOISERS if getattr(pipe, n, None) is not None), None)
    if name is None:
        log.warning(
            "option compile: %s has no transformer or unet to compile; running uncompiled",
            type(pipe).__name__,
        )
        return False
    module = getattr(pipe, name)
    try:
        import torch

        compiled = torch.compile(module._call_impl, mode=None if mode == "default" else mode)
    except Exception as exc:  # noqa: BLE001 - a compile failure must not fail the load
        log.warning(
            "option compile: torch.compile of %s.%s failed; running uncompiled: %s: %s",
            spec.model,
            name,
            type(exc).__name__,
            exc,
        )
        return False
    # What nn.Module.compile() does, with a fallback around the compiled call.
    module._compiled_call_impl = _CompiledCall(module, compiled, f"{spec.model} {name}")
    return True


class _CompiledCall:
    """Call the compiled module; on a compiler error, warn and run it uncompiled for good.

    Only errors raised by torch's compiler (``torch._dynamo``, ``torch._inductor``) fall back:
    an error of the model itself would fail uncompiled too, and must not switch compiling off.
    """

    def __init__(self, module: Any, compiled: Any, what: str) -> None:
        self.module, self.compiled, self.what = module, compiled, what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.compiled(*args, **kwargs)
        except Exception as exc:
            if not _is_compiler_error(exc):
                raise
            log.warning(
                "option compile: compiling %s failed; running uncompiled: %s: %s",
                self.what,
                type(exc).__name__,
                exc,
            )
            self.module._compiled_call_impl = None
            return self.module(*args, **kwargs)


def _is_compiler_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("torch._dynamo", "torch._inductor"))


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
