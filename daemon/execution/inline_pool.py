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
from daemon.execution.pool import spec_label, with_option
from daemon.execution.worker import concrete_spec
from daemon.execution.worker_handle import PERMANENT
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
        self._backends: dict[ModelSpec, Backend] = {}
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
            attempts += [with_option(spec, "max_batch", 1), with_option(spec, "cpu_offload", True)]
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
                self._backends.clear()  # a worker would be replaced: start from nothing
                raise WorkerDied(f"device error, worker replaced: {exc}") from None
            if exc.out_of_memory:
                raise OutOfMemory(str(exc)) from None
            raise JobError(str(exc)) from None
        except BackendError as exc:
            raise JobError(str(exc), retryable=type(exc).__name__ not in PERMANENT) from None
        self.calls += 1
        return result

    def _load(self, spec: ModelSpec) -> Backend:
        backend = self._backends.get(spec)
        if backend is None:
            from backends import backend_class

            concrete = concrete_spec(spec, self.device)
            started = time.perf_counter()
            backend = backend_class(concrete.task)(concrete, self.cache_dir)
            backend.load()
            self._backends[spec] = backend
            self.loads += 1
            self.hooks.model_loaded(
                self.profile_of(spec), self.device, time.perf_counter() - started
            )
        return backend

    def load(self, spec: ModelSpec) -> None:
        """Load ``spec`` now (preloading), as WorkerPool.load does on every worker."""
        with self._lock:
            self._load(spec)

    def loaded_specs(self) -> set[ModelSpec]:
        return set(self._backends)

    def ping(self) -> bool:
        return True
