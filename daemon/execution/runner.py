"""The runner: claims jobs from the ledger and carries each batch through prepare, run, commit.

For each job: prepare its inputs and request (:mod:`.prepare`), run the model on the pool
(:mod:`.batching` merges compatible jobs into one call), write every output with its
provenance (:mod:`.commit`), and only then mark the job done. When every job of a plan has
ended, :mod:`.finalize` writes the sheet, the manifest — the commit marker — and the page,
and closes the plan.

Threads: :meth:`Runner.loop` (one thread) only claims — a batch of compatible jobs at a
time, chosen by :mod:`daemon.queue.dispatch` (fair between rules, sticky to loaded models)
— and hands each batch to a small pool of pipeline threads, at most two batches per worker
in flight. A pipeline thread prepares its batch, waits for a worker, runs the batch, then
commits the outputs, marks the jobs done and closes finished plans. So while one batch
occupies a device, the next one is already decoded and queued for it, and the previous
one's outputs, sheet and manifest are being written: the device does not wait for I/O.
:meth:`Runner.step` does the same for one batch, synchronously (tests, ``darkroom
process``).

Each plan's source is read, checked and decoded once (:mod:`.source_cache`) and shared by
its units, its sheet and its finalizer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import structlog

from backends.base import ModelSpec, Request, Result
from daemon import faults
from daemon.config.profiles import Profile
from daemon.errors import (
    SUPERSEDED,
    BudgetReached,
    DarkroomError,
    EnvironmentFault,
    InputChanged,
    JobError,
    UploadInProgress,
    WorkerDied,
)
from daemon.execution import batching
from daemon.execution.commit import commit_outputs
from daemon.execution.finalize import Finalizer
from daemon.execution.pool import Pool
from daemon.execution.prepare import BoundLog, Prepared, Preparer
from daemon.execution.source_cache import SourceCache
from daemon.hooks import HookChain, Hooks
from daemon.outputs.c2pa import ContentCredentials
from daemon.queue.dispatch import Dispatcher, FairShare
from daemon.queue.ledger import JobRow, Ledger
from daemon.sinks.base import Sink
from daemon.sources.base import Source
from daemon.types import JobState, Plan, PlanState

log = structlog.get_logger("darkroom.runner")

__all__ = ["Runner"]


def _next_midnight() -> float:
    tomorrow = time.localtime(time.time() + 86400)
    return time.mktime((tomorrow.tm_year, tomorrow.tm_mon, tomorrow.tm_mday, 0, 0, 1, 0, 0, -1))


class Runner:
    """Runs the ledger's jobs on a pool. ``hooks`` hear of every job end, commit and plan end;
    ``tick`` is called on every turn of the loop (the health check's proof that it turns)."""

    def __init__(
        self,
        ledger: Ledger,
        sources: Mapping[str, Source],
        sinks: Mapping[str, Sink],
        pool: Pool,
        profiles: Mapping[str, Profile],
        device: str,
        *,
        hooks: Hooks | None = None,
        tick: Callable[[], None] | None = None,
        ping_interval: float = 30.0,
        max_batch: int = 1,
        max_wait_ms: float = 0.0,
        priorities: Mapping[str, float] | None = None,
        in_flight: int | None = None,
        source_cache_size: int | None = None,
        credentials: ContentCredentials | None = None,
    ):
        self.ledger = ledger
        self.credentials = credentials  # C2PA signing of outputs, when configured
        self.sources = sources
        self.sinks = sinks
        self.pool = pool
        self.profiles = profiles  # swapped as a whole by a reload
        self.device = device
        self.hooks = HookChain([hooks] if hooks is not None else [])
        self.tick = tick or (lambda: None)
        self.ping_interval = ping_interval
        self._last_ping = time.monotonic()
        self.owner = f"runner-{id(self):x}"
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.current: JobRow | None = None  # the latest job a pipeline thread started
        self.last_error: str | None = None
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        # Two batches per worker: one on the device, the next decoded and waiting for it.
        self.in_flight = in_flight or 2 * max(1, len(pool))
        # Every batch in flight holds up to max_batch plans' sources, plus room for plans
        # whose last unit is being finalized.
        self.source_cache = SourceCache(
            sources, source_cache_size or self.in_flight * max(1, max_batch) + 4
        )
        self.preparer = Preparer(ledger, sources, sinks, self.source_cache, device)
        self.finalizer = Finalizer(
            ledger, sources, sinks, lambda: self.profiles, self.source_cache, self.hooks
        )
        self.dispatcher = Dispatcher(
            ledger,
            self.owner,
            FairShare(priorities, slack=max(4, max_batch)),
            self._batch_limit,
            self._model_loaded,
        )
        self._finalize_lock = threading.RLock()
        # Plans whose finalize raised: (failures so far, monotonic time of the next try), so
        # a plan that cannot close logs its traceback once, then one line, and backs off.
        self._finalize_failures: dict[str, tuple[int, float]] = {}
        self._held_checked = 0.0

    # -- the loop --------------------------------------------------------------------

    def loop(self) -> None:
        slots = threading.BoundedSemaphore(self.in_flight)
        with ThreadPoolExecutor(
            self.in_flight, thread_name_prefix="darkroom-pipeline"
        ) as pipelines:
            while not self.stopping.is_set():
                self.tick()
                self._resume_due_held()
                if not slots.acquire(timeout=0.5):
                    continue  # every slot busy: the tick above keeps the health check fed
                batch = self.dispatcher.claim(self.max_wait, self.stopping)
                if batch:
                    pipelines.submit(self._pipeline, batch, slots.release)
                    continue
                slots.release()
                self.finalize_ended()
                if time.monotonic() - self._last_ping > self.ping_interval:
                    self._last_ping = time.monotonic()
                    self.pool.ping()
                due = self.ledger.next_due()
                wait = 1.0 if due is None else max(0.01, min(1.0, due - time.time()))
                self.wake.wait(wait)
                self.wake.clear()
        # Leaving the with-block waits for the batches in flight: each one finishes, or puts
        # its jobs back in the ledger once the pool is stopped.

    def step(self) -> bool:
        """Run one batch (one job when batching is off) if one is due; False when the queue
        had nothing runnable."""
        self._resume_due_held(force=True)
        batch = self.dispatcher.claim(self.max_wait, self.stopping)
        if not batch:
            return False
        self.run_batch(batch)
        return True

    def _resume_due_held(self, *, force: bool = False) -> None:
        """Queue held jobs whose backoff has passed (at most once a second from the loop)."""
        now = time.monotonic()
        if not force and now - self._held_checked < 1.0:
            return
        self._held_checked = now
        if resumed := self.ledger.resume_held():
            log.info("held jobs try again", jobs=len(resumed))

    def _pipeline(self, batch: list[JobRow], done: Callable[[], None]) -> None:
        try:
            self.run_batch(batch)
        except Exception:  # never lose the slot; the jobs' states are settled in run_batch
            log.exception("pipeline failed", jobs=[j.id for j in batch])
        finally:
            done()
            self.wake.set()

    def run_batch(self, batch: list[JobRow]) -> None:
        """Prepare every job, run the compatible ones together, commit each job's outputs."""
        prepared = [p for p in (self._prepare_job(job) for job in batch) if p is not None]
        for group in batching.group(prepared, self._batch_key, self.max_batch):
            if self.stopping.is_set():
                for p in group:
                    self.ledger.release(p.job.id)
                    p.log.info("job put back for the next start", reason="stopping")
                continue
            # Each job was marked as started when its preparation began (_prepare_job):
            # a crash from here on is charged to it.
            outcomes = batching.run_batch(
                self._run_on_pool, group[0].spec, [p.request for p in group], self.pool.job_timeout
            )
            for p, outcome in zip(group, outcomes, strict=True):
                self._settle(p, outcome)

    def _run_on_pool(
        self,
        spec: ModelSpec,
        request: Request,
        *,
        timeout: float,
        fallback: bool = True,
    ) -> Result:
        return self.pool.run(
            spec,
            request,
            timeout=timeout,
            fallback=fallback,
            cancel=self.stopping.is_set,
        )

    # -- one job ---------------------------------------------------------------------

    def _prepare_job(self, job: JobRow) -> Prepared | None:
        """Decode and size the job's inputs; None when the job ended here (failed, adopted)."""
        self.current = job
        plan_row = self.ledger.plan(job.plan_id)
        plan = plan_row.plan
        bound = log.bind(
            job_id=job.id,
            rule=job.rule,
            source=plan_row.source,
            key=plan_row.key,
            step=job.unit_id,
        )
        if plan_row.reruns > plan_row.reruns_archived:
            # An operator re-ran a plan whose manifest this daemon committed: keep that round
            # under rounds/N/ and run again; the manifest is ours, not another daemon's.
            self.finalizer.archive_previous_round(job.plan_id, plan, rerun=True)
            self.ledger.note_rerun_archived(job.plan_id, plan_row.reruns)
        elif (
            job.unit_index == 0
            and plan_row.reruns == 0
            and self.finalizer.committed_elsewhere(job.plan_id, plan)
        ):
            # Several daemons share this sink and another one finished this very plan.
            self.ledger.adopt(job.plan_id, "already committed by another daemon sharing the sink")
            self.source_cache.drop(job.plan_id)
            bound.info("already committed by another daemon; not run again")
            self.hooks.plan_finished(job.plan_id, PlanState.DONE)
            return None
        bound.info("job started", attempt=job.attempts)
        # From here a crash may be this job's doing (a decoder that kills the process, a model
        # that kills its worker): it is charged an attempt. Jobs only claimed ahead of it are not.
        self.ledger.on_worker([job.id])
        try:
            unit = plan.unit_at(job.unit_index)
            profile = self.profiles.get(unit.model)
            if profile is None:
                raise JobError(
                    f"model profile {unit.model!r} is no longer configured", retryable=False
                )
            if job.unit_index == 0:
                self.finalizer.archive_previous_round(job.plan_id, plan)
            return self.preparer.prepare(job, plan, profile, bound)
        except Exception as exc:
            self._settle_error(job, plan, bound, exc)
            return None

    def _settle(self, p: Prepared, outcome: Result | Exception) -> None:
        self.current = p.job
        if isinstance(outcome, Exception):
            self._settle_error(p.job, p.plan, p.log, outcome)
            return
        try:
            outputs = commit_outputs(
                p, outcome, self.sinks[p.plan.sink], credentials=self.credentials
            )
        except Exception as exc:
            self._settle_error(p.job, p.plan, p.log, exc)
            return
        faults.point("after-outputs")
        self.ledger.complete(p.job.id, outputs, outcome.seconds)
        p.log.info(
            "job done",
            outputs=len(outputs),
            seconds=round(outcome.seconds, 3),
            batch=outcome.info.get("batch_jobs", 1),
        )
        self.hooks.job_ended(p.job.rule, JobState.DONE, p.unit.model, outcome.seconds)
        self.finalize_if_ended(p.job.plan_id)
        self.wake.set()

    def _settle_error(self, job: JobRow, plan: Plan, bound: BoundLog, exc: Exception) -> None:
        if isinstance(exc, BudgetReached):
            self.ledger.defer(job.id, _next_midnight(), str(exc))
            bound.warning("job deferred: daily budget reached", reason=str(exc))
            return
        if isinstance(exc, UploadInProgress):
            # The file may still be arriving: look again later, without spending an attempt
            # (daemon.sources.uploads); the reason is the job's visible record meanwhile.
            self.ledger.defer(job.id, time.time() + exc.retry_in, str(exc))
            bound.info("job waits: the input may still be uploading", reason=str(exc))
            self.wake.set()
            return
        if isinstance(exc, EnvironmentFault):
            # Not the input's fault: hold the job (input stays, no attempt used) and try
            # again after a capped backoff, or at once on a reload or `darkroom retry`.
            delay = self.ledger.hold(job.id, str(exc))
            self.last_error = str(exc)
            bound.warning("job held: fix the cause", reason=str(exc), retry_in=round(delay))
            return
        if isinstance(exc, WorkerDied):
            if self.stopping.is_set():
                self.ledger.release(job.id)
                bound.info("job put back for the next start", reason=str(exc))
                return
            self._failed(job, bound, str(exc), retryable=True)
        elif isinstance(exc, InputChanged):  # a newer version (of it or a companion) runs
            self._failed(job, bound, SUPERSEDED + str(exc), retryable=False)
        elif isinstance(exc, DarkroomError):
            self._failed(job, bound, str(exc), retryable=exc.retryable)
        else:  # a bug must cost one job, never the daemon
            bound.error("unexpected error", exc_info=exc)
            self._failed(job, bound, f"internal error: {type(exc).__name__}: {exc}", retryable=True)
        self.finalize_if_ended(job.plan_id)
        self.wake.set()

    def _failed(self, job: JobRow, bound: BoundLog, reason: str, *, retryable: bool) -> None:
        self.last_error = reason
        state = self.ledger.fail(job.id, reason, retryable=retryable)
        if state is JobState.QUEUED:
            bound.warning("job failed, will retry", reason=reason, attempt=job.attempts)
        else:
            bound.error("job failed", reason=reason, attempts=job.attempts)
            self.hooks.job_ended(job.rule, JobState.FAILED, None, None)

    # -- batching and dispatch -------------------------------------------------------

    def _batch_key(self, p: Prepared) -> tuple[object, ...] | None:
        if p.profile.hosted or self._batch_limit(p.profile.name) == 1:
            return None  # hosted calls are billed and rate-limited per request: never merged
        return batching.batch_key(p.spec, p.request)

    def _batch_limit(self, profile_name: str | None) -> int:
        """How many jobs of this profile may share a call: max_batch, or 1 when the profile
        says ``batch: false`` in its options or defaults."""
        if profile_name is None:
            return self.max_batch
        profile = self.profiles.get(profile_name)
        if profile is None:
            return 1
        if (
            profile.hosted
            or profile.options.get("batch", profile.defaults.get("batch", True)) is False
        ):
            return 1
        return self.max_batch

    def _model_loaded(self, profile_name: str | None) -> bool:
        profile = self.profiles.get(profile_name) if profile_name else None
        return profile is not None and profile.spec(self.device) in self.pool.loaded_specs()

    # -- closing plans ---------------------------------------------------------------

    def finalize_ended(self) -> None:
        """Close plans whose jobs all ended without passing through a pipeline (a plan that
        failed at submission, or one whose manifest a crash kept from being written)."""
        now = time.monotonic()
        for plan_id in self.ledger.unfinished_plans():
            failures, next_try = self._finalize_failures.get(plan_id, (0, 0.0))
            if now < next_try:
                continue
            try:
                self.finalize_if_ended(plan_id)
            except Exception as exc:
                if failures == 0:  # the traceback once; then one line per (backed-off) try
                    log.exception("cannot close plan; will try again", plan=plan_id)
                else:
                    log.error("still cannot close plan", plan=plan_id, reason=repr(exc))
                delay = min(600.0, 2.0 * 2**failures)
                self._finalize_failures[plan_id] = (failures + 1, now + delay)
            else:
                self._finalize_failures.pop(plan_id, None)

    def finalize_if_ended(self, plan_id: str) -> None:
        with self._finalize_lock:  # pipeline threads and the loop may both see a plan end
            jobs = self.ledger.jobs_of(plan_id)
            if (
                all(j.state.terminal for j in jobs)
                and self.ledger.plan(plan_id).state is PlanState.ACTIVE
            ):
                self.finalizer.finalize(plan_id, jobs)

    def finalize(self, plan_id: str, jobs: list[JobRow] | None = None) -> None:
        """Write the sheet, then the manifest (the commit marker), then close the plan."""
        with self._finalize_lock:
            self.finalizer.finalize(plan_id, jobs or self.ledger.jobs_of(plan_id))
