"""The worker pool, seen from the main process: one spawned worker per device.

:class:`Pool` is what the runner needs from a pool; :class:`WorkerPool` is the real one, and
:class:`daemon.execution.inline_pool.InlinePool` runs backends in the calling thread (tests).

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
(``max_batch: 1``), then down :func:`backends.runtime.placement.oom_ladder` (model offload,
then sequential offload) — the worker re-places the weights it has rather than loading them
again — and the placement that worked is kept for that model's next jobs on that worker; only
then does the job fail (retryable). A backend error becomes the daemon's error by
``backends.base.disposition``: held (configuration, missing package or weights), failed for
good (refused, invalid, outcome unknown: never paid twice) or retried.

Each call's time limit is ``max(job_timeout, backends.cards.timeout_hint(profile, outputs))``
(a 14B video model making 4 clips needs far more than a flat 600 s), and each load carries
the model's planned memory (``backends.cards.memory_gib``) so the worker evicts before loading.
Workers are recycled — stopped and started again between jobs — after ``recycle_after_jobs``
jobs or when their resident memory passes ``recycle_rss_gb``.

Every model a worker loads or evicts, and every replaced worker, is reported to
:class:`daemon.hooks.Hooks` (metrics count them).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Protocol

import structlog

from backends import cards
from backends.base import ModelSpec, Request, Result
from backends.runtime import placement
from daemon.errors import JobError, OutOfMemory, WorkerDied
from daemon.execution import devices as device_list
from daemon.execution.worker_handle import ModelEvent, Worker
from daemon.hooks import Hooks

log = structlog.get_logger("darkroom.pool")

__all__ = ["OutOfMemory", "Pool", "WorkerPool", "spec_label", "with_option"]

GB = 1024**3


class Pool(Protocol):
    """What the runner needs from a pool of model runners."""

    job_timeout: float

    def __len__(self) -> int:
        """How many requests can run at once (one per worker)."""
        ...

    def run(
        self,
        spec: ModelSpec,
        request: Request,
        *,
        timeout: float | None = None,
        fallback: bool = True,
        cancel: Callable[[], bool] | None = None,
    ) -> Result:
        """Run one request; raises the daemon's errors (JobError, WorkerDied, OutOfMemory)."""
        ...

    def loaded_specs(self) -> set[ModelSpec]:
        """The models some worker holds now (the dispatcher prefers their jobs)."""
        ...

    def ping(self) -> bool:
        """Check idle workers (their device still answers); False when one was replaced."""
        ...


def with_option(spec: ModelSpec, name: str, value: Any) -> ModelSpec:
    options = {k: spec.option(k) for k, _ in spec.options}
    options[name] = value
    return dataclasses.replace(spec, options=ModelSpec.freeze_options(options))


def spec_label(spec: ModelSpec) -> str:
    """The label of a model in hooks when no profile name is known for it."""
    return spec.model


def oom_fallbacks(spec: ModelSpec, device: str) -> list[ModelSpec]:
    """What to try, in order, after ``spec`` ran out of memory on ``device`` (the worker's
    resolved device): the backend's internal batch at 1, then the offload ladder (none on the
    CPU). Every rung holds the same weights, so the worker re-places instead of loading."""
    one = spec if spec.option("max_batch") == 1 else with_option(spec, "max_batch", 1)
    ladder = placement.oom_ladder(dataclasses.replace(one, device=device))
    rungs = [dataclasses.replace(rung, device=spec.device) for rung in ladder]
    return ([] if one == spec else [one]) + rungs


def outputs_of(request: Request) -> int:
    """How many outputs (images or clips) a request makes."""
    return max(1, len(request.images) * len(request.seeds))


