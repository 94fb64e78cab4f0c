"""The worker pool, seen from the main process. One worker for now.

The worker is a spawned process; if it dies (segfault, killed, a sticky device error)
the pool notices, starts a new one, and reports the job as failed-but-retryable so the
ledger queues it again with its attempt counted.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from backends.base import ModelSpec, Request, Result
from daemon.errors import JobError, WorkerDied

log = structlog.get_logger("darkroom.pool")

# Errors a retry cannot fix: the same request will be refused the same way.
PERMANENT = {"InvalidRequest", "ModelUnavailable", "BackendMissing"}


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class Worker:
    def __init__(self, device: str, threads: int, cache_dir: Path, start_timeout: float = 120.0):
        self.device = device
        self.threads = threads
        self.cache_dir = cache_dir
        self.start_timeout = start_timeout
        self.process: Any = None
        self.conn: Any = None
        self.info: dict[str, Any] = {}
        self.loaded: set[ModelSpec] = set()
        self.jobs_run = 0

    def start(self) -> None:
        from daemon import worker

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=worker.main, args=(child, self.device, self.threads, str(self.cache_dir)),
            name="darkroom-worker", daemon=True,
        )
        self.process.start()
        child.close()
        self.loaded = set()
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
            if not self.alive():
                self.process.join(1)
                raise WorkerDied(f"the worker process {_exit_reason(self.process.exitcode)}")
            if time.monotonic() > deadline:
                raise JobError(f"no answer from the worker within {timeout:.0f} s")

    def call(self, message: tuple, timeout: float) -> Any:
        try:
            self.conn.send(message)
        except (BrokenPipeError, OSError):
            raise WorkerDied(f"the worker process {_exit_reason(self.process.exitcode)}") from None
        reply = self._receive(timeout)
        if reply[0] == "ok":
            return reply[1]
        _, kind, message_text, sticky, oom = reply
        if sticky:
            raise WorkerDied(f"device error, worker replaced: {message_text}")
        raise JobError(message_text, retryable=kind not in PERMANENT)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.alive():
            try:
                self.conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
            self.process.join(timeout)
        if self.alive():
            self.process.kill()
            self.process.join(5)
        self.process = None


class WorkerPool:
    """Runs requests on the worker, replacing it when it dies or hangs."""

    def __init__(self, device: str, threads: int, cache_dir: Path, job_timeout: float,
                 on_restart: Callable[[], None] | None = None, on_alive: Callable[[], None] | None = None):
        self.job_timeout = job_timeout
        self._worker = Worker(device, threads, cache_dir)
        self._lock = threading.Lock()
        self.restarts = 0
        self.loads = 0
        self.on_restart = on_restart  # metrics
        self.on_alive = on_alive  # a successful answer: the health check's proof of progress

    def start(self) -> None:
        with self._lock:
            self._worker.start()

    def _ensure(self) -> Worker:
        if not self._worker.alive():
            self.restarts += 1
            log.warning("starting a new worker", restarts=self.restarts)
            if self.on_restart:
                self.on_restart()
            self._worker.stop(0)
            self._worker.start()
        return self._worker

    def ping(self, timeout: float = 30.0) -> bool:
        """Ask an idle worker to touch its device. Skipped (True) while a job holds it;
        a failed check replaces the worker."""
        if not self._lock.acquire(blocking=False):
            return True
        try:
            worker = self._ensure()
            try:
                worker.call(("ping",), timeout)
            except (WorkerDied, JobError) as exc:
                log.error("worker failed its health check; replacing it", reason=str(exc))
                worker.stop(0)
                return False
            if self.on_alive:
                self.on_alive()
            return True
        finally:
            self._lock.release()

    def load(self, spec: ModelSpec) -> None:
        with self._lock:
            worker = self._ensure()
            if spec not in worker.loaded:
                worker.call(("load", spec), self.job_timeout)
                worker.loaded.add(spec)
                self.loads += 1

    def run(self, spec: ModelSpec, request: Request) -> Result:
        with self._lock:
            worker = self._ensure()
            try:
                if spec not in worker.loaded:
                    worker.call(("load", spec), self.job_timeout)
                    worker.loaded.add(spec)
                    self.loads += 1
                result = worker.call(("run", spec, request), self.job_timeout)
            except WorkerDied:
                worker.stop(0)
                raise
            except JobError as exc:
                if "no answer from the worker" in str(exc):
                    # A hung worker cannot be trusted with the next job.
                    worker.stop(0)
                    raise WorkerDied(f"job timed out after {self.job_timeout:.0f} s; worker replaced") from None
                raise
            worker.jobs_run += 1
            if self.on_alive:
                self.on_alive()
            return result

    def stop(self, timeout: float = 10.0) -> None:
        self._worker.stop(timeout)

    @property
    def info(self) -> dict[str, Any]:
        return dict(self._worker.info)
