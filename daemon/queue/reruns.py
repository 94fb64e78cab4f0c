"""Re-runs in the ledger: failed jobs queued again with a fresh attempt budget (an
operator's ``retry``, a quarantined input moved back), counted on their plan as a new round.

A unit that failed only because its input step failed (``not run: its input step ...``)
waits again rather than being queued: it runs once its input step has.
"""

from __future__ import annotations

import sqlite3

from daemon.queue.store import Store
from daemon.types import JobState

__all__ = ["Reruns"]


class Reruns:
    def __init__(self, store: Store):
        self._store = store

    def retry(self, job_ids: list[str] | None = None) -> list[str]:
        """Queue failed jobs again with a fresh attempt budget (all failed ones if
        ``job_ids`` is None); units that failed only because of them wait again. A held job
        named in ``job_ids`` is queued at once. When the plan's manifest was committed
        already, the re-run is a new round of its folder (``reruns``): it is not mistaken
        for another daemon's commit. Returns the ids queued."""
        now = self._store.clock()
        queued = []
        with self._store.tx() as db:
            if job_ids is None:
                rows = db.execute(
                    "SELECT * FROM jobs WHERE state=? AND (depends_on IS NULL OR error NOT LIKE"
                    " 'not run: its input step%')",
                    (JobState.FAILED,),
                ).fetchall()
            else:
                marks = ",".join("?" * len(job_ids))
                rows = db.execute(f"SELECT * FROM jobs WHERE id IN ({marks})", job_ids).fetchall()
            for row in rows:
                if row["state"] == JobState.HELD:
                    db.execute(
                        "UPDATE jobs SET state=?, not_before=0, updated_at=? WHERE id=?",
                        (JobState.QUEUED, now, row["id"]),
                    )
                    queued.append(row["id"])
                    continue
                if row["state"] != JobState.FAILED:
                    continue
                self.requeue_failed(db, row, now)
                queued.append(row["id"])
        return queued

    def readmit(self, db: sqlite3.Connection, pid: str, now: float) -> bool:
        """Queue a finished plan's failed jobs again (a new round); False when none failed."""
        rows = db.execute(
            "SELECT * FROM jobs WHERE plan_id=? AND state=? AND (depends_on IS NULL OR"
            " error IS NULL OR error NOT LIKE 'not run: its input step%')",
            (pid, JobState.FAILED),
        ).fetchall()
        for row in rows:
            self.requeue_failed(db, row, now)
        return bool(rows)

    def requeue_failed(self, db: sqlite3.Connection, row: sqlite3.Row, now: float) -> None:
        """A failed job queued again with a fresh attempt budget; the units that failed only
        because of it wait again; a plan already committed counts a re-run (a new round)."""
        db.execute(
            "UPDATE plans SET reruns=reruns+1 WHERE id=? AND state!='active'", (row["plan_id"],)
        )
        db.execute(
            "UPDATE jobs SET state=?, attempts=0, holds=0, not_before=0, error=NULL, updated_at=?"
            " WHERE id=?",
            (JobState.QUEUED, now, row["id"]),
        )
        db.execute(
            "UPDATE jobs SET state=?, error=NULL, updated_at=? WHERE plan_id=? AND step_index>?"
            " AND state=? AND error LIKE 'not run: its input step%'",
            (JobState.WAITING, now, row["plan_id"], row["step_index"], JobState.FAILED),
        )
        db.execute(
            "UPDATE plans SET state='active', finished_at=NULL WHERE id=?", (row["plan_id"],)
        )

    def note_rerun_archived(self, pid: str, reruns: int) -> None:
        """The committed round a re-run replaces has been kept under rounds/N/."""
        with self._store.tx() as db:
            db.execute("UPDATE plans SET reruns_archived=? WHERE id=?", (reruns, pid))
