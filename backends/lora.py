"""LoRA adapters for any diffusers pipeline, from the spec's ``loras`` option.

A profile lists its LoRAs as plain data::

    options:
      loras:
        - path: /models/loras/brand-style.safetensors   # a local file,
          scale: 0.8
        - path: /models/loras/product-lora              # a local directory (+ weight_name),
          weight_name: pytorch_lora_weights.safetensors
          name: product
        - path: some-org/some-lora                      # or a Hugging Face repo id
          scale: 0.5

Each is loaded with the pipeline's ``load_lora_weights`` under its ``name`` (default
``lora0``, ``lora1`` ...), then ``set_adapters(names, scales)`` activates them all at once.
:func:`load_loras` is called by :func:`backends.runtime.loading.from_pretrained`, so every backend that
loads its pipeline there supports LoRAs. diffusers needs ``peft`` for this.

:func:`write_random_lora` writes a small random LoRA for a pipeline (tests, demos).
"""

from __future__ import annotations

import numbers
import re
from pathlib import Path
from typing import Any

from backends.base import BackendError, InvalidRequest, ModelSpec, ModelUnavailable
from backends.runtime.hub import hf_cache_dir, offline, quiet_progress
from backends.runtime.imports import require

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def parse_loras(value: Any) -> list[dict[str, Any]]:
    """The option as a list of {path, weight_name, scale, name}, or InvalidRequest."""
    if value in (None, []):
        return []
    if not isinstance(value, list):
        raise InvalidRequest(
            f"option loras must be a list of {{path, scale}} entries, not {value!r}"
        )
    entries: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not item["path"]:
            raise InvalidRequest(
                f"loras[{index}] needs a path (a .safetensors file, folder or repo id)"
            )
        unknown = set(item) - {"path", "weight_name", "scale", "name"}
        if unknown:
            raise InvalidRequest(
                f"loras[{index}] has unknown keys {sorted(unknown)}: use path, weight_name, scale, name"
            )
        scale = item.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise InvalidRequest(f"loras[{index}].scale must be a number, not {scale!r}")
        name = item.get("name") or f"lora{index}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequest(
                f"loras[{index}].name {name!r} must be letters, digits, _ or - (no dots)"
            )
        weight_name = item.get("weight_name")
        if weight_name is not None and not isinstance(weight_name, str):
            raise InvalidRequest(f"loras[{index}].weight_name must be a file name")
        entries.append(
            {"path": item["path"], "weight_name": weight_name, "scale": float(scale), "name": name}
        )
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise InvalidRequest(f"loras have duplicate names {names}: give each a distinct name")
    return entries


def load_loras(pipe: Any, spec: ModelSpec, task: str) -> list[dict[str, Any]]:
    """Load and activate the spec's LoRAs on ``pipe``; returns the parsed entries."""
    entries = parse_loras(spec.option("loras"))
    if not entries:
        return []
    if not hasattr(pipe, "load_lora_weights"):
        raise InvalidRequest(
            f"{type(pipe).__name__} does not support LoRA adapters: remove loras from the profile"
        )
    require("peft", f"{task} with loras")
    for entry in entries:
        source, kwargs = _source(entry)
        try:
            with quiet_progress():
                pipe.load_lora_weights(source, adapter_name=entry["name"], **kwargs)
        except (OSError, FileNotFoundError) as exc:
            raise ModelUnavailable(
                f"LoRA {entry['path']} could not be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        except (ValueError, KeyError, RuntimeError) as exc:
            raise BackendError(
                f"LoRA {entry['path']} does not fit {spec.model} ({type(pipe).__name__}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    pipe.set_adapters([e["name"] for e in entries], adapter_weights=[e["scale"] for e in entries])
    return entries


def _source(entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(what to pass to load_lora_weights, its keyword arguments); a missing path is unavailable."""
    raw = entry["path"]
    path = Path(raw).expanduser()
    kwargs: dict[str, Any] = {}
    if path.is_file():
        return str(path.parent), {"weight_name": entry["weight_name"] or path.name}
    if path.is_dir():
        if entry["weight_name"]:
            kwargs["weight_name"] = entry["weight_name"]
        return str(path), kwargs
    if _looks_local(raw):
        raise ModelUnavailable(
            f"LoRA file {raw} does not exist: fix loras[].path in the profile "
            "(a .safetensors file, a folder holding one, or a Hugging Face repo id)"
        )
    if entry["weight_name"]:
        kwargs["weight_name"] = entry["weight_name"]
    cache = hf_cache_dir()
    if cache:
        kwargs["cache_dir"] = cache
    if offline():
        kwargs["local_files_only"] = True
    return raw, kwargs


def _looks_local(raw: str) -> bool:
    if raw.startswith(("/", "./", "../", "~", "\\")) or raw.lower().endswith(_WEIGHT_SUFFIXES):
        return True
    return raw.count("/") != 1  # a repo id is exactly owner/name


def write_random_lora(
    pipe: Any,
    directory: Path,
    *,
    rank: int = 4,
    seed: int = 0,
    strength: float = 4.0,
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0"),
) -> Path:
    """Write a random LoRA for ``pipe``'s UNet (or transformer) attention projections.

    ``strength`` multiplies the up-projections (``lora_B``), so that the effect on a tiny
    random model is plain to see at scale 1.

    Saved with the pipeline's own ``save_lora_weights`` as ``pytorch_lora_weights.safetensors``
    in ``directory`` (returned). The pipeline is left without the adapter.
    """
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    denoiser_name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    denoiser = getattr(pipe, denoiser_name)
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=list(targets), init_lora_weights=False
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        denoiser.add_adapter(config, adapter_name="random_lora")
    layers = get_peft_model_state_dict(denoiser, adapter_name="random_lora")
    layers = {k: v * strength if "lora_B" in k else v for k, v in layers.items()}
    directory.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(directory, **{f"{denoiser_name}_lora_layers": layers})
    denoiser.delete_adapters("random_lora")
    return directory / "pytorch_lora_weights.safetensors"


__all__ = ["load_loras", "parse_loras", "write_random_lora"]
