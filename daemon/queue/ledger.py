"""The ledger: a SQLite database (WAL) that is also the job queue — the facade its callers use.

``Ledger`` keeps one public API (``ledger.submit()``, ``ledger.claim()``, ``ledger.plan()``,
...) and hands each call to the part that owns it. The parts are small classes sharing one
:class:`~daemon.queue.store.Store` (the write connection and its re-entrant lock, the
reader connection, the clock and the retry settings); each holds the SQL of one concern:

- :mod:`~daemon.queue.schema`: the tables and their migrations (``ADDED_COLUMNS``).
- :mod:`~daemon.queue.store`: transactions, batches (one fsync for many writes), the reader.
- :mod:`~daemon.queue.plans`: ``plans`` — the idempotent submit (a plan and its jobs), a
  plan's state, rounds and prior manifest, pruning. Ids are :mod:`~daemon.queue.ids`.
- :mod:`~daemon.queue.owners`: ``owners`` — which asset owns each output folder; a plan
  whose folder another asset owns is placed beside it at submission.
- :mod:`~daemon.queue.claims`: due jobs in queue order and the claim (queued -> running).
- :mod:`~daemon.queue.jobs`: what happens to a claimed job — done, failed (retried with
  backoff or ended, with the units waiting on it), put back, recovered after a crash.
- :mod:`~daemon.queue.holds`: environment-fault holds with a capped exponential backoff.
- :mod:`~daemon.queue.reruns`: failed jobs queued again (operator ``retry``, re-admission).
- :mod:`~daemon.queue.arrivals`: ``seen`` and ``quarantine`` — what was handled, what was
  quarantined and why.
- :mod:`~daemon.queue.spend`: hosted-model spend from committed outputs.
- :mod:`~daemon.queue.queries`: read-only reports (jobs and plans listings, counts).

Composition rather than mixins: each part can be read (and tested) alone with a
``Store``, and the parts that need another's transition inside their own transaction get
it passed in (plans -> owners and arrivals, arrivals -> reruns). The facade's methods only
delegate; ``submit_many`` stays here because it calls ``self.submit`` (a subclass that
overrides ``submit`` sees it used).

A plan is ``done`` only after its manifest (the commit marker) has been written; on
start, ``recover`` requeues work that was running when the process died and
``unfinished_plans`` returns plans whose jobs all ended but whose manifest was never written.

Typed at the seam: plans go in and come out as :class:`daemon.types.Plan` (stored as its
JSON), outputs as :class:`daemon.types.OutputRecord`, rounds as
:class:`daemon.outputs.manifest.RoundSummary`; the rows are :mod:`daemon.queue.rows`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from daemon.outputs.manifest import RoundSummary
from daemon.queue.arrivals import Arrivals, SeenVersion
from daemon.queue.claims import Claims
from daemon.queue.holds import Holds
from daemon.queue.ids import job_id, plan_id
from daemon.queue.ids import legacy_plan_id as legacy_plan_id  # importable from here, as before
from daemon.queue.jobs import Jobs
from daemon.queue.owners import Owners
from daemon.queue.plans import ABSENT as ABSENT  # importable from here, as before
from daemon.queue.plans import Plans
from daemon.queue.queries import ADOPTED_NOTE, IgnoredInput, Queries
from daemon.queue.reruns import Reruns
from daemon.queue.rows import Candidate, JobRow, PlanRow
from daemon.queue.schema import ADDED_COLUMNS as ADDED_COLUMNS  # importable from here, as before
from daemon.queue.schema import SCHEMA as SCHEMA
from daemon.queue.spend import Spend
from daemon.queue.store import Store
from daemon.types import JobState, OutputRecord, Plan, PlanState

__all__ = ["Candidate", "JobRow", "Ledger", "PlanRow", "job_id", "plan_id"]


class Ledger:
    ADOPTED_NOTE = ADOPTED_NOTE

    def __init__(
        self,
        path: Path,
        *,
        max_attempts: int = 3,
        retry_backoff: float = 2.0,
        clock: Callable[[], float] = time.time,
        hold_backoff: float = 30.0,
        hold_backoff_max: float = 600.0,
    ):
        self._store = store = Store(
            path,
            max_attempts=max_attempts,
            retry_backoff=retry_backoff,
            clock=clock,
            hold_backoff=hold_backoff,
            hold_backoff_max=hold_backoff_max,
        )
        self.path = path
        self._clock = clock
        self._db = store.db  # the write connection (tests trace and inspect it)
        reruns = Reruns(store)
        self._reruns = reruns
        self._arrivals = Arrivals(store, reruns)
        self._owners = Owners(store)
        self._plans = Plans(store, self._owners, self._arrivals)
        self._claims = Claims(store)
        self._jobs = Jobs(store)
        self._holds = Holds(store)
        self._spend = Spend(store)
        self._queries = Queries(store)

    # -- settings a config reload changes on a running ledger ------------------------

    @property
    def max_attempts(self) -> int:
        return self._store.max_attempts

    @max_attempts.setter
    def max_attempts(self, value: int) -> None:
        self._store.max_attempts = value

    @property
    def retry_backoff(self) -> float:
        return self._store.retry_backoff

    @retry_backoff.setter
    def retry_backoff(self, value: float) -> None:
        self._store.retry_backoff = value

    @property
    def hold_backoff(self) -> float:
        return self._store.hold_backoff

    @hold_backoff.setter
    def hold_backoff(self, value: float) -> None:
        self._store.hold_backoff = value

    @property
    def hold_backoff_max(self) -> float:
        return self._store.hold_backoff_max

    @hold_backoff_max.setter
    def hold_backoff_max(self, value: float) -> None:
        self._store.hold_backoff_max = value

    # -- the file --------------------------------------------------------------------

    def close(self) -> None:
        self._store.close()

    def batch(
        self, *, durable: bool = True, savepoints: bool = True
    ) -> AbstractContextManager[None]:
        """Group many writes into one transaction: one commit (one fsync) for all of them
        (see :meth:`daemon.queue.store.Store.batch` for ``durable`` and ``savepoints``)."""
        return self._store.batch(durable=durable, savepoints=savepoints)

    # -- intake: plans, owners, arrivals ---------------------------------------------

    def submit(self, plan: Plan) -> tuple[str, bool]:
        return self._plans.submit(plan)

    def submit_many(self, plans: list[Plan]) -> list[tuple[str, bool] | Exception]:
        """``submit`` for each plan in one transaction; per plan its (id, created), or the
        exception that plan raised (that plan alone is left out, the others are kept)."""
        results: list[tuple[str, bool] | Exception] = []
        with self.batch():
            for plan in plans:
                try:
                    results.append(self.submit(plan))
                except Exception as exc:  # sqlite3 or a plan that cannot be stored
                    results.append(exc)
        return results

    def submit_group(self, plans: Sequence[Plan]) -> list[tuple[str, bool]]:
        """``submit`` for each plan in a few statements for them all (intake's writer);
        raises what any of them raised (the caller's transaction undoes the group)."""
        return self._plans.submit_group(plans)

    def plan_states(self, ids: list[str]) -> dict[str, PlanState]:
        return self._plans.plan_states(ids)

    def owner_of(self, sink: str, folder: str) -> tuple[str, str] | None:
        return self._owners.owner_of(sink, folder)

    def is_seen(
        self, source: str, key: str, size: int, mtime_ns: int, etag: str | None = None
    ) -> bool:
        return self._arrivals.is_seen(source, key, size, mtime_ns, etag)

    def mark_seen(
        self,
        source: str,
        key: str,
        size: int,
        mtime_ns: int,
        sha256: str | None,
        outcome: str,
        etag: str | None = None,
    ) -> None:
        self._arrivals.mark_seen(source, key, size, mtime_ns, sha256, outcome, etag)

    def mark_seen_many(self, rows: Sequence[SeenVersion]) -> None:
        self._arrivals.mark_seen_many(rows)

    def seen_since(
        self, since: float, sources: list[str]
    ) -> list[tuple[str, str, int, int, str | None]]:
        return self._arrivals.seen_since(since, sources)

    # -- the queue: claims, transitions, holds ---------------------------------------

    def claim(self, owner: str) -> JobRow | None:
        return self._claims.claim(owner)

    def due_heads(self, per_rule: int, now: float | None = None) -> list[Candidate]:
        return self._claims.due_heads(per_rule, now)

    def claim_ids(self, owner: str, ids: list[str]) -> list[JobRow]:
        return self._claims.claim_ids(owner, ids)

    def next_due(self) -> float | None:
        return self._claims.next_due()

    def complete(self, job_id_: str, outputs: list[OutputRecord], seconds: float) -> None:
        self._jobs.complete(job_id_, outputs, seconds)

    def fail(self, job_id_: str, reason: str, *, retryable: bool) -> JobState:
        return self._jobs.fail(job_id_, reason, retryable=retryable)

    def defer(self, job_id_: str, until: float, reason: str) -> None:
        self._jobs.defer(job_id_, until, reason)

    def release(self, job_id_: str) -> None:
        self._jobs.release(job_id_)

    def on_worker(self, job_ids: list[str]) -> None:
        self._jobs.on_worker(job_ids)

    def recover(self) -> int:
        return self._jobs.recover()

    def cancel(self, job_id_: str) -> JobState:
        return self._jobs.cancel(job_id_)

    def hold(self, job_id_: str, reason: str) -> float:
        return self._holds.hold(job_id_, reason)

    def resume_held(self, *, now: float | None = None, everything: bool = False) -> list[str]:
        return self._holds.resume_held(now=now, everything=everything)

    def held(self, limit: int = 100) -> tuple[list[JobRow], int]:
        return self._holds.held(limit)

    def held_inputs_by_source(self) -> dict[str, int]:
        return self._holds.held_inputs_by_source()

    # -- spend -----------------------------------------------------------------------

    def spend(self, since: float = 0.0) -> dict[tuple[str, str], float]:
        return self._spend.spend(since)

    def spend_today(self, rule: str) -> float:
        return self._spend.spend_today(rule)

    def spend_by_provider(self, since: float = 0.0) -> dict[tuple[str, str], float]:
        return self._spend.spend_by_provider(since)

    # -- plans -----------------------------------------------------------------------

    def plan(self, pid: str) -> PlanRow:
        return self._plans.plan(pid)

    def unfinished_plans(self) -> list[str]:
        return self._plans.unfinished_plans()

    def adopt(self, pid: str, note: str) -> None:
        self._plans.adopt(pid, note)

    def others_want(self, pid: str, source: str, key: str, sha256: str) -> bool:
        return self._plans.others_want(pid, source, key, sha256)

    def note_prior_manifest(self, pid: str, version: str | None) -> None:
        self._plans.note_prior_manifest(pid, version)

    def prior_manifest(self, pid: str) -> tuple[bool, str | None]:
        return self._plans.prior_manifest(pid)

    def note_round(self, pid: str, rounds: list[RoundSummary]) -> None:
        self._plans.note_round(pid, rounds)

    def finish_plan(self, pid: str, state: PlanState) -> None:
        self._plans.finish_plan(pid, state)

    def prune(self, before: float) -> int:
        return self._plans.prune(before)

    # -- quarantine and re-runs ------------------------------------------------------

    def record_quarantine(
        self, source: str, key: str, sha256: str, reason: str, location: str | None
    ) -> None:
        self._arrivals.record_quarantine(source, key, sha256, reason, location)

    def clear_quarantine(self, source: str, key: str, sha256: str) -> int:
        return self._arrivals.clear_quarantine(source, key, sha256)

    def requeue_quarantined(self, source: str, key: str, sha256: str | None = None) -> list[str]:
        return self._arrivals.requeue_quarantined(source, key, sha256)

    def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._arrivals.quarantined(limit)

    def quarantined_count(self) -> int:
        return self._arrivals.quarantined_count()

    def quarantined_by_source(self) -> dict[str, int]:
        return self._arrivals.quarantined_by_source()

    def retry(self, job_ids: list[str] | None = None) -> list[str]:
        return self._reruns.retry(job_ids)

    def note_rerun_archived(self, pid: str, reruns: int) -> None:
        self._reruns.note_rerun_archived(pid, reruns)

    # -- reporting -------------------------------------------------------------------

    def jobs_of(self, pid: str) -> list[JobRow]:
        return self._queries.jobs_of(pid)

    def job(self, jid: str) -> JobRow:
        return self._queries.job(jid)

    def find_job(self, prefix: str) -> JobRow | None:
        return self._queries.find_job(prefix)

    def jobs(
        self, state: str | None = None, rule: str | None = None, limit: int = 1000
    ) -> list[JobRow]:
        return self._queries.jobs(state, rule, limit)

    def plans(self, state: PlanState | None = None) -> list[PlanRow]:
        return self._queries.plans(state)

    def plans_of(self, source: str, key: str) -> list[PlanRow]:
        return self._queries.plans_of(source, key)

    def oldest_active_by_source(self) -> dict[str, float]:
        return self._queries.oldest_active_by_source()

    def counts(self) -> dict[str, int]:
        return self._queries.counts()

    def counts_by_rule(self) -> dict[str, dict[str, int]]:
        return self._queries.counts_by_rule()

    def plan_count(self) -> int:
        return self._queries.plan_count()

    def plan_counts(self) -> dict[str, int]:
        return self._queries.plan_counts()

    def ignored(self, limit: int = 100) -> tuple[list[IgnoredInput], int]:
        return self._queries.ignored(limit)
