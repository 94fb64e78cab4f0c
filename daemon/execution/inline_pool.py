"""A pool that runs backends in the calling thread: the runner's tests, with no worker process.

It keeps the :class:`daemon.execution.pool.Pool` contract — loaded models stay loaded,
backend errors become the daemon's errors exactly as a worker's replies do — but gives up
what only a separate process can give: a time limit (``timeout`` is accepted and ignored)
and surviving a backend that kills its process (the stub's ``crash``/``segfault`` hooks
would end the caller: test those through :class:`~daemon.execution.pool.WorkerPool`).
Meant for ``backends.stub`` and tiny models; one request runs at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from backends.base import Backend, BackendError, DeviceError, ModelSpec, Request, Result
from daemon.errors import JobError, OutOfMemory, WorkerDied
from daemon.execution.model_cache import ModelCache
from daemon.execution.pool import oom_fallbacks, spec_label
from daemon.execution.worker import concrete_spec, error_kind, error_message
from daemon.execution.worker_handle import backend_failure
from daemon.hooks import Hooks

__all__ = ["InlinePool"]


class InlinePool:
    """Runs requests on backends built in this process, one at a time."""

    def __init__(
        self,
        cache_dir: Path,
        device: str = "cpu",
        *,
        job_timeout: float = 600.0,
        hooks: Hooks | None = None,
        profile_of: Callable[[ModelSpec], str] = spec_label,
    ):
        self.cache_dir = Path(cache_dir)
        self.device = device
        self.job_timeout = job_timeout
        self.hooks = hooks or Hooks()
        self.profile_of = profile_of
        # The worker's own cache: an out-of-memory retry re-places the loaded weights, as there.
        self._cache = ModelCache(device, None, self._build, lambda s: concrete_spec(s, device))
        self._lock = threading.Lock()
        self.loads = 0
        self.calls = 0

    def __len__(self) -> int:
        return 1

    def run(
        self,
        spec: ModelSpec,
        request: Request,
        *,
        timeout: float | None = None,
        fallback: bool = True,
        cancel: Callable[[], bool] | None = None,
    ) -> Result:
        if cancel is not None and cancel():
            raise WorkerDied("stopping: the job was not started")
        attempts = [spec]
        if fallback:
            attempts += oom_fallbacks(spec, concrete_spec(spec, self.device).device)
        with self._lock:
            for i, attempt in enumerate(attempts):
                try:
                    return self._run(attempt, request)
                except OutOfMemory:
                    if i == len(attempts) - 1:
                        raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _run(self, spec: ModelSpec, request: Request) -> Result:
        try:
            backend = self._load(spec)
            backend.validate(request)
            result: Result = backend.run(request)
        except DeviceError as exc:
            if exc.sticky:
                self._cache.drop_all_but(None)  # a worker would be replaced: start from nothing
                raise WorkerDied(f"device error, worker replaced: {exc}") from None
            if exc.out_of_memory:
                self._cache.drop_all_but(spec)
                raise OutOfMemory(str(exc)) from None
            raise JobError(str(exc)) from None
        except BackendError as exc:
            raise backend_failure(error_kind(exc), error_message(exc)) from None
        self.calls += 1
        return result

    def _build(self, spec: ModelSpec) -> Backend:
        from backends import backend_class

        concrete = concrete_spec(spec, self.device)
        backend: Backend = backend_class(concrete.task)(concrete, self.cache_dir)
        backend.load()
        return backend

    def _load(self, spec: ModelSpec) -> Backend:
        before = self._cache.loads
        started = time.perf_counter()
        backend: Backend = self._cache.get(spec)
        if self._cache.loads > before:
            self.loads += 1
            self.hooks.model_loaded(
                self.profile_of(spec), self.device, time.perf_counter() - started
            )
        self._cache.take_events()  # nobody reads them here: the hooks above are the report
        return backend

    def load(self, spec: ModelSpec) -> None:
        """Load ``spec`` now (preloading), as WorkerPool.load does on every worker."""
        with self._lock:
            self._load(spec)

    def loaded_specs(self) -> set[ModelSpec]:
        from backends.runtime.placement import weights_key

        loaded = set(self._cache.specs())
        return loaded | {weights_key(s) for s in loaded}

    def ping(self) -> bool:
        return True
