"""The worker's cache of loaded pipelines: least recently used out, within a memory budget.

Runs inside a worker process. Loading is the expensive part of a model (seconds to
minutes), so a pipeline stays loaded until the budget needs its memory. The size of each
entry is measured around its load — allocated device memory on CUDA, resident set size on
the CPU — unless the backend states it (``memory_bytes``, the stub's test hook). A
pipeline built from an already loaded one shares its weights (backends._torch), so its
measured size is small, which is exactly what it costs.

Eviction is planned *before* a load when the caller knows the new model's size (``planned_gb``:
the profile's computed figure from :mod:`backends.cards`): what must go for it to fit is
unloaded first (:func:`backends.runtime.memory.plan_eviction`), so two big models never sit on
the device together. After the load the measured sizes are checked again, and the newest
entry is never evicted (a model bigger than the budget still runs, alone). On a CUDA device
with no budget configured, the budget is 90 % of the device's memory (the worker sets it).

A miss whose weights are already loaded under another placement (the out-of-memory ladder
asks for ``max_batch: 1``, then ``cpu_offload: model``, then ``sequential``: the same
``placement.weights_key``) re-places the loaded backend (``backend.replace``) and re-keys it:
the weights are never loaded a second time beside the copy that ran out of memory.

Every load (with its seconds) and every unload that makes room is kept in ``events`` until
the worker sends them to the main process with its next reply (:meth:`take_events`): the
pool turns them into the ``model_loaded``/``model_evicted`` hooks.
"""

from __future__ import annotations

import gc
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("darkroom.worker")

GB = 1024**3


def rss_bytes() -> int:
    """Resident set size of this process, without psutil."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def device_bytes(device: str) -> int:
    """Memory in use on ``device``: allocated CUDA memory, or this process's RSS on the CPU."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.memory_allocated(device))
    return rss_bytes()


def free_memory(device: str) -> None:
    """Give back what an out-of-memory error or an unload left behind."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


class ModelCache:
    """``build`` makes and loads a backend for a spec; ``concrete`` turns a spec as the main
    process sends it into the one the backend holds (device and dtype resolved)."""

    def __init__(
        self,
        device: str,
        budget_gb: float | None,
        build: Callable[[Any], Any],
        concrete: Callable[[Any], Any] = lambda spec: spec,
    ):
        self.device = device
        self.budget = int(budget_gb * GB) if budget_gb else None
        self._build = build  # spec -> loaded backend
        self._concrete = concrete
        self._entries: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self.loads = 0
        self.evictions = 0
        # ("loaded", spec, seconds) | ("evicted", spec, 0.0), oldest first, not yet reported.
        self.events: list[tuple[str, Any, float]] = []

    def take_events(self) -> list[tuple[str, Any, float]]:
        """The loads and evictions since the last call (the worker's next reply carries them)."""
        events, self.events = self.events, []
        return events

    def get(self, spec: Any, planned_gb: float | None = None) -> Any:
        """The loaded backend for ``spec``: cached, re-placed from the same weights, or built
        (after unloading what ``planned_gb`` says must go)."""
        entry = self._entries.get(spec)
        if entry is not None:
            self._entries.move_to_end(spec)
            return entry[0]
        replaced = self._replace(spec)
        if replaced is not None:
            return replaced
        self._evict_before(planned_gb)
        before = device_bytes(self.device)
        started = time.perf_counter()
        backend = self._build(spec)
        seconds = time.perf_counter() - started
        size = getattr(backend, "memory_bytes", None)
        if size is None:
            size = max(0, device_bytes(self.device) - before)
        self._entries[spec] = (backend, int(size))
        self.loads += 1
        self.events.append(("loaded", spec, seconds))
        self._evict()
        return backend

    def _replace(self, spec: Any) -> Any | None:
        """Re-place a loaded backend holding ``spec``'s weights under another placement, and
        re-key it; None when no entry holds them. A backend that cannot re-place (no
        ``replace``: the stub, hosted models) is unloaded first, so the build that follows
        never sits beside it."""
        from backends.runtime.placement import weights_key

        key = weights_key(spec)
        held = next((s for s in self._entries if weights_key(s) == key), None)
        if held is None:
            return None
        backend, size = self._entries.pop(held)
        if not hasattr(backend, "replace"):
            self.events.append(("evicted", held, 0.0))
            _unload(backend)
            free_memory(self.device)
            return None
        try:
            backend.replace(self._concrete(spec))
        except Exception:
            # Half moved: neither placement can be trusted. The next call loads it afresh.
            self.events.append(("evicted", held, 0.0))
            _unload(backend)
            free_memory(self.device)
            raise
        log.info(
            "model re-placed, not loaded again",
            model=spec.model,
            task=spec.task,
            cpu_offload=spec.option("cpu_offload"),
            max_batch=spec.option("max_batch"),
        )
        self._entries[spec] = (backend, size)
        return backend

    def _evict_before(self, planned_gb: float | None) -> None:
        """Unload, least recently used first, what must go for ``planned_gb`` to fit."""
        from backends.runtime.memory import plan_eviction, sizes_gb

        budget_gb = self.budget / GB if self.budget is not None else None
        sizes = {spec: size for spec, (_, size) in self._entries.items()}
        victims = plan_eviction(sizes_gb(sizes), planned_gb, budget_gb)
        for spec in victims:
            backend, size = self._entries.pop(spec)
            self.evictions += 1
            self.events.append(("evicted", spec, 0.0))
            log.info(
                "model unloaded before a load, to make room",
                model=spec.model,
                task=spec.task,
                freed_gb=round(size / GB, 3),
                planned_gb=round(planned_gb or 0.0, 3),
                budget_gb=round(budget_gb or 0.0, 3),
            )
            _unload(backend)
        if victims:
            free_memory(self.device)

    def _evict(self) -> None:
        if self.budget is None:
            return
        while len(self._entries) > 1 and self.used() > self.budget:
            spec, (backend, size) = self._entries.popitem(last=False)
            self.evictions += 1
            self.events.append(("evicted", spec, 0.0))
            log.info(
                "model unloaded to stay within the memory budget",
                model=spec.model,
                task=spec.task,
                freed_gb=round(size / GB, 3),
                budget_gb=round(self.budget / GB, 3),
            )
            _unload(backend)
        free_memory(self.device)

    def drop_all_but(self, keep: Any) -> None:
        """After an out-of-memory error: unload every other pipeline to make room."""
        for spec in [s for s in self._entries if s != keep]:
            backend, _ = self._entries.pop(spec)
            self.evictions += 1
            self.events.append(("evicted", spec, 0.0))
            _unload(backend)
        free_memory(self.device)

    def discard(self, spec: Any) -> None:
        entry = self._entries.pop(spec, None)
        if entry is not None:
            _unload(entry[0])
            free_memory(self.device)

    def used(self) -> int:
        return sum(size for _, size in self._entries.values())

    def specs(self) -> list[Any]:
        return list(self._entries)


def _unload(backend: Any) -> None:
    try:
        backend.unload()
    except Exception:  # an unload that fails must not take the worker down
        log.exception("unload failed")
