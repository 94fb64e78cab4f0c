"""Holds in the ledger: a job an environment fault stopped waits (``held``) with its reason,
its attempt not counted, and is queued again after a capped exponential backoff — or at
once after a config reload or ``darkroom retry --held``."""

from __future__ import annotations

from daemon.queue.rows import JobRow
from daemon.queue.store import Store
from daemon.types import JobState

__all__ = ["Holds"]


class Holds:
    def __init__(self, store: Store):
        self._store = store

    def hold(self, job_id_: str, reason: str) -> float:
        """An environment fault stopped this running job: hold it with ``reason``, without
        counting the attempt, and try again after a capped exponential backoff. Returns the
        delay in seconds."""
        now = self._store.clock()
        with self._store.tx() as db:
            row = db.execute("SELECT holds FROM jobs WHERE id=?", (job_id_,)).fetchone()
            delay = min(
                self._store.hold_backoff_max, self._store.hold_backoff * 2 ** (row["holds"] or 0)
            )
            db.execute(
                "UPDATE jobs SET state=?, error=?, not_before=?, holds=holds+1,"
                " attempts=MAX(attempts-1, 0), lease_owner=NULL, on_worker_at=NULL, updated_at=?"
                " WHERE id=?",
                (JobState.HELD, reason, now + delay, now, job_id_),
            )
        return delay

    def resume_held(self, *, now: float | None = None, everything: bool = False) -> list[str]:
        """Queue held jobs whose backoff has passed (every held job with ``everything``: a
        config reload or ``darkroom retry --held``, when the cause may be fixed). Returns
        the ids queued; their reason stays until they run."""
        now = self._store.clock() if now is None else now
        # Asked every second by the runner: with nothing held (the usual case) answer from
        # the index without a write transaction (BEGIN IMMEDIATE + an fsync'd COMMIT).
        with self._store.lock:
            if not self._store.db.execute(
                "SELECT 1 FROM jobs WHERE state=? LIMIT 1", (JobState.HELD,)
            ).fetchone():
                return []
        with self._store.tx() as db:
            if everything:
                rows = db.execute("SELECT id FROM jobs WHERE state=?", (JobState.HELD,)).fetchall()
            else:
                rows = db.execute(
                    "SELECT id FROM jobs WHERE state=? AND not_before<=?", (JobState.HELD, now)
                ).fetchall()
            ids = [r["id"] for r in rows]
            for jid in ids:
                db.execute(
                    "UPDATE jobs SET state=?, not_before=?, updated_at=? WHERE id=? AND state=?",
                    (JobState.QUEUED, 0 if everything else now, now, jid, JobState.HELD),
                )
        return ids

    def held(self, limit: int = 100) -> tuple[list[JobRow], int]:
        """Held jobs, latest first (at most ``limit``), and how many there are in all."""
        with self._store.lock:
            total: int = self._store.db.execute(
                "SELECT COUNT(*) AS n FROM jobs WHERE state=?", (JobState.HELD,)
            ).fetchone()["n"]
            rows = self._store.db.execute(
                "SELECT * FROM jobs WHERE state=? ORDER BY updated_at DESC LIMIT ?",
                (JobState.HELD, limit),
            ).fetchall()
        return [JobRow.from_row(r) for r in rows], total

    def held_inputs_by_source(self) -> dict[str, int]:
        """Inputs (source + key) with at least one held job, per source."""
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT p.source AS source, COUNT(DISTINCT p.key) AS n FROM jobs j"
                " JOIN plans p ON p.id = j.plan_id WHERE j.state=? GROUP BY p.source",
                (JobState.HELD,),
            ).fetchall()
        return {r["source"]: r["n"] for r in rows}
