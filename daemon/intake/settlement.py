"""Settlement: telling a source that an arrival is fully handled, so queue-backed ones can ack.

An arrival can start several plans (one per matching rule), and a duplicate delivery can
arrive while the first one's plans still run. Each arrival is settled exactly once: when
every plan it is waiting on has finished (:meth:`Settlement.plan_finished`, a hook the
runner calls), or at once when nothing needed doing. The outcome passed to
``Source.settle`` is the worst of its plans' (``done`` < ``partial`` < ``failed``), or
``ignored`` / ``duplicate``. The map lives in memory on purpose: after a restart an
unsettled SQS message simply becomes visible again, is seen as a duplicate and settles then.

Telling the source is a network call (an SQS ``DeleteMessage``) that can hang on a dead
endpoint for its timeouts and retries; in the daemon it runs on a thread of its own
(:class:`SettleThread`), so the runner that finished a plan and intake's writer never wait
for it.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Mapping

import structlog

from daemon.hooks import Hooks
from daemon.sources.base import Source
from daemon.types import Arrival, PlanState

log = structlog.get_logger("darkroom.settlement")

__all__ = ["SettleThread", "Settlement"]

Call = Callable[[], None]

# How bad a plan's end is for its arrival; the worst one is what the source hears.
_RANK: dict[str, int] = {PlanState.DONE: 0, PlanState.PARTIAL: 1, PlanState.FAILED: 2}


def _rank(outcome: str) -> int:
    return _RANK.get(str(outcome), 0)


def _is_told(source: Source | None) -> bool:
    """Whether ``source`` wants to hear how its arrivals ended (it overrides ``settle``)."""
    return source is not None and type(source).settle is not Source.settle


class Settlement(Hooks):
    """Which arrivals wait on which plans; settles each arrival once its plans are finished."""

    def __init__(
        self,
        sources: Mapping[str, Source],
        plan_state: Callable[[str], PlanState],
        plan_states: Callable[[list[str]], Mapping[str, PlanState]] | None = None,
        run: Callable[[Call], None] | None = None,
    ):
        self.sources = sources
        # Where each source.settle call runs: at once (tests, one-shot runs) or handed to
        # a SettleThread (the daemon).
        self.run = run or (lambda call: call())
        self.plan_state = plan_state
        # Many plans' states in one query (the ledger's ``plan_states``): intake tracks a
        # whole group of arrivals at once, and one query per plan was 7.5 % of a burst.
        self.plan_states = plan_states or (lambda ids: {pid: plan_state(pid) for pid in ids})
        self._lock = threading.Lock()
        self._pending: dict[Arrival, set[str]] = {}
        self._outcome: dict[Arrival, str] = {}
        self._by_plan: dict[str, list[Arrival]] = {}

    def track(self, arrival: Arrival, plan_ids: list[str]) -> None:
        """Register an arrival after intake; settles at once if nothing is left to wait for."""
        self.track_many([(arrival, plan_ids)])

    def track_many(self, arrivals: list[tuple[Arrival, list[str]]]) -> None:
        """``track`` for each (arrival, plan ids), asking for all their plans' states at once.
        Arrivals from sources that are never told (folders: ``settle`` is the base no-op)
        are not tracked at all."""
        arrivals = [(a, ids) for a, ids in arrivals if _is_told(self.sources.get(a.source))]
        wanted = sorted({pid for _, plan_ids in arrivals for pid in plan_ids})
        known = self.plan_states(wanted) if wanted else {}
        for arrival, plan_ids in arrivals:
            # A plan the ledger no longer has (pruned) is over: it counts as done.
            self._track(arrival, {pid: known.get(pid, PlanState.DONE) for pid in plan_ids})

    def _track(self, arrival: Arrival, states_of: Mapping[str, PlanState]) -> None:
        if not states_of:
            self._settle(arrival, "ignored")
            return
        open_plans = {pid for pid, state in states_of.items() if state == PlanState.ACTIVE}
        if not open_plans:
            states = {str(state) for state in states_of.values()}
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
        self.run(functools.partial(self._tell, arrival, outcome))

    def _tell(self, arrival: Arrival, outcome: str) -> None:
        source = self.sources.get(arrival.source)
        if source is None:
            return
        try:
            source.settle(arrival, outcome)
        except Exception:  # acknowledging is best effort: a redelivery is deduplicated
            log.exception("settle failed", source=arrival.source, key=arrival.key, outcome=outcome)


class SettleThread:
    """Runs settle calls in order on one daemon thread (``darkroom-settle``), started on the
    first call. A call stuck on the network holds up only the ones after it; what has not
    run when the daemon stops is not lost: the source's unsettled messages come back and
    settle as duplicates."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __call__(self, call: Call) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="darkroom-settle", daemon=True
                )
                self._thread.start()
        self._calls.put(call)

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            try:
                call()
            except Exception:  # one failed call must never stop the others
                log.exception("settle call failed")

    def stop(self, timeout: float) -> bool:
        """Run what is queued for up to ``timeout`` s, then stop; False when a call was still
        running (left behind: it is a daemon thread)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return True
        self._calls.put(None)
        thread.join(max(0.0, timeout))
        return not thread.is_alive()
