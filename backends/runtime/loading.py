"""Loading a pipeline: ``from_pretrained`` with the spec's dtype, variant and revision, configured.

Every pipeline backend loads through :func:`from_pretrained`, so these spec options work for
every task (placement on the device is :mod:`backends.runtime.placement`'s job):

- ``variant`` (e.g. ``fp16``): which weight files of a hub repo to read;
- ``fp32_components`` (e.g. ``[vae, image_encoder]``): components kept in float32 whatever the
  profile's dtype (the Wan model card runs its VAE and image encoder in float32);
- ``loras``, ``vae_tiling``, ``vae_slicing``: see :func:`configure`;
- ``compile`` (:mod:`backends.runtime.compiling`) and ``share`` (:mod:`backends.runtime.sharing`).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from backends.base import InvalidRequest, ModelSpec
from backends.runtime.compiling import compile_denoiser
from backends.runtime.errors import device_errors
from backends.runtime.hub import from_hub, hf_cache_dir, offline, quiet_progress, unavailable
from backends.runtime.imports import missing, torch_dtype
from backends.runtime.sharing import from_shared, remember, share_key

log = logging.getLogger("darkroom.backends")


def from_pretrained(auto_class: Any, spec: ModelSpec, location: str, task: str) -> Any:
    """``auto_class.from_pretrained(location)`` with the spec's dtype and revision, translated.

    The loaded pipeline gets the spec's runtime options (:func:`configure`: LoRAs, VAE tiling
    and slicing; :func:`compile_denoiser`) before it is returned, so every backend that loads
    through here has them. When a pipeline with the same :func:`share_key` is already loaded
    in this process, the new one is built from it with ``from_pipe`` and shares its modules
    (they are configured and compiled already). Device placement (including CPU offload) is
    :func:`backends.runtime.placement.place`'s job.
    """
    key = share_key(spec, location, task)
    if key is not None:
        pipe = from_shared(auto_class, spec, key)
        if pipe is not None:
            return pipe
    pipe = _load(auto_class, spec, location, task)
    configure(pipe, spec, task)
    compile_denoiser(pipe, spec)
    if key is not None:
        remember(key, pipe)
    return pipe


def _load(auto_class: Any, spec: ModelSpec, location: str, task: str) -> Any:
    kwargs: dict[str, Any] = {_dtype_keyword(): load_dtype(spec)}
    is_local = Path(location).is_dir()
    variant = spec.option("variant")
    if variant:
        kwargs["variant"] = variant
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
            try:
                return auto_class.from_pretrained(location, **kwargs)
            except ValueError as exc:
                if not variant or "variant" not in str(exc):
                    raise
                # A repo without files of that variant: its default files are the same model.
                log.warning(
                    "model %s has no %s variant; loading its default weight files: %s",
                    spec.model,
                    variant,
                    exc,
                )
                del kwargs["variant"]
                return auto_class.from_pretrained(location, **kwargs)
        except ImportError as exc:
            raise missing(exc, f"task {task}") from exc
        except (OSError, ValueError) as exc:
            if is_local or isinstance(exc, OSError) or from_hub(exc):
                raise unavailable(spec, location, is_local, exc) from exc
            raise


def load_dtype(spec: ModelSpec) -> Any:
    """The dtype argument of ``from_pretrained``: the profile's dtype, or a per-component dict
    when the option ``fp32_components`` keeps some components in float32."""
    dtype = torch_dtype(spec.dtype)
    components = spec.option("fp32_components") or []
    if not isinstance(components, list) or not all(isinstance(c, str) for c in components):
        raise InvalidRequest(
            f"option fp32_components must be a list of component names (e.g. [vae]), "
            f"not {components!r}"
        )
    if not components:
        return dtype
    return {"default": dtype, **{name: torch_dtype("float32") for name in components}}


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


def _dtype_keyword() -> str:
    # diffusers 0.42 renamed from_pretrained's torch_dtype to dtype (the old name warns);
    # older releases know only torch_dtype.
    try:
        from diffusers.utils import deprecation_utils
    except ImportError:
        return "torch_dtype"
    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
