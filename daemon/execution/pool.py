"""The worker pool, seen from the main process: one spawned worker per device.

Callers (the runner's pipeline threads) call :meth:`WorkerPool.run` from several threads at
once; each call borrows one idle worker for its duration. Which worker: one that already
has the model loaded if any is idle; else, if a busy worker has it, wait a little
(``affinity_wait``) for it rather than load the model a second time; else the idle worker
holding the fewest models. So a device keeps the model it has and two profiles do not swap
back and forth.

Faults: a worker that dies (segfault, killed, a sticky device error) or misses its time
limit is replaced, and the call raises :class:`WorkerDied` so the runner hands the job back
to the ledger with its attempt counted. An out-of-memory error is retried here, on the same
worker (which has freed its memory): first with the backend's internal batch at 1
(``max_batch: 1``), then with ``cpu_offload``; only then does the job fail (retryable).
Workers are recycled — stopped and started again between jobs — after ``recycle_after_jobs``
jobs or when their resident memory passes ``recycle_rss_gb``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from backends.base import ModelSpec, Request, Result
from daemon.execution import devices as device_list
from daemon.errors import JobError, WorkerDied

log = structlog.get_logger("darkroom.pool")

# Errors a retry cannot fix: the same request will be refused the same way.
PERMANENT = {"InvalidRequest", "ModelUnavailable", "BackendMissing"}
GB = 1024**3


class OutOfMemory(JobError):
    """The device ran out of memory for this call; a smaller one may fit."""


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def with_option(spec: ModelSpec, name: str, value: Any) -> ModelSpec:
    options = {k: spec.option(k) for k, _ in spec.options}
    options[name] = value
    return dataclasses.replace(spec, options=ModelSpec.freeze_options(options))


class Worker:
    """One worker process and the pipe to it. Not thread-safe: the pool lends it to one caller."""

    def __init__(
        self,
        device: str,
        threads: int,
        cache_dir: Path,
        start_timeout: float = 120.0,
        memory_budget_gb: float | None = None,
    ):
        self.device = device
        self.threads = threads
        self.cache_dir = cache_dir
        self.start_timeout = start_timeout
        self.memory_budget_gb = memory_budget_gb
        self.process: Any = None
        self.conn: Any = None
        self.info: dict[str, Any] = {}
        self.loaded: set[ModelSpec] = set()
        self.jobs_run = 0
        self.rss = 0
        self.worker_loads = 0  # loads reported by the current process
        self.busy = False  # lent to a caller (guarded by the pool's condition)

    def start(self) -> None:
        from daemon.execution import worker

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=worker.main,
            args=(
                child,
                self.device,
                self.threads,
                str(self.cache_dir),
                self.memory_budget_gb,
                os.getpid(),
            ),
            name="darkroom-worker",
            daemon=True,
        )
        self.process.start()
        child.close()
        self.loaded, self.jobs_run, self.rss, self.worker_loads = set(), 0, 0, 0
        reply = self._receive(self.start_timeout)
        self.info = reply[1]
        log.info("worker started", **self.info)

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def _receive(self, timeout: float) -> tuple:
        deadline = time.monotonic() + timeout
        while True:
            if self.conn.poll(0.1):
                try:
                    return self.conn.recv()
                except (EOFError, OSError):
                    pass  # the worker died mid-message; reported below
            process = self.process  # pool.stop() may clear it from another thread
            if process is None or not process.is_alive():
                if process is None:
                    raise WorkerDied("the worker process was stopped")
                process.join(1)
                raise WorkerDied(f"the worker process {_exit_reason(process.exitcode)}")
            if time.monotonic() > deadline:
                raise JobError(f"no answer from the worker within {timeout:.0f} s")

    def call(self, message: tuple, timeout: float) -> tuple[Any, int]:
        """Send one message; returns (value, model loads it caused)."""
        try:
            self.conn.send(message)
        except (BrokenPipeError, OSError, AttributeError):
            process = self.process
            raise WorkerDied(
                f"the worker process {_exit_reason(process.exitcode if process else None)}"
            ) from None
        reply = self._receive(timeout)
        loads = self._note(reply[-1])
        if reply[0] == "ok":
            return reply[1], loads
        _, kind, message_text, sticky, oom, _state = reply
        if sticky:
            raise WorkerDied(f"device error, worker replaced: {message_text}")
        if oom:
            raise OutOfMemory(message_text)
        raise JobError(message_text, retryable=kind not in PERMANENT)

    def _note(self, state: dict[str, Any]) -> int:
        """Take the worker's own account of what it holds; returns loads since the last one."""
        self.loaded = set(state.get("loaded", ()))
        self.rss = state.get("rss", 0)
        loads = state.get("loads", self.worker_loads) - self.worker_loads
        self.worker_loads = state.get("loads", self.worker_loads)
        return loads

    def stop(self, timeout: float = 10.0) -> None:
        process = self.process  # the pool's stop and a caller's cleanup may race: use one handle
        if process is None:
            return
        if process.is_alive():
            try:
                self.conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
            process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join(5)
        if self.process is process:
            self.process = None


