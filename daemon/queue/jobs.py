"""Job transitions in the ledger after a claim: done, failed (retried with backoff or
ended, with the units that wait on it), put back (budgets, shutdown), started on a worker,
recovered after a crash, cancelled.

A unit that takes an earlier rule step's outputs waits (``waiting``) until every unit of
that step has ended; then it is queued if any of them made outputs, or fails if none did.
"""

from __future__ import annotations

import json
import sqlite3

from daemon.queue.store import Store
from daemon.types import JobState, OutputRecord

__all__ = ["Jobs"]


class Jobs:
    def __init__(self, store: Store):
        self._store = store

    def complete(self, job_id_: str, outputs: list[OutputRecord], seconds: float) -> None:
        """Mark done (outputs already committed) and release the units that wait on it."""
        now = self._store.clock()
        # Only the fields a record was given are stored: the manifest shows the same keys.
        stored = json.dumps([o.model_dump(mode="json", exclude_unset=True) for o in outputs])
        with self._store.tx() as db:
            db.execute(
                "UPDATE jobs SET state=?, outputs=?, seconds=?, error=NULL, lease_owner=NULL,"
                " updated_at=? WHERE id=?",
                (JobState.DONE, stored, seconds, now, job_id_),
            )
            self._release_dependents(db, job_id_, now)

    def fail(self, job_id_: str, reason: str, *, retryable: bool) -> JobState:
        """Retry later with backoff, or end the job (and the steps waiting on it)."""
        now = self._store.clock()
        with self._store.tx() as db:
            row = db.execute("SELECT attempts FROM jobs WHERE id=?", (job_id_,)).fetchone()
            attempts = row["attempts"]
            if retryable and attempts < self._store.max_attempts:
                delay = self._store.retry_backoff * 2 ** (attempts - 1)
                db.execute(
                    "UPDATE jobs SET state=?, error=?, not_before=?, lease_owner=NULL, updated_at=? WHERE id=?",
                    (JobState.QUEUED, reason, now + delay, now, job_id_),
                )
                return JobState.QUEUED
            if retryable:
                reason = f"{reason} (gave up after {attempts} attempts)"
            self._fail_chain(db, job_id_, reason, now)
            return JobState.FAILED

    def _fail_chain(self, db: sqlite3.Connection, job_id_: str, reason: str, now: float) -> None:
        db.execute(
            "UPDATE jobs SET state=?, error=?, lease_owner=NULL, updated_at=? WHERE id=?",
            (JobState.FAILED, reason, now, job_id_),
        )
        self._release_dependents(db, job_id_, now)

    def _release_dependents(self, db: sqlite3.Connection, job_id_: str, now: float) -> None:
        """When every unit of a rule step has ended, the units that take its outputs run (if
        any of them made outputs) or fail (if none did)."""
        row = db.execute("SELECT plan_id, step_name FROM jobs WHERE id=?", (job_id_,)).fetchone()
        siblings = db.execute(
            "SELECT state FROM jobs WHERE plan_id=? AND step_name=?",
            (row["plan_id"], row["step_name"]),
        ).fetchall()
        states = {JobState(r["state"]) for r in siblings}
        if not all(s.terminal for s in states):
            return
        children = db.execute(
            "SELECT id FROM jobs WHERE plan_id=? AND depends_on=? AND state=?",
            (row["plan_id"], row["step_name"], JobState.WAITING),
        ).fetchall()
        for child in children:
            if JobState.DONE in states:
                db.execute(
                    "UPDATE jobs SET state=?, updated_at=? WHERE id=?",
                    (JobState.QUEUED, now, child["id"]),
                )
            else:
                self._fail_chain(
                    db, child["id"], f"not run: its input step {row['step_name']!r} failed", now
                )

    def defer(self, job_id_: str, until: float, reason: str) -> None:
        """Put a running job back until ``until`` without counting the attempt (budgets)."""
        with self._store.tx() as db:
            db.execute(
                "UPDATE jobs SET state=?, attempts=MAX(attempts-1, 0), not_before=?, error=?,"
                " lease_owner=NULL, updated_at=? WHERE id=?",
                (JobState.QUEUED, until, reason, self._store.clock(), job_id_),
            )

    def release(self, job_id_: str) -> None:
        """Put a running job back without counting the attempt (graceful shutdown)."""
        with self._store.tx() as db:
            db.execute(
                "UPDATE jobs SET state=?, attempts=MAX(attempts-1, 0), lease_owner=NULL, updated_at=? WHERE id=? AND state=?",
                (JobState.QUEUED, self._store.clock(), job_id_, JobState.RUNNING),
            )

    def on_worker(self, job_ids: list[str]) -> None:
        """Note that these claimed jobs' processing began (decoding, then the worker): from
        now on a crash is charged to them (:meth:`recover`)."""
        if not job_ids:
            return
        marks = ",".join("?" * len(job_ids))
        with self._store.tx() as db:
            db.execute(
                f"UPDATE jobs SET on_worker_at=? WHERE state=? AND on_worker_at IS NULL"
                f" AND id IN ({marks})",
                (self._store.clock(), JobState.RUNNING, *job_ids),
            )

    def recover(self) -> int:
        """After a crash: jobs left running are queued again. Only those a worker was running
        keep their attempt (so an input that kills the process every time still ends failed);
        jobs that were merely claimed ahead of the worker get theirs back. Returns how many."""
        now = self._store.clock()
        with self._store.tx() as db:
            rows = db.execute(
                "SELECT id, attempts, on_worker_at FROM jobs WHERE state=?", (JobState.RUNNING,)
            ).fetchall()
            for row in rows:
                if row["on_worker_at"] is None:  # claimed, never started: not its fault
                    db.execute(
                        "UPDATE jobs SET state=?, attempts=MAX(attempts-1, 0), lease_owner=NULL,"
                        " updated_at=? WHERE id=?",
                        (JobState.QUEUED, now, row["id"]),
                    )
                elif row["attempts"] >= self._store.max_attempts:
                    self._fail_chain(
                        db,
                        row["id"],
                        f"the daemon stopped during each of {row['attempts']} attempts",
                        now,
                    )
                else:
                    db.execute(
                        "UPDATE jobs SET state=?, lease_owner=NULL, updated_at=? WHERE id=?",
                        (JobState.QUEUED, now, row["id"]),
                    )
        return len(rows)

    def cancel(self, job_id_: str) -> JobState:
        """End a queued or waiting job (and the units after it). Returns the job's state
        before; a running job is left to finish."""
        with self._store.tx() as db:
            row = db.execute("SELECT state FROM jobs WHERE id=?", (job_id_,)).fetchone()
            if row is None:
                raise KeyError(job_id_)
            if row["state"] in (JobState.QUEUED, JobState.WAITING, JobState.HELD):
                self._fail_chain(db, job_id_, "cancelled by an operator", self._store.clock())
            return JobState(row["state"])
