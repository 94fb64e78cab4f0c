"""Claims in the ledger: which queued jobs are due, in the queue's order, and the claim that
moves them to ``running`` with their attempt counted and a lease owner set.

:mod:`daemon.queue.dispatch` picks among the due heads (fair between rules, sticky to loaded
models) and claims them with :meth:`Claims.claim_ids`, the same transition as
:meth:`Claims.claim`.
"""

from __future__ import annotations

from daemon.queue.rows import Candidate, JobRow
from daemon.queue.store import Store
from daemon.types import JobState

__all__ = ["Claims"]

# The first ``per_rule`` due jobs of one rule, in the queue's order, with the profile each
# would load (daemon.queue.dispatch picks among the rules: fair between them, sticky to
# loaded models). One rule at a time through ``jobs_due``, so a claim reads ``per_rule``
# index entries per rule, not every queued job: with 10,000 jobs queued by a burst the old
# single query (a window over all of them, a JSON extract each) took ~100 ms per claim,
# under the lock intake writes with. Plans are stored with "units"; ledgers written by
# earlier versions call them "steps".
RULE_HEADS = """
    SELECT j.id, j.rule, j.step, j.attempts,
           COALESCE(json_extract(p.plan, '$.units[' || j.step_index || '].model'),
                    json_extract(p.plan, '$.steps[' || j.step_index || '].model')) AS profile
    FROM (SELECT id, rule, step, attempts, plan_id, step_index, not_before, created_at
          FROM jobs INDEXED BY jobs_due
          WHERE state = ? AND rule = ? AND not_before <= ?
          ORDER BY not_before, created_at, step_index LIMIT ?) AS j
    JOIN plans p ON p.id = j.plan_id
    ORDER BY j.not_before, j.created_at, j.step_index
    """


class Claims:
    def __init__(self, store: Store):
        self._store = store

    def claim(self, owner: str) -> JobRow | None:
        """The next runnable job, now ``running`` with its attempt counted; None if none."""
        now = self._store.clock()
        with self._store.tx() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE state=? AND not_before<=? ORDER BY not_before, created_at, step_index LIMIT 1",
                (JobState.QUEUED, now),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state=?, attempts=attempts+1, lease_owner=?, on_worker_at=NULL,"
                " updated_at=? WHERE id=?",
                (JobState.RUNNING, owner, now, row["id"]),
            )
            return JobRow.from_row(
                db.execute("SELECT * FROM jobs WHERE id=?", (row["id"],)).fetchone()
            )

    def due_heads(self, per_rule: int, now: float | None = None) -> list[Candidate]:
        """The first ``per_rule`` due jobs of every rule, by rule, in the queue's order."""
        now = self._store.clock() if now is None else now
        heads: list[Candidate] = []
        with self._store.lock:
            for rule in self._queued_rules():
                rows = self._store.db.execute(
                    RULE_HEADS, (JobState.QUEUED, rule, now, per_rule)
                ).fetchall()
                heads += [
                    Candidate(r["id"], r["rule"], r["step"], r["attempts"], r["profile"])
                    for r in rows
                ]
        return heads

    def _queued_rules(self) -> list[str]:
        """The rules with queued jobs, in name order: one index probe per rule (skipping
        from each rule to the next), not a pass over every queued job."""
        rules: list[str] = []
        db = self._store.db
        row = db.execute(
            "SELECT rule FROM jobs INDEXED BY jobs_due WHERE state=? ORDER BY rule LIMIT 1",
            (JobState.QUEUED,),
        ).fetchone()
        while row is not None:
            rules.append(row["rule"])
            row = db.execute(
                "SELECT rule FROM jobs INDEXED BY jobs_due WHERE state=? AND rule>?"
                " ORDER BY rule LIMIT 1",
                (JobState.QUEUED, rules[-1]),
            ).fetchone()
        return rules

    def claim_ids(self, owner: str, ids: list[str]) -> list[JobRow]:
        """Claim exactly these jobs if they are still queued (the transition of ``claim``)."""
        if not ids:
            return []
        now = self._store.clock()
        marks = ",".join("?" * len(ids))
        with self._store.tx() as db:
            db.execute(
                f"UPDATE jobs SET state=?, attempts=attempts+1, lease_owner=?, on_worker_at=NULL, updated_at=?"
                f" WHERE state=? AND id IN ({marks})",
                (JobState.RUNNING, owner, now, JobState.QUEUED, *ids),
            )
            rows = db.execute(
                f"SELECT * FROM jobs WHERE lease_owner=? AND state=? AND id IN ({marks})",
                (owner, JobState.RUNNING, *ids),
            ).fetchall()
        order = {jid: i for i, jid in enumerate(ids)}
        return sorted((JobRow.from_row(r) for r in rows), key=lambda j: order[j.id])

    def next_due(self) -> float | None:
        """When the earliest queued job becomes runnable (for the dispatcher's sleep)."""
        with self._store.lock:
            row = self._store.db.execute(
                "SELECT MIN(not_before) AS t FROM jobs WHERE state IN (?, ?)",
                (JobState.QUEUED, JobState.HELD),
            ).fetchone()
        t: float | None = row["t"]
        return t
