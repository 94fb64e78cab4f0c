"""Settlement: telling a source that an arrival is fully handled, so queue-backed ones can ack.

An arrival can start several plans (one per matching rule), and a duplicate delivery can
arrive while the first one's plans still run. Each arrival is settled exactly once: when
every plan it is waiting on has finished (:meth:`Settlement.plan_finished`, a hook the
runner calls), or at once when nothing needed doing. The outcome passed to
``Source.settle`` is the worst of its plans' (``done`` < ``partial`` < ``failed``), or
``ignored`` / ``duplicate``. The map lives in memory on purpose: after a restart an
unsettled SQS message simply becomes visible again, is seen as a duplicate and settles then.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import structlog

from daemon.hooks import Hooks
from daemon.sources.base import Source
from daemon.types import Arrival, PlanState

log = structlog.get_logger("darkroom.settlement")

__all__ = ["Settlement"]

# How bad a plan's end is for its arrival; the worst one is what the source hears.
_RANK: dict[str, int] = {PlanState.DONE: 0, PlanState.PARTIAL: 1, PlanState.FAILED: 2}


def _rank(outcome: str) -> int:
    return _RANK.get(str(outcome), 0)


class Settlement(Hooks):
    """Which arrivals wait on which plans; settles each arrival once its plans are finished."""

    def __init__(self, sources: Mapping[str, Source], plan_state: Callable[[str], PlanState]):
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
        open_plans = {pid for pid in plan_ids if self.plan_state(pid) == PlanState.ACTIVE}
        if not open_plans:
            states = {str(self.plan_state(pid)) for pid in plan_ids}
            if states <= {PlanState.DONE.value}:
                self._settle(arrival, "duplicate")
            else:
                self._settle(arrival, max(states, key=_rank))
            return
        with self._lock:
            self._pending[arrival] = open_plans
            self._outcome[arrival] = PlanState.DONE.value
            for pid in open_plans:
                self._by_plan.setdefault(pid, []).append(arrival)

    def plan_finished(self, plan_id: str, status: PlanState) -> None:
        ready = []
        with self._lock:
            for arrival in self._by_plan.pop(plan_id, []):
                waiting = self._pending.get(arrival)
                if waiting is None:
                    continue
                waiting.discard(plan_id)
                if _rank(status) > _rank(self._outcome[arrival]):
                    self._outcome[arrival] = str(status)
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
