"""Intake: turns arrivals from the sources into plans in the ledger.

Sources call ``emit`` from their own threads; it only enqueues. The intake thread
(``darkroom-intake``) decides each arrival with a :class:`~daemon.intake.decider.Decider`:
the key against the rules, the bytes read once, their facts, the rules that take them, one
``Plan`` per rule. Deciding writes nothing (what is not planned is recorded with its reason
by :mod:`daemon.intake.refusals`). A burst is decided in a second process
(:mod:`daemon.intake.decide_process`), on another core, with the same decider; what it
cannot decide alone comes back and is decided here.

A second thread (:mod:`daemon.intake.writer`) writes every decision ready so far in one
transaction (:meth:`Ledger.batch`: one commit for the group, each arrival's plans and
``seen`` row atomic on their own), and logs and settles them. While a group commits the next
is decided, so a burst of 10,000 becomes a few hundred commits instead of 20,000, and a lone
arrival is written at once (no waiting to fill a group).

The ledger makes this idempotent, so duplicate events and rescans cost a lookup, not a job.
When a queue-backed source must be told an arrival is fully handled, intake hands the plan
ids to :class:`~daemon.intake.settlement.Settlement`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from daemon.intake.decide_process import (
    CHUNK_ARRIVALS,
    IN_FLIGHT,
    Decided,
    DecideProcess,
    replay,
)
from daemon.intake.decider import Decider
from daemon.intake.decisions import Decision
from daemon.intake.refusals import unnameable
from daemon.intake.writer import GROUP_MAX, STOP, DecisionWriter
from daemon.queue.ledger import Ledger
from daemon.rules.match import RuleSet
from daemon.rules.sidecars import is_sidecar
from daemon.types import Arrival

if TYPE_CHECKING:
    from daemon.config.settings import LimitsConfig
    from daemon.intake.decide_process import Outcome
    from daemon.intake.settlement import Settlement
    from daemon.sources.base import Known, Source

log = structlog.get_logger("darkroom.intake")

# The longest the decide thread works on a chunk before handing it to the writer: bounds
# the latency a burst adds to each arrival's write.
CHUNK_S = 0.05


class Intake:
    """Arrivals in, decisions out: decides on its own thread (or has a second process
    decide a burst), writes through the writer's."""

    def __init__(
        self,
        ledger: Ledger,
        rules: Callable[[], RuleSet],
        sources: Mapping[str, Source],
        on_submit: Callable[[], None],
        *,
        any_source: bool = False,
        settlement: Settlement | None = None,
        rules_dir: Path = Path("."),
        reference_dirs: Mapping[str, Path] | None = None,
        limits: LimitsConfig | None = None,
        decide_process: DecideProcess | None = None,
    ):
        self.ledger = ledger
        self.rules = rules  # a callable, so a reload swaps the rule set atomically
        self.sources = sources
        self.on_submit = on_submit
        self.settlement = settlement
        self.decider = Decider(
            ledger,
            rules,
            sources,
            any_source=any_source,
            rules_dir=rules_dir,
            reference_dirs=reference_dirs,
            limits=limits,
        )
        self.decide_process = decide_process
        self.queue: queue.Queue[Arrival | None] = queue.Queue()
        self._decided: queue.Queue[list[Decision] | object] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._writer = DecisionWriter(ledger, sources, on_submit, settlement)

    def emit(self, arrival: Arrival) -> None:
        self.queue.put(arrival)

    def known_for(self, source: str) -> Known:
        """The ``known`` callback for ``source``: was this version of a key handled already?"""

        def known(key: str, size: int, mtime_ns: int, etag: str | None = None) -> bool:
            if unnameable(key):  # handled (recorded and skipped) by the decider, each time
                return False
            return self.ledger.is_seen(source, key, size, mtime_ns, etag)

        return known

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._decide_loop, name="darkroom-intake", daemon=True),
            threading.Thread(
                target=self._writer.run,
                args=(self._decided,),
                name="darkroom-intake-write",
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Decide and write what is queued, then stop (the marker follows the last arrival)."""
        self.queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.decide_process is not None:
            self.decide_process.close(max(0.5, deadline - time.monotonic()))

    def _decide_loop(self) -> None:
        """Takes arrivals until the stop marker; each run of them is decided here or, once a
        burst has started the second process, there."""
        stop = False
        while not stop:
            arrival = self.queue.get()
            if arrival is None:
                break
            helper = self.decide_process
            backlog = self.queue.qsize() + 1
            if (
                helper is not None
                and helper.usable(backlog)
                and backlog >= helper.elsewhere_backlog
            ):
                stop = self._decide_elsewhere(arrival, helper)
            else:
                stop = self._decide_here(arrival)
        self._decided.put(STOP)

    def _decide_here(self, arrival: Arrival | None) -> bool:
        """Decides ``arrival`` and those waiting after it, handing the decisions to the
        writer in one chunk: every decision made while more arrivals were waiting, for at
        most ``CHUNK_S`` (a lone arrival goes on at once). One hand-off per chunk rather
        than per arrival: each one wakes the writer, and a thread switch per file costs
        more than the file. True when the stop marker was taken."""
        chunk: list[Decision] = []
        started = time.monotonic()
        helper = self.decide_process
        while arrival is not None:
            self._decide_into(chunk, arrival)
            if len(chunk) >= GROUP_MAX or time.monotonic() - started > CHUNK_S:
                break
            if self._backlog_for(helper):
                break  # a burst began: the second process takes it
            try:
                arrival = self.queue.get_nowait()
            except queue.Empty:
                break
        if chunk:
            self._decided.put(chunk)
        return arrival is None

    def _decide_elsewhere(self, first: Arrival, helper: DecideProcess) -> bool:
        """Has the second process decide ``first`` and the arrivals queued behind it, two
        chunks in flight, until none are waiting (a burst's arrivals come in waves, as the
        folder's gate finds them complete: a lull of a chunk is no reason to come back); each
        chunk's decisions go to the writer in order. True when the stop marker was taken. If
        the process dies, what it held is decided here."""
        held: deque[list[Arrival]] = deque()
        waiting, stop = [first], False
        while True:
            while len(held) < IN_FLIGHT and not stop:
                chunk, stop = self._take(waiting, CHUNK_ARRIVALS)
                waiting = []
                if not chunk:
                    break
                held.append(chunk)
                if not helper.send(chunk, self.rules()):
                    self._decide_held_here(held)
                    return stop
            if not held:
                return stop
            chunk = held.popleft()
            outcomes = helper.receive()
            if outcomes is None:
                held.appendleft(chunk)
                self._decide_held_here(held)
                return stop
            self._decided.put(self._received(chunk, outcomes))

    def _backlog_for(self, helper: DecideProcess | None) -> bool:
        """Whether the arrivals waiting are a backlog for the (ready) second process."""
        return (
            helper is not None and helper.ready and self.queue.qsize() >= helper.elsewhere_backlog
        )

    def _take(self, chunk: list[Arrival], limit: int) -> tuple[list[Arrival], bool]:
        """``chunk`` and the arrivals waiting, up to ``limit``; and whether the stop
        marker was taken (it ends the chunk)."""
        while len(chunk) < limit:
            try:
                arrival = self.queue.get_nowait()
            except queue.Empty:
                break
            if arrival is None:
                return chunk, True
            chunk.append(arrival)
        return chunk, False

    def _received(self, chunk: list[Arrival], outcomes: list[Outcome]) -> list[Decision]:
        """The decisions for ``chunk``: the second process's, its log lines logged here,
        and here those it sent back."""
        decisions: list[Decision] = []
        for arrival, outcome in zip(chunk, outcomes, strict=True):
            if not isinstance(outcome, Decided):
                self._decide_into(decisions, arrival)
                continue
            replay(outcome.lines)
            if is_sidecar(arrival.key):  # as the decider there did, for its folder listing
                self.decider.listings.forget(arrival.source, arrival.key)
            decisions.append(outcome.decision)
        return decisions

    def _decide_held_here(self, held: deque[list[Arrival]]) -> None:
        """The chunks a dead second process held, decided here, in order."""
        for chunk in held:
            decisions: list[Decision] = []
            for arrival in chunk:
                self._decide_into(decisions, arrival)
            self._decided.put(decisions)

    def _decide_into(self, decisions: list[Decision], arrival: Arrival) -> None:
        try:
            decisions.append(self.decider.decide(arrival))
        except Exception:  # one bad arrival must never stop intake
            log.exception("intake failed", source=arrival.source, key=arrival.key)
        if self.decide_process is not None and is_sidecar(arrival.key):
            self.decide_process.listing_stale(arrival.source, arrival.key)

    def _decide(self, arrival: Arrival) -> Decision:
        return self.decider.decide(arrival)

    def handle_many(self, arrivals: list[Arrival]) -> list[list[str] | None]:
        """``handle`` for many arrivals, written in one transaction (one commit); per
        arrival its plan ids, or None when it was not read or could not be written."""
        group = [self._decide(arrival) for arrival in arrivals]
        self._writer.write(group)
        reports = [self._writer.report(decision) for decision in group]
        if any(d is not None and d.error is None and d.plans for d in group):
            self.on_submit()
        return [None if report is None else report[1] for report in reports]

    def handle(self, arrival: Arrival) -> list[str] | None:
        """Submit plans for ``arrival``; returns the plan ids (new or existing), or None
        when it could not be read (then it is not settled: a redelivery or rescan tries
        again). Raises what writing it to the ledger raised."""
        decision = self._decide(arrival)
        self._writer.write([decision])
        if decision is not None and decision.error is not None:
            raise decision.error
        report = self._writer.report(decision)
        if decision is not None and decision.plans:
            self.on_submit()
        return None if report is None else report[1]
