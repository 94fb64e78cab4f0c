"""Read-only reports from the ledger: jobs and plans by id, prefix, state, rule or input,
and the counts ``darkroom status``, ``jobs ls`` and the metrics show."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from daemon.queue.rows import JobRow, PlanRow
from daemon.queue.store import Store
from daemon.types import PlanState

__all__ = ["ADOPTED_NOTE", "IgnoredInput", "Queries"]

# The reason a job closed by ``adopt`` carries (another daemon committed its outputs).
ADOPTED_NOTE = "already committed by another daemon sharing the sink"


class Queries:
    def __init__(self, store: Store):
        self._store = store

    def jobs_of(self, pid: str) -> list[JobRow]:
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT * FROM jobs WHERE plan_id=? ORDER BY step_index", (pid,)
            ).fetchall()
        return [JobRow.from_row(r) for r in rows]

    def job(self, jid: str) -> JobRow:
        with self._store.lock:
            row = self._store.db.execute("SELECT * FROM jobs WHERE id=?", (jid,)).fetchone()
        if row is None:
            raise KeyError(jid)
        return JobRow.from_row(row)

    def find_job(self, prefix: str) -> JobRow | None:
        """A job by its id or an unambiguous prefix of it (as ``jobs ls`` prints them)."""
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT * FROM jobs WHERE id LIKE ? LIMIT 2", (prefix + "%",)
            ).fetchall()
        return JobRow.from_row(rows[0]) if len(rows) == 1 else None

    def jobs(
        self, state: str | None = None, rule: str | None = None, limit: int = 1000
    ) -> list[JobRow]:
        query, args = "SELECT * FROM jobs WHERE 1=1", list[str | int]()
        if state:
            query += " AND state=?"
            args.append(state)
        if rule:
            query += " AND rule=?"
            args.append(rule)
        query += " ORDER BY updated_at DESC LIMIT ?"
        args.append(limit)
        with self._store.lock:
            return [JobRow.from_row(r) for r in self._store.db.execute(query, args).fetchall()]

    def plans(self, state: PlanState | None = None) -> list[PlanRow]:
        with self._store.lock:
            if state:
                rows = self._store.db.execute(
                    "SELECT * FROM plans WHERE state=? ORDER BY created_at", (state,)
                ).fetchall()
            else:
                rows = self._store.db.execute("SELECT * FROM plans ORDER BY created_at").fetchall()
        return [PlanRow.from_row(r) for r in rows]

    def plans_of(self, source: str, key: str) -> list[PlanRow]:
        """Every plan an input ever had (all versions, all rules), oldest first."""
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT * FROM plans WHERE source=? AND key=? ORDER BY created_at", (source, key)
            ).fetchall()
        return [PlanRow.from_row(r) for r in rows]

    def oldest_active_by_source(self) -> dict[str, float]:
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT source, MIN(created_at) AS t FROM plans WHERE state='active'"
                " GROUP BY source"
            ).fetchall()
        return {r["source"]: r["t"] for r in rows}

    def counts(self) -> dict[str, int]:
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"
            ).fetchall()
        return {r["state"]: r["n"] for r in rows}

    def counts_by_rule(self) -> dict[str, dict[str, int]]:
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT rule, state, COUNT(*) AS n FROM jobs GROUP BY rule, state"
            ).fetchall()
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            out.setdefault(r["rule"], {})[r["state"]] = r["n"]
        return out

    def plan_count(self) -> int:
        with self._store.lock:
            n: int = self._store.db.execute("SELECT COUNT(*) AS n FROM plans").fetchone()["n"]
        return n

    def plan_counts(self) -> dict[str, int]:
        """Plans by state; a plan another daemon committed counts as ``adopted``, not done."""
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT CASE WHEN p.state='done' AND EXISTS (SELECT 1 FROM jobs j WHERE"
                " j.plan_id=p.id AND j.error=?) THEN 'adopted' ELSE p.state END AS s,"
                " COUNT(*) AS n FROM plans p GROUP BY s",
                (ADOPTED_NOTE,),
            ).fetchall()
        return {r["s"]: r["n"] for r in rows}

    def ignored(self, limit: int = 100) -> tuple[list[IgnoredInput], int]:
        """Inputs whose latest version was ignored (``seen`` rows intake wrote as ``ignored:
        <reason>``: no rule matched, a name that cannot be a key), latest first, and how
        many there are in all. A file ignored and then matched or replaced is not counted:
        ``seen`` keeps one row per key."""
        with self._store.lock:
            db = self._store.db
            total: int = db.execute(
                "SELECT COUNT(*) AS n FROM seen WHERE outcome LIKE 'ignored%'"
            ).fetchone()["n"]
            rows = db.execute(
                "SELECT source, key, size, outcome, at FROM seen WHERE outcome LIKE 'ignored%'"
                " ORDER BY at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [IgnoredInput.from_row(r) for r in rows], total


@dataclass(frozen=True)
class IgnoredInput:
    """One input that no rule took, with intake's reason (``darkroom match FILE`` explains)."""

    source: str
    key: str
    size: int
    reason: str
    at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> IgnoredInput:
        reason = str(row["outcome"]).removeprefix("ignored").lstrip(": ") or "ignored"
        return cls(row["source"], row["key"], row["size"], reason, row["at"])
