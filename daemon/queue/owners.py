"""Output ownership in the ledger (table ``owners``): which asset owns each output folder
of each sink, and where a plan goes when another asset owns the folder it asks for.

A plan whose folder belongs to another asset is placed beside it at submission
(:mod:`daemon.outputs.placement`); nothing ever writes into another asset's folder.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import structlog

from daemon.errors import OutputError
from daemon.outputs import placement
from daemon.queue.bulk import insert_rows
from daemon.queue.store import Store
from daemon.types import Plan

log = structlog.get_logger("darkroom.ledger")

__all__ = ["Owners"]


class Owners:
    def __init__(self, store: Store):
        self._store = store

    @staticmethod
    def record(db: sqlite3.Connection, rows: Sequence[tuple[str, str, str, str, float]]) -> None:
        """Record owners: (sink, folder, source, key, at) each, in multi-row statements."""
        insert_rows(db, "INSERT INTO owners (sink, folder, source, key, at)", rows)

    def place(self, db: sqlite3.Connection, plan: Plan, now: float) -> Plan:
        """Record the asset as the owner of the output folder its plan asks for, or — when
        another asset owns it — place the plan in a deterministic alternative beside it."""
        source, key = plan.arrival.source, plan.arrival.key
        target = placement.owned_folder(plan.manifest)
        owner = (source, key)
        for attempt in range(100):
            row = db.execute(
                "SELECT source, key FROM owners WHERE sink=? AND folder=?", (plan.sink, target)
            ).fetchone()
            if row is None:
                self.record(db, [(plan.sink, target, source, key, now)])
                break
            if (row["source"], row["key"]) == (source, key):
                break
            if attempt == 0:
                owner = (row["source"], row["key"])
            target = placement.alternative(plan.manifest, source, key, attempt)
        else:  # pragma: no cover - takes 100 hash collisions
            raise OutputError(f"no free output folder next to {plan.manifest} for {source}:{key}")
        if target == placement.owned_folder(plan.manifest):
            return plan
        placed = placement.place(plan, target, owner)
        log.warning(
            "output folder belongs to another input; placed beside it",
            source=source,
            key=key,
            requested=placed.placed.requested if placed.placed else None,
            folder=target,
        )
        return placed

    def owner_of(self, sink: str, folder: str) -> tuple[str, str] | None:
        """The asset (source, key) that owns ``folder`` of ``sink``, if any."""
        with self._store.lock:
            row = self._store.db.execute(
                "SELECT source, key FROM owners WHERE sink=? AND folder=?", (sink, folder)
            ).fetchone()
        return (row["source"], row["key"]) if row else None