class WorkerPool:
    """Runs requests on the workers, replacing one when it dies, hangs or grows too big."""

    def __init__(
        self,
        device: str | list[str],
        threads: int,
        cache_dir: Path,
        job_timeout: float,
        on_restart: Callable[[], None] | None = None,
        on_alive: Callable[[], None] | None = None,
        *,
        cpu_threads: int | None = None,
        memory_budget_gb: float | None = None,
        recycle_after_jobs: int | None = None,
        recycle_rss_gb: float | None = None,
        affinity_wait: float = 2.0,
    ):
        self.job_timeout = job_timeout
        self.devices = device_list.resolve([device] if isinstance(device, str) else list(device))
        cpu = threads if cpu_threads is None else cpu_threads
        self.workers = [
            Worker(
                d,
                cpu if d in ("cpu", "auto") else threads,
                cache_dir,
                memory_budget_gb=memory_budget_gb,
            )
            for d in self.devices
        ]
        self._cond = threading.Condition()
        self.recycle_after_jobs = recycle_after_jobs
        self.recycle_rss = recycle_rss_gb * GB if recycle_rss_gb else None
        self.affinity_wait = affinity_wait
        self.restarts = 0
        self.recycles = 0
        self.loads = 0
        self.busy_seconds = 0.0  # time inside model calls, as the backends measured it
        self.calls = 0
        self.on_restart = on_restart  # metrics
        self.on_alive = on_alive  # a successful answer: the health check's proof of progress

    def __len__(self) -> int:
        return len(self.workers)

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    # -- lending workers -------------------------------------------------------------

    def _choose(self, spec: ModelSpec | None, waited: float) -> Worker | None:
        idle = [w for w in self.workers if not w.busy]
        if not idle or spec is None:
            return idle[0] if idle else None
        for worker in idle:
            if spec in worker.loaded:
                return worker
        if waited < self.affinity_wait and any(spec in w.loaded for w in self.workers if w.busy):
            return None  # its model is loaded on a busy device: wait for it a moment
        return min(idle, key=lambda w: len(w.loaded))

    def _borrow(
        self, spec: ModelSpec | None, block: bool = True, cancel: Callable[[], bool] | None = None
    ) -> Worker | None:
        started = time.monotonic()
        with self._cond:
            while True:
                worker = self._choose(spec, time.monotonic() - started)
                if worker is not None:
                    worker.busy = True
                    return worker
                if not block:
                    return None
                if cancel is not None and cancel():
                    raise WorkerDied("stopping: the job was not started")
                self._cond.wait(0.05)

    def _return(self, worker: Worker) -> None:
        with self._cond:
            worker.busy = False
            self._cond.notify_all()

    def _ensure(self, worker: Worker) -> Worker:
        if not worker.alive():
            self.restarts += 1
            log.warning("starting a new worker", device=worker.device, restarts=self.restarts)
            if self.on_restart:
                self.on_restart()
            worker.stop(0)
            worker.start()
        return worker

    # -- calls -----------------------------------------------------------------------

    def ping(self, timeout: float = 30.0) -> bool:
        """Ask each idle worker to touch its device. Busy ones are skipped (their jobs prove
        them); a failed check replaces the worker."""
        ok = True
        for _ in range(len(self.workers)):
            worker = self._borrow(None, block=False)
            if worker is None:
                break
            try:
                self._ensure(worker)
                worker.call(("ping",), timeout)
                if self.on_alive:
                    self.on_alive()
            except (WorkerDied, JobError) as exc:
                log.error(
                    "worker failed its health check; replacing it",
                    device=worker.device,
                    reason=str(exc),
                )
                worker.stop(0)
                ok = False
            finally:
                self._return(worker)
        return ok

    def load(self, spec: ModelSpec) -> None:
        """Load ``spec`` on every worker (preloading before the first file arrives)."""
        for worker in self.workers:
            with self._cond:
                while worker.busy:
                    self._cond.wait(0.05)
                worker.busy = True
            try:
                self._ensure(worker)
                if spec not in worker.loaded:
                    _, loads = worker.call(("load", spec), self.job_timeout)
                    self._count(loads=loads)
            finally:
                self._return(worker)

    def run(
        self,
        spec: ModelSpec,
        request: Request,
        *,
        timeout: float | None = None,
        fallback: bool = True,
        cancel: Callable[[], bool] | None = None,
    ) -> Result:
        """Run one request on a worker. ``fallback``: on out-of-memory, retry with a smaller
        internal batch, then with CPU offload (otherwise OutOfMemory reaches the caller,
        which can split its batch first). ``cancel``: while this returns true, a call still
        waiting for a free worker gives up (graceful stop) with WorkerDied."""
        timeout = timeout or self.job_timeout
        worker = self._borrow(spec, cancel=cancel)
        try:
            attempts = [spec]
            if fallback:
                attempts += [
                    with_option(spec, "max_batch", 1),
                    with_option(spec, "cpu_offload", True),
                ]
            for i, attempt in enumerate(attempts):
                try:
                    result = self._call_run(worker, attempt, request, timeout)
                    break
                except OutOfMemory as exc:
                    if i == len(attempts) - 1:
                        raise
                    log.warning(
                        "out of memory; retrying smaller",
                        device=worker.device,
                        reason=str(exc),
                        next=("max_batch=1", "cpu_offload")[i],
                    )
            self._after_job(worker)
            return result
        finally:
            self._return(worker)

    def _call_run(
        self, worker: Worker, spec: ModelSpec, request: Request, timeout: float
    ) -> Result:
        self._ensure(worker)
        try:
            if spec not in worker.loaded:
                _, loads = worker.call(("load", spec), self.job_timeout)
                self._count(loads=loads)
            result, loads = worker.call(("run", spec, request), timeout)
            self._count(loads=loads)
        except WorkerDied:
            worker.stop(0)
            raise
        except JobError as exc:
            if "no answer from the worker" in str(exc):
                # A hung worker cannot be trusted with the next job.
                worker.stop(0)
                raise WorkerDied(f"job timed out after {timeout:.0f} s; worker replaced") from None
            raise
        worker.jobs_run += 1
        self._count(calls=1, busy=result.seconds)
        if self.on_alive:
            self.on_alive()
        return result

    def _count(self, loads: int = 0, calls: int = 0, busy: float = 0.0) -> None:
        with self._cond:  # callers run on several threads
            self.loads += loads
            self.calls += calls
            self.busy_seconds += busy

    def _after_job(self, worker: Worker) -> None:
        """Recycle a worker that has run its share of jobs or grown past its memory limit."""
        reason = None
        if self.recycle_after_jobs and worker.jobs_run >= self.recycle_after_jobs:
            reason = f"ran {worker.jobs_run} jobs"
        elif self.recycle_rss and worker.rss > self.recycle_rss:
            reason = f"resident memory {worker.rss / GB:.1f} GB"
        if reason is None:
            return
        self.recycles += 1
        log.info("recycling the worker", device=worker.device, reason=reason)
        worker.stop()
        worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every worker. An idle one gets ``timeout`` to exit; a busy one is past its
        deadline already (the runner had stop_timeout to finish), so it is killed now and
        its job goes back to the ledger."""
        for worker in self.workers:
            worker.stop(0 if worker.busy else timeout)

    @property
    def info(self) -> dict[str, Any]:
        info = dict(self.workers[0].info)
        if len(self.workers) > 1:
            info["devices"] = [w.info.get("device", w.device) for w in self.workers]
        return info

    def loaded_specs(self) -> set[ModelSpec]:
        with self._cond:
            return set().union(*(w.loaded for w in self.workers))

    def stats(self) -> dict[str, Any]:
        return {
            "workers": len(self.workers),
            "loads": self.loads,
            "restarts": self.restarts,
            "recycles": self.recycles,
            "calls": self.calls,
            "busy_seconds": round(self.busy_seconds, 3),
        }
