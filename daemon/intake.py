"""Intake: turns arrivals from the sources into plans in the ledger.

Sources call ``emit`` from their own threads; it only enqueues. One intake thread reads
each arrival, hashes it, matches the rules and submits a plan per matching rule. The
ledger makes this idempotent, so duplicate events and rescans cost a lookup, not a job.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from daemon.errors import DarkroomError
from daemon.jobs import Arrival
from daemon.ledger import Ledger
from daemon.rules import RuleSet, plan_for
from daemon.settlement import Settlement

log = structlog.get_logger("darkroom.intake")


class Intake:
    def __init__(self, ledger: Ledger, rules: Callable[[], RuleSet], sources: Mapping[str, Any],
                 on_submit: Callable[[], None], *, any_source: bool = False,
                 settlement: Settlement | None = None):
        self.ledger = ledger
        self.settlement = settlement
        self.rules = rules  # a callable, so a reload swaps the rule set atomically
        self.sources = sources
        self.on_submit = on_submit
        self.any_source = any_source
        self.queue: queue.Queue[Arrival | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def emit(self, arrival: Arrival) -> None:
        self.queue.put(arrival)

    def known_for(self, source: str) -> Callable[..., bool]:
        def known(key: str, size: int, mtime_ns: int, etag: str | None = None) -> bool:
            return self.ledger.is_seen(source, key, size, mtime_ns, etag)

        return known

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="darkroom-intake", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.queue.put(None)
        if self._thread:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            arrival = self.queue.get()
            if arrival is None:
                return
            try:
                plan_ids = self.handle(arrival)
            except Exception:  # one bad arrival must never stop intake
                log.exception("intake failed", source=arrival.source, key=arrival.key)
                continue
            if plan_ids is not None and self.settlement is not None:
                self.settlement.track(arrival, plan_ids)

    def handle(self, arrival: Arrival) -> list[str] | None:
        """Submit plans for ``arrival``; returns the plan ids (new or existing), or None
        when it could not be read (not settled: a redelivery or rescan tries again)."""
        bound = log.bind(source=arrival.source, key=arrival.key)
        matching = self.rules().matching(arrival, any_source=self.any_source)
        if not matching:
            self.ledger.mark_seen(arrival.source, arrival.key, arrival.size, arrival.mtime_ns, None,
                                  "ignored: no rule matches", arrival.etag)
            bound.info("no rule matches; ignored")
            return []
        try:
            data = self.sources[arrival.source].read(arrival.key, arrival.etag)
        except DarkroomError as exc:
            # Not marked seen: the next rescan tries again.
            bound.warning("cannot read arrival", reason=str(exc))
            return None
        sha = hashlib.sha256(data).hexdigest()
        plan_ids = []
        for rule in matching:
            try:
                plan = plan_for(rule, arrival, sha)
            except DarkroomError as exc:
                bound.error("cannot plan", rule=rule.name, reason=str(exc))
                continue
            pid, created = self.ledger.submit(plan)
            plan_ids.append(pid)
            if created:
                bound.info("queued", rule=rule.name, plan=pid, steps=len(plan["steps"]), sha256=sha[:12])
            else:
                bound.info("already handled; not queued again", rule=rule.name, plan=pid)
        self.ledger.mark_seen(arrival.source, arrival.key, arrival.size, arrival.mtime_ns, sha, "submitted", arrival.etag)
        self.on_submit()
        return plan_ids
