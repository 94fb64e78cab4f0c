"""The part every diffusers-pipeline backend shares: loading once, placing, re-placing, unloading.

A backend names its pipeline class (``pipeline_class``: a diffusers attribute name) and may
adjust the loaded pipeline in ``_prepare``. :meth:`PipelineBackend.load` checks the task's
extras (:mod:`backends.runtime.extras`) and the device before touching any weights, loads through
:func:`backends.runtime.loading.from_pretrained` (weight sharing, LoRAs, tiling, compile) and
places through :func:`backends.runtime.placement.place` (device or CPU offload).
:meth:`PipelineBackend.replace` re-places a loaded pipeline for another ``cpu_offload`` without
loading it again (the out-of-memory ladder). torch and diffusers are imported only when
``load`` runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from backends.base import BackendMissing, ModelSpec
from backends.random_models import resolve_model_dir
from backends.runtime import placement
from backends.runtime.errors import device_errors, empty_cache
from backends.runtime.extras import check_extras
from backends.runtime.imports import PIP_NAMES, require, torch_dtype
from backends.runtime.loading import from_pretrained


class PipelineBackend:
    task: ClassVar[str]
    pipeline_class: ClassVar[str]  # e.g. "AutoPipelineForImage2Image"

    def __init__(self, spec: ModelSpec, cache_dir: Path) -> None:
        self.spec = spec
        self.cache_dir = Path(cache_dir)
        self._pipe: Any = None
        self._location: str | None = None

    def load(self) -> None:
        if self._pipe is not None:
            return
        require("torch", self.task)
        diffusers = require("diffusers", self.task)
        check_extras(self.task)
        self._require_extras()
        placement.check_device(self.spec)
        placement.offload_mode(self.spec)  # a wrong option fails before anything is loaded
        torch_dtype(self.spec.dtype)  # a wrong dtype fails before anything is built
        cls = getattr(diffusers, self.pipeline_class, None)
        if cls is None:
            raise BackendMissing(
                f"task {self.task} needs diffusers.{self.pipeline_class}, which diffusers "
                f"{diffusers.__version__} lacks: pip install -U '{PIP_NAMES['diffusers']}'"
            )
        self._location = resolve_model_dir(self.spec.model, self.cache_dir)
        pipe = from_pretrained(cls, self.spec, self._location, self.task)
        self._pipe = placement.place(self._prepare(pipe), self.spec)
        self._loaded()

    def replace(self, spec: ModelSpec) -> None:
        """Run as ``spec`` from now on: the same weights, another placement (``cpu_offload``,
        ``max_batch``). A loaded pipeline is moved off the device first, then offloaded: no
        second copy is ever loaded. Raises InvalidRequest if ``spec`` names other weights."""
        if self._pipe is not None:
            self._pipe = placement.replace(self._pipe, self.spec, spec)
        elif placement.weights_key(self.spec) != placement.weights_key(spec):
            placement.replace(None, self.spec, spec)  # raises, with the message
        self.spec = spec

    def _require_extras(self) -> None:
        """Checks beyond the task's table in backends.runtime.extras (raise BackendMissing)."""

    def _prepare(self, pipe: Any) -> Any:
        """Adjust the loaded pipeline before it is placed (adapters, schedulers)."""
        return pipe

    def _loaded(self) -> None:
        """Called once the pipeline is in place."""

    @staticmethod
    def batches(request: Any, max_batch: int) -> list[list[int]]:
        """Output indices (input-major: image i, seed j -> i * seeds + j) grouped into
        pipeline calls of at most ``max_batch``; one call never mixes image sizes."""
        n_seeds = len(request.seeds)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(request.images):
            for j in range(n_seeds):
                by_size.setdefault(image.size, []).append(i * n_seeds + j)
        return [
            ks[start : start + max_batch]
            for ks in by_size.values()
            for start in range(0, len(ks), max_batch)
        ]

    def call(self, **kwargs: Any) -> tuple[Any, float]:
        """One pipeline call with device errors translated; returns (result, seconds)."""
        started = time.perf_counter()
        with device_errors(self.spec, f"running {self.spec.model}"):
            result = self._pipe(**kwargs)
        return result, time.perf_counter() - started

    def info(self, **extra: Any) -> dict[str, Any]:
        """What every pipeline result records about where it came from, plus ``extra``."""
        base = {
            "model": self.spec.model,
            "revision": self.spec.revision,
            "location": self._location,
            "pipeline": type(self._pipe).__name__,
        }
        scheduler = getattr(self._pipe, "scheduler", None)
        if scheduler is not None:
            base["scheduler"] = type(scheduler).__name__
        offload = placement.offload_mode(self.spec)
        if offload:
            base["cpu_offload"] = offload
        return {**base, "device": self.spec.device, "dtype": self.spec.dtype, **extra}

    def unload(self) -> None:
        if self._pipe is None:
            return
        self._pipe = None
        empty_cache(self.spec)
