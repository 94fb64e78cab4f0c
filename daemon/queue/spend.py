"""Hosted-model spend from the ledger: the estimated cost (USD) of committed outputs, by
rule and local day (for budgets) and by rule and provider (for the metrics)."""

from __future__ import annotations

import json
import time

from daemon.queue.store import Store
from daemon.types import JobState

__all__ = ["Spend"]


class Spend:
    def __init__(self, store: Store):
        self._store = store

    def spend(self, since: float = 0.0) -> dict[tuple[str, str], float]:
        """Estimated hosted-model spend (USD) by (rule, local day) from committed outputs."""
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT rule, outputs, updated_at FROM jobs WHERE state=? AND updated_at>=?"
                " AND outputs LIKE '%\"cost\"%'",
                (JobState.DONE, since),
            ).fetchall()
        totals: dict[tuple[str, str], float] = {}
        for row in rows:
            day = time.strftime("%Y-%m-%d", time.localtime(row["updated_at"]))
            cost = sum(o.get("cost") or 0.0 for o in json.loads(row["outputs"] or "[]"))
            totals[(row["rule"], day)] = totals.get((row["rule"], day), 0.0) + cost
        return totals

    def spend_today(self, rule: str) -> float:
        today = time.strftime("%Y-%m-%d")
        midnight = time.mktime(time.strptime(today, "%Y-%m-%d"))
        return self.spend(midnight).get((rule, today), 0.0)

    def spend_by_provider(self, since: float = 0.0) -> dict[tuple[str, str], float]:
        """Estimated hosted-model spend (USD) by (rule, provider) of jobs done since ``since``
        (the provider is the output's ``provider``, else its model)."""
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT rule, outputs FROM jobs WHERE state=? AND updated_at>=?"
                " AND outputs LIKE '%\"cost\"%'",
                (JobState.DONE, since),
            ).fetchall()
        totals: dict[tuple[str, str], float] = {}
        for row in rows:
            for output in json.loads(row["outputs"] or "[]"):
                if output.get("cost") is None:
                    continue
                key = (row["rule"], str(output.get("provider") or output.get("model") or ""))
                totals[key] = totals.get(key, 0.0) + float(output["cost"])
        return totals
