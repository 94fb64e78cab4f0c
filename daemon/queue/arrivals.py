"""Arrival records in the ledger (tables ``seen`` and ``quarantine``): which version of
each source key was handled already, and which inputs were quarantined, where and why.

``seen`` holds the last (size, mtime or ETag) handled per source key, so rescans skip known
files without reading them; it is asked on its own reader connection (:class:`Store`).
A quarantine that moved the file off its key forgets the key's ``seen`` row, so the file is
read again when an operator moves it back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

from daemon.queue.bulk import insert_rows
from daemon.queue.reruns import Reruns
from daemon.queue.store import Store
from daemon.types import Plan

__all__ = ["Arrivals", "SeenVersion"]


class SeenVersion(NamedTuple):
    """One ``seen`` row: the version of a source key that was handled, and how."""

    source: str
    key: str
    size: int
    mtime_ns: int
    etag: str | None
    sha256: str | None
    outcome: str


def _moved_away(location: str | None) -> bool:
    """Whether a quarantine moved the file off its key: a local path (folder sources).
    S3 and memory sources leave the object in place and give a URL for the reason record."""
    return location is not None and "://" not in location


class Arrivals:
    def __init__(self, store: Store, reruns: Reruns):
        self._store = store
        self._reruns = reruns

    # -- seen ------------------------------------------------------------------------

    def is_seen(
        self, source: str, key: str, size: int, mtime_ns: int, etag: str | None = None
    ) -> bool:
        """Whether this version of the object was handled: by ETag where the source has
        one (S3), else by size and modification time (folders). Reads what is committed."""
        with self._store.reader_lock:
            if etag:
                row = self._store.reader.execute(
                    "SELECT 1 FROM seen WHERE source=? AND key=? AND size=? AND etag=?",
                    (source, key, size, etag),
                ).fetchone()
            else:
                row = self._store.reader.execute(
                    "SELECT 1 FROM seen WHERE source=? AND key=? AND size=? AND mtime_ns=?",
                    (source, key, size, mtime_ns),
                ).fetchone()
        return row is not None

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
        self.mark_seen_many([SeenVersion(source, key, size, mtime_ns, etag, sha256, outcome)])

    def mark_seen_many(self, rows: Sequence[SeenVersion]) -> None:
        """``mark_seen`` for many versions, in multi-row statements (intake's writer)."""
        now = self._store.clock()
        with self._store.tx() as db:
            insert_rows(
                db,
                "INSERT OR REPLACE INTO seen (source, key, size, mtime_ns, etag, sha256, outcome, at)",
                [(*row, now) for row in rows],
            )

    def seen_since(
        self, since: float, sources: list[str]
    ) -> list[tuple[str, str, int, int, str | None]]:
        """Inputs (not sidecars) last seen at or after ``since`` from these sources."""
        marks = ",".join("?" * len(sources))
        with self._store.lock:
            rows = self._store.db.execute(
                f"SELECT source, key, size, mtime_ns, etag FROM seen WHERE at>=? AND source IN ({marks})"
                " AND outcome != 'sidecar' ORDER BY at",
                (since, *sources),
            ).fetchall()
        return [(r["source"], r["key"], r["size"], r["mtime_ns"], r["etag"]) for r in rows]

    # -- quarantine ------------------------------------------------------------------

    def record_quarantine(
        self, source: str, key: str, sha256: str, reason: str, location: str | None
    ) -> None:
        with self._store.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO quarantine (source, key, sha256, reason, location, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (source, key, sha256, reason, location, self._store.clock()),
            )
            if _moved_away(location):
                # The file left its key: if someone moves it back, it must be read again
                # (same size and mtime), not skipped as seen.
                db.execute("DELETE FROM seen WHERE source=? AND key=?", (source, key))

    def clear_quarantine(self, source: str, key: str, sha256: str) -> int:
        """These bytes were processed after all (a fixed sidecar re-admitted the image): they
        are no longer listed as quarantined. Returns how many records went."""
        with self._store.tx() as db:
            cur = db.execute(
                "DELETE FROM quarantine WHERE source=? AND key=? AND sha256=?",
                (source, key, sha256),
            )
        return cur.rowcount

    def readmit_moved_back(self, db: sqlite3.Connection, pid: str, plan: Plan, now: float) -> bool:
        """The file is back at its key after a quarantine moved it away: an operator moved
        it back to have it processed again, so its failed plan runs again (a new round)."""
        source, key = plan.arrival.source, plan.arrival.key
        moved_back = db.execute(
            "SELECT 1 FROM quarantine WHERE source=? AND key=? AND sha256=?"
            " AND location IS NOT NULL AND location NOT LIKE '%://%'",
            (source, key, plan.sha256),
        ).fetchone()
        if not moved_back or not self._reruns.readmit(db, pid, now):
            return False
        db.execute(
            "DELETE FROM quarantine WHERE source=? AND key=? AND sha256=?",
            (source, key, plan.sha256),
        )
        return True

    def requeue_quarantined(self, source: str, key: str, sha256: str | None = None) -> list[str]:
        """Re-admit a quarantined input (its file is back at ``key``): its failed plans run
        again as a new round and the quarantine record goes. Returns the plan ids re-run."""
        now = self._store.clock()
        rerun: list[str] = []
        with self._store.tx() as db:
            query = "SELECT id FROM plans WHERE source=? AND key=? AND state!='active'"
            args: list[str] = [source, key]
            if sha256:
                query += " AND sha256=?"
                args.append(sha256)
            for row in db.execute(query, args).fetchall():
                if self._reruns.readmit(db, row["id"], now):
                    rerun.append(row["id"])
            if sha256:
                db.execute(
                    "DELETE FROM quarantine WHERE source=? AND key=? AND sha256=?",
                    (source, key, sha256),
                )
            else:
                db.execute("DELETE FROM quarantine WHERE source=? AND key=?", (source, key))
            db.execute("DELETE FROM seen WHERE source=? AND key=?", (source, key))
        return rerun

    def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT * FROM quarantine ORDER BY at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [dict(r) for r in rows]

    def quarantined_count(self) -> int:
        with self._store.lock:
            n: int = self._store.db.execute("SELECT COUNT(*) AS n FROM quarantine").fetchone()["n"]
        return n

    def quarantined_by_source(self) -> dict[str, int]:
        """Quarantined inputs (versions) per source, for the metrics."""
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT source, COUNT(*) AS n FROM quarantine GROUP BY source"
            ).fetchall()
        return {r["source"]: r["n"] for r in rows}
