"""Tells sources when an arrival is fully handled, so queue-backed ones can acknowledge.

An arrival can start several plans (one per matching rule), and a duplicate delivery can
arrive while the first one's plans still run. Each arrival is settled exactly once: when
every plan it is waiting on has finished, or at once when nothing needed doing. The map
lives in memory on purpose: after a restart an unsettled SQS message simply becomes
visible again, is seen as a duplicate and settles then.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from daemon.types import Arrival

log = structlog.get_logger("darkroom.settlement")

_RANK = {"done": 0, "partial": 1, "failed": 2}


class Settlement:
    def __init__(self, sources: Mapping[str, Any], plan_state: Callable[[str], str]):
        self.sources = sources
        self.plan_state = plan_state
        self._lock = threading.Lock()
        self._pending: dict[Arrival, set[str]] = {}
        self._outcome: dict[Arrival, str] = {}
        self._by_plan: dict[str, list[Arrival]] = {}

    def track(self, arrival: Arrival, plan_ids: list[str]) -> None:
        """Register an arrival after intake; settles at once if nothing is left to wait for."""
        if not plan_ids:
            self._settle(arrival, "ignored")
            return
        open_plans = {pid for pid in plan_ids if self.plan_state(pid) == "active"}
        if not open_plans:
            states = {self.plan_state(pid) for pid in plan_ids}
            self._settle(
                arrival,
                "duplicate" if states <= {"done"} else max(states, key=lambda s: _RANK.get(s, 0)),
            )
            return
        with self._lock:
            self._pending[arrival] = open_plans
            self._outcome[arrival] = "done"
            for pid in open_plans:
                self._by_plan.setdefault(pid, []).append(arrival)

    def plan_done(self, plan_id: str, status: str) -> None:
        ready = []
        with self._lock:
            for arrival in self._by_plan.pop(plan_id, []):
                waiting = self._pending.get(arrival)
                if waiting is None:
                    continue
                waiting.discard(plan_id)
                if _RANK.get(status, 0) > _RANK.get(self._outcome[arrival], 0):
                    self._outcome[arrival] = status
                if not waiting:
                    del self._pending[arrival]
                    ready.append((arrival, self._outcome.pop(arrival)))
        for arrival, outcome in ready:
            self._settle(arrival, outcome)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _settle(self, arrival: Arrival, outcome: str) -> None:
        source = self.sources.get(arrival.source)
        if source is None:
            return
        try:
            source.settle(arrival, outcome)
        except Exception:  # acknowledging is best effort: a redelivery is deduplicated
            log.exception("settle failed", source=arrival.source, key=arrival.key, outcome=outcome)
