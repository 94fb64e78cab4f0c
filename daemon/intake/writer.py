"""Intake's writer: each group of decisions written in one ledger transaction, then reported.

The decide thread (:class:`~daemon.intake.intake.Intake`) hands over chunks of decisions; the
writer (the ``darkroom-intake-write`` thread) writes every decision ready so far in one
transaction (:meth:`Ledger.batch`: one commit and one fsync for the group, its plans, jobs,
owners and ``seen`` rows in a few multi-row statements; each arrival on a savepoint of its
own only when the group must be written again to find the one that fails), then logs each,
wakes the runner, settles queue-backed arrivals, and moves a duplicate of an input already
processed beside the first.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

import structlog

from daemon.errors import DarkroomError
from daemon.intake.decisions import ArrivalDecision, Decision, SeenRow
from daemon.queue.arrivals import SeenVersion
from daemon.queue.ledger import Ledger
from daemon.types import Arrival, Plan, PlanState

if TYPE_CHECKING:
    from daemon.intake.settlement import Settlement
    from daemon.sources.base import Source

log = structlog.get_logger("darkroom.intake")

# The most arrivals written in one transaction (a burst's groups are otherwise as large as
# what was decided while the previous group committed).
GROUP_MAX = 1000
STOP = object()  # after the last decision: the writer stops


class DecisionWriter:
    """Writes intake's decisions to the ledger and reports them (the writing thread)."""

    def __init__(
        self,
        ledger: Ledger,
        sources: Mapping[str, Source],
        on_submit: Callable[[], None],
        settlement: Settlement | None,
    ):
        self.ledger = ledger
        self.sources = sources
        self.on_submit = on_submit
        self.settlement = settlement

    def run(self, decided: queue.Queue[list[Decision] | object]) -> None:
        """Writes every decision ready so far in one transaction, and again. While one group
        commits, the decide thread prepares the next: a burst forms large groups by
        itself, and a lone arrival is written at once."""
        while True:
            group: list[Decision] = []
            item = decided.get()
            stop = item is STOP
            while not stop:
                group += cast(list[Decision], item)
                if len(group) >= GROUP_MAX:
                    break
                try:
                    item = decided.get_nowait()
                except queue.Empty:
                    break
                stop = item is STOP
            try:
                self.write_group(group)
            except Exception:  # one bad group must never stop intake
                log.exception("intake failed", arrivals=len(group))
            if stop:
                return

    def write_group(self, group: list[Decision]) -> None:
        """Write ``group``, report each decision, wake the runner, settle what was written."""
        if not group:
            return
        self.write(group)
        # Bound once per group: a module logger binds again on every call (a sixth of a
        # line's cost), and a burst logs a line per file.
        logger = log.bind()
        reports = [self.report(decision, logger) for decision in group]
        if any(d is not None and d.error is None and d.plans for d in group):
            self.on_submit()
        if self.settlement is not None:
            self.settlement.track_many([r for r in reports if r is not None])

    def write(self, group: list[Decision]) -> None:
        """Submit every decision's plans and write its ``seen`` rows, in one transaction.
        First all or nothing (no savepoint per write: six statements fewer per arrival);
        should anything fail, the group is written again with each decision on its own
        savepoint, so the one that fails leaves the others written."""
        decisions = [d for d in group if d is not None and (d.plans or d.seen)]
        if not decisions:
            return
        ledger = self.ledger
        try:
            # Not fsync'd: after a power loss the files are found again (startup scan,
            # listing, redelivery) and submitted again; a job's end is always durable.
            with ledger.batch(durable=False, savepoints=False):
                results = iter(ledger.submit_group([p for d in decisions for p in d.plans]))
                for decision in decisions:
                    decision.results = [next(results) for _ in decision.plans]
                ledger.mark_seen_many([_seen_version(seen) for d in decisions for seen in d.seen])
            return
        except Exception:  # rolled back: find the one that fails, keep the others
            for decision in decisions:
                decision.results = []
        try:
            with ledger.batch(durable=False):
                for decision in decisions:
                    try:
                        with ledger.batch():
                            self._write_one(decision)
                    except Exception as exc:
                        decision.results, decision.error = [], exc
        except Exception as exc:  # the commit itself failed: nothing of the group was kept
            for decision in decisions:
                decision.results, decision.error = [], exc

    def _write_one(self, decision: ArrivalDecision) -> None:
        ledger = self.ledger
        decision.results = [ledger.submit(plan) for plan in decision.plans]
        ledger.mark_seen_many([_seen_version(seen) for seen in decision.seen])

    def report(
        self, decision: Decision, logger: structlog.typing.FilteringBoundLogger = log
    ) -> tuple[Arrival, list[str]] | None:
        """Log what was written for ``decision``; its (arrival, plan ids), or None when it
        was not read or not written (not settled: a redelivery or rescan tries again)."""
        if decision is None:
            return None
        arrival = decision.arrival
        if decision.error is not None:
            logger.error(
                "intake failed; the file is tried again at the next rescan or redelivery",
                source=arrival.source,
                key=arrival.key,
                error=repr(decision.error),
            )
            return None
        plan_ids: list[str] = []
        for plan, (plan_id, created) in zip(decision.plans, decision.results, strict=True):
            where = {"source": plan.arrival.source, "key": plan.arrival.key, "rule": plan.rule}
            if created:
                logger.info(
                    "queued",
                    **where,
                    plan=plan_id,
                    jobs=len(plan.units),
                    sha256=plan.sha256[:12],
                    sidecar=plan.sidecar.key if plan.sidecar else None,
                    error=plan.error,
                )
            else:
                logger.info("already handled; not queued again", **where, plan=plan_id)
            plan_ids.append(plan_id)
        if decision.plans and not any(created for _, created in decision.results):
            self._move_if_processed(decision.plans, plan_ids)
        return arrival, plan_ids

    def _move_if_processed(self, plans: list[Plan], plan_ids: list[str]) -> None:
        """The same bytes dropped again at a path whose plans all ended, one of them done with
        ``on_success: move``: they are never run again (same asset, same version), and this
        copy goes beside the first in the processed folder (a free name, never over it),
        so the drop folder does not keep a file nothing will ever take."""
        movers = [i for i, plan in enumerate(plans) if plan.on_success == "move"]
        if not movers:
            return
        states = self.ledger.plan_states(plan_ids)
        if any(state == PlanState.ACTIVE for state in states.values()):
            return  # its finalizer moves it
        done = [i for i in movers if states.get(plan_ids[i]) == PlanState.DONE]
        if not done:
            return
        plan = plans[done[0]]
        arrival = plan.arrival
        source = self.sources[arrival.source]
        target = f"{plan.processed_dir.strip('/')}/{arrival.key}"
        try:
            moved = source.move(arrival.key, target, sha256=plan.sha256)
        except DarkroomError as exc:
            log.warning("cannot move an input already processed", key=arrival.key, reason=str(exc))
            return
        if moved:
            log.info(
                "already processed; moved beside the first copy",
                source=arrival.source,
                key=arrival.key,
                plan=plan_ids[done[0]],
            )


def _seen_version(seen: SeenRow) -> SeenVersion:
    a = seen.arrival
    return SeenVersion(a.source, a.key, a.size, a.mtime_ns, a.etag, seen.sha256, seen.outcome)