class WorkerPool:
    """Runs requests on the workers, replacing one when it dies, hangs or grows too big.

    ``profile_of`` names the profile a spec came from (metrics are labelled by profile);
    ``on_alive`` is called on every successful answer (the health check's proof of progress).
    """

    def __init__(
        self,
        device: str | list[str],
        threads: int,
        cache_dir: Path,
        job_timeout: float,
        *,
        hooks: Hooks | None = None,
        profile_of: Callable[[ModelSpec], str] = spec_label,
        on_alive: Callable[[], None] | None = None,
        cpu_threads: int | None = None,
        memory_budget_gb: float | None = None,
        recycle_after_jobs: int | None = None,
        recycle_rss_gb: float | None = None,
        affinity_wait: float = 2.0,
        allow_env: Collection[str] = (),
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
                on_model_event=self._model_event,
                allow_env=allow_env,
            )
            for d in self.devices
        ]
        self._cond = threading.Condition()
        self.recycle_after_jobs = recycle_after_jobs
        self.recycle_rss = recycle_rss_gb * GB if recycle_rss_gb else None
        self.affinity_wait = affinity_wait
        self.hooks = hooks or Hooks()
        self.profile_of = profile_of
        self.on_alive = on_alive
        self.planned_gb: Callable[[ModelSpec], float | None] = lambda spec: cards.memory_gib(
            self.profile_of(spec), placement.offload_mode(spec)
        )
        self.restarts = 0
        self.recycles = 0
        self.loads = 0
        self.evictions = 0
        self.busy_seconds = 0.0  # time inside model calls, as the backends measured it
        self.calls = 0

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
            if worker.holds(spec):
                return worker
        if waited < self.affinity_wait and any(w.holds(spec) for w in self.workers if w.busy):
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
            reason = worker.death()
            with self._cond:
                self.restarts += 1
            log.warning(
                "starting a new worker",
                device=worker.device,
                restarts=self.restarts,
                reason=reason,
            )
            self.hooks.worker_restarted(worker.device, reason)
            worker.stop(0)
            worker.start()
        return worker

    def _model_event(self, worker: Worker, event: ModelEvent) -> None:
        profile = self.profile_of(event.spec)
        if event.kind == "loaded":
            with self._cond:  # callers run on several threads
                self.loads += 1
            self.hooks.model_loaded(profile, worker.device, event.seconds)
        else:
            with self._cond:
                self.evictions += 1
            self.hooks.model_evicted(profile, worker.device)

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
                worker.stop(0, reason=f"failed its health check: {exc}")
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
                if not worker.holds(spec):
                    worker.call(("load", spec, self.planned_gb(spec)), self.time_limit(spec))
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
        internal batch, then down the offload ladder (otherwise OutOfMemory reaches the
        caller, which can split its batch first). ``cancel``: while this returns true, a call
        still waiting for a free worker gives up (graceful stop) with WorkerDied."""
        timeout = max(timeout or self.job_timeout, self.time_limit(spec, outputs_of(request)))
        worker = self._borrow(spec, cancel=cancel)
        assert worker is not None  # a blocking borrow returns a worker or raises
        try:
            key = placement.weights_key(spec)
            first = worker.placements.get(key, spec) if fallback else spec
            attempts = [first]
            if fallback:
                attempts += oom_fallbacks(first, worker.resolved_device)
            for i, attempt in enumerate(attempts):
                try:
                    result = self._call_run(worker, attempt, request, timeout)
                    break
                except OutOfMemory as exc:
                    if i == len(attempts) - 1:
                        raise
                    nxt = attempts[i + 1]
                    log.warning(
                        "out of memory; retrying smaller",
                        device=worker.device,
                        reason=str(exc),
                        max_batch=nxt.option("max_batch"),
                        cpu_offload=nxt.option("cpu_offload"),
                    )
            if attempt != spec:
                worker.placements[key] = attempt  # this model's next jobs start here
            self._after_job(worker)
            return result
        finally:
            self._return(worker)

    def time_limit(self, spec: ModelSpec, outputs: int = 1) -> float:
        """Seconds one call may take: ``job_timeout``, or more for a model whose card says a
        job of ``outputs`` outputs needs it (load once + per output)."""
        hint = cards.timeout_hint(self.profile_of(spec), outputs, default=self.job_timeout)
        return max(self.job_timeout, hint)

    def _call_run(
        self, worker: Worker, spec: ModelSpec, request: Request, timeout: float
    ) -> Result:
        self._ensure(worker)
        try:
            if spec not in worker.loaded:
                worker.call(("load", spec, self.planned_gb(spec)), timeout)
            result: Result = worker.call(("run", spec, request, self.planned_gb(spec)), timeout)
        except WorkerDied as exc:
            worker.stop(0, reason=str(exc))
            raise
        except JobError as exc:
            if "no answer from the worker" in str(exc):
                # A hung worker cannot be trusted with the next job.
                reason = f"job timed out after {timeout:.0f} s; worker replaced"
                worker.stop(0, reason=reason)
                raise WorkerDied(reason) from None
            raise
        worker.jobs_run += 1
        with self._cond:
            self.calls += 1
            self.busy_seconds += result.seconds
        if self.on_alive:
            self.on_alive()
        return result

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
        worker.stop(reason=f"recycled: {reason}")
        worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every worker. An idle one gets ``timeout`` to exit; a busy one is past its
        deadline already (the runner had stop_timeout to finish), so it is killed now and
        its job goes back to the ledger."""
        for worker in self.workers:
            worker.stop(0 if worker.busy else timeout, reason="the daemon is stopping")

    @property
    def info(self) -> dict[str, Any]:
        info = dict(self.workers[0].info)
        if len(self.workers) > 1:
            info["devices"] = [w.info.get("device", w.device) for w in self.workers]
        return info

    def loaded_specs(self) -> set[ModelSpec]:
        """Every loaded spec, and each one's weights key: a model re-placed after an
        out-of-memory error is still the profile's model (the dispatcher's affinity)."""
        with self._cond:
            loaded: set[ModelSpec] = set().union(*(w.loaded for w in self.workers))
        return loaded | {placement.weights_key(s) for s in loaded}

    def stats(self) -> dict[str, Any]:
        return {
            "workers": len(self.workers),
            "loads": self.loads,
            "evictions": self.evictions,
            "restarts": self.restarts,
            "recycles": self.recycles,
            "calls": self.calls,
            "busy_seconds": round(self.busy_seconds, 3),
        }
