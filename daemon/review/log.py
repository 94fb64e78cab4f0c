"""The decision log: every review decision, in the ledger's database, and an outbox for them.

Each decision (from ``darkroom review`` or the review server) is a row in the ``decisions``
table of the state folder's ``ledger.sqlite``, next to the plans and jobs it is about. The
running daemon takes rows nobody has handled yet (``pending``), tells its hooks (webhooks,
metrics, decision-triggered rules) and marks them handled, so a decision made from the CLI
while the daemon is down is still announced once when it runs again.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from daemon.review.decisions import Action, Decided

__all__ = ["DecisionLog", "DecisionRow"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    by TEXT NOT NULL,
    sink TEXT NOT NULL,
    manifest TEXT NOT NULL,
    output TEXT NOT NULL,
    action TEXT NOT NULL,
    decision TEXT,
    starred INTEGER,
    note TEXT,
    rule TEXT NOT NULL,
    source_key TEXT NOT NULL,
    approved_copy TEXT,
    handled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS decisions_pending ON decisions (handled, id);
"""


@dataclass(frozen=True)
class DecisionRow:
    """One recorded decision, as the log holds it."""

    id: int
    at: str
    by: str
    sink: str
    manifest: str
    output: str
    action: Action
    decision: str | None
    starred: bool | None
    note: str | None
    rule: str
    source_key: str
    approved_copy: str | None
    handled: bool


class DecisionLog:
    """The ``decisions`` table of a ledger database (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(self, sink: str, decided: Iterable[Decided]) -> list[int]:
        """Store each decision; returns their ids."""
        ids = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for d in decided:
                    cursor = self._db.execute(
                        "INSERT INTO decisions (at, by, sink, manifest, output, action, decision,"
                        " starred, note, rule, source_key, approved_copy)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            d.decision.at or "",
                            d.decision.by or "",
                            sink,
                            d.manifest_path,
                            d.output_path,
                            d.action.value,
                            d.decision.decision,
                            None if d.decision.starred is None else int(d.decision.starred),
                            d.decision.note,
                            d.rule,
                            d.source_key,
                            d.approved_copy,
                        ),
                    )
                    ids.append(int(cursor.lastrowid or 0))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ids

    def pending(self, limit: int = 100) -> list[DecisionRow]:
        """Decisions the daemon has not announced yet, oldest first."""
        return self._select("WHERE handled = 0 ORDER BY id LIMIT ?", (limit,))

    def mark_handled(self, ids: Iterable[int]) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE decisions SET handled = 1 WHERE id = ?", [(i,) for i in ids]
            )

    def history(self, manifest: str | None = None, limit: int = 1000) -> list[DecisionRow]:
        """Recorded decisions, newest first (of one manifest when given)."""
        if manifest is None:
            return self._select("ORDER BY id DESC LIMIT ?", (limit,))
        return self._select("WHERE manifest = ? ORDER BY id DESC LIMIT ?", (manifest, limit))

    def _select(self, tail: str, args: tuple[object, ...]) -> list[DecisionRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, at, by, sink, manifest, output, action, decision, starred, note,"
                f" rule, source_key, approved_copy, handled FROM decisions {tail}",
                args,
            ).fetchall()
        return [
            DecisionRow(
                id=r[0],
                at=r[1],
                by=r[2],
                sink=r[3],
                manifest=r[4],
                output=r[5],
                action=Action(r[6]),
                decision=r[7],
                starred=None if r[8] is None else bool(r[8]),
                note=r[9],
                rule=r[10],
                source_key=r[11],
                approved_copy=r[12],
                handled=bool(r[13]),
            )
            for r in rows
        ]
