"""Device memory: how much a device has, the model cache's default budget, eviction planned before
a load from the profiles' figures (:mod:`backends.cards`).

The worker's cache used to evict only *after* a load, when the new model had already run out of
memory next to the old ones. With :func:`plan_eviction` it unloads first what must go for the
new model's planned size to fit, so two big profiles never sit on one device together.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

GIB = 1024**3
DEFAULT_BUDGET_FRACTION = 0.9  # the rest: CUDA context, allocator fragmentation, other processes

K = TypeVar("K", bound=Hashable)


def device_total_bytes(device: str) -> int | None:
    """Total memory of a CUDA ``device`` (``cuda``, ``cuda:1``); None on the CPU or without CUDA."""
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
    return int(torch.cuda.get_device_properties(index).total_memory)


def default_cache_budget_gb(device: str, fraction: float = DEFAULT_BUDGET_FRACTION) -> float | None:
    """The model cache's budget when the config sets none: ``fraction`` of a CUDA device's memory
    (GiB); None (unlimited) on the CPU, where the operating system pages instead of failing."""
    total = device_total_bytes(device)
    return None if total is None else total * fraction / GIB


def plan_eviction(
    loaded: Sequence[tuple[K, float]], need_gb: float | None, budget_gb: float | None
) -> list[K]:
    """What to unload, oldest first, before loading a model planned at ``need_gb``.

    ``loaded`` is the cache's entries, least recently used first, with their sizes in GiB
    (measured, or planned from the cards). Evicts until ``sum(remaining) + need_gb`` fits the
    budget; a model bigger than the whole budget evicts everything and still loads (alone).
    Unknown ``need_gb`` or no budget: nothing is planned (the cache's after-load check remains).
    """
    if need_gb is None or budget_gb is None:
        return []
    used = sum(size for _, size in loaded)
    out: list[K] = []
    for key, size in loaded:
        if used + need_gb <= budget_gb:
            break
        out.append(key)
        used -= size
    return out


def sizes_gb(sizes_bytes: Mapping[K, int]) -> list[tuple[K, float]]:
    """Byte sizes (the cache's measurements) as GiB, in the mapping's order."""
    return [(key, size / GIB) for key, size in sizes_bytes.items()]
