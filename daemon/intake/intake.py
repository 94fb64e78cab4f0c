"""Intake: turns arrivals from the sources into plans in the ledger.

Sources call ``emit`` from their own threads; it only enqueues. One intake thread takes
each arrival through one direction of steps:

1. the key alone against the rules (most files are decided without reading a byte);
2. the bytes, read once, and the facts they give: hash, header, sidecar
   (:mod:`daemon.intake.facts`);
3. the rules that take the arrival, given those facts (:mod:`daemon.rules.match`);
4. the mask's hash and the references, only for the rules that use them;
5. one ``Plan`` per matching rule (:func:`daemon.rules.plan.plan_for`), submitted to the
   ledger.

The ledger makes this idempotent, so duplicate events and rescans cost a lookup, not a job.
When a queue-backed source must be told an arrival is fully handled, intake hands the plan
ids to :class:`~daemon.intake.settlement.Settlement`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from daemon.errors import DarkroomError, InputError
from daemon.intake.facts import InputFacts, examine, mask_sha256
from daemon.queue.ledger import Ledger
from daemon.rules.match import RuleSet
from daemon.rules.plan import plan_for
from daemon.rules.references import reference_files
from daemon.rules.schema import Rule
from daemon.rules.sidecars import image_keys, is_sidecar
from daemon.types import Arrival, Plan

if TYPE_CHECKING:
    from daemon.intake.settlement import Settlement
    from daemon.sources.base import Known, Source

log = structlog.get_logger("darkroom.intake")


class Intake:
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
    ):
        self.ledger = ledger
        self.rules = rules  # a callable, so a reload swaps the rule set atomically
        self.sources = sources
        self.on_submit = on_submit
        self.any_source = any_source  # one-shot runs: a rule takes files from any source
        self.settlement = settlement
        self.rules_dir = rules_dir
        self.reference_dirs = dict(reference_dirs or {})
        self.queue: queue.Queue[Arrival | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def emit(self, arrival: Arrival) -> None:
        self.queue.put(arrival)

    def known_for(self, source: str) -> Known:
        """The ``known`` callback for ``source``: was this version of a key handled already?"""

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
        when it could not be read (then it is not settled: a redelivery or rescan tries
        again)."""
        if is_sidecar(arrival.key):
            return self._sidecar_arrived(arrival)
        return self._image_arrived(arrival)

    def _image_arrived(self, arrival: Arrival, data: bytes | None = None) -> list[str] | None:
        """``data``: the bytes, when the caller already read them (a sidecar's image)."""
        rules = self.rules()
        # The key alone first: most files are decided without reading a byte.
        if not rules.matching(arrival, None, True, any_source=self.any_source, shallow=True):
            return self._ignored(arrival)
        source = self.sources[arrival.source]
        if data is None:
            data = self._read(source, arrival)
            if data is None:
                return None
        facts = examine(source, arrival.key, data)
        matching = rules.matching(
            arrival, facts.image, facts.has_sidecar, any_source=self.any_source
        )
        if not matching:
            return self._ignored(arrival, facts.sha256)
        mask_hash = mask_sha256(source, arrival.key) if _uses_mask_sidecar(matching) else None
        plan_ids = [
            self._submit(self._plan(rule, arrival, facts, mask_hash), arrival) for rule in matching
        ]
        self.ledger.mark_seen(
            arrival.source,
            arrival.key,
            arrival.size,
            arrival.mtime_ns,
            facts.sha256,
            "submitted",
            arrival.etag,
        )
        self.on_submit()
        return plan_ids

    def _read(self, source: Source, arrival: Arrival) -> bytes | None:
        """The arrival's bytes, or None when they cannot be read (recorded when the object
        is there but unreadable, so the ledger can say how it ended)."""
        try:
            return source.read(arrival.key, arrival.etag)
        except DarkroomError as exc:
            gone = exc.gone if isinstance(exc, InputError) else True
            if gone:
                # Vanished (or, for S3, replaced): a newer arrival, if any, has its own event.
                log.warning(
                    "cannot read arrival", source=arrival.source, key=arrival.key, reason=str(exc)
                )
                return None
            self.ledger.mark_seen(
                arrival.source,
                arrival.key,
                arrival.size,
                arrival.mtime_ns,
                None,
                f"unreadable: {exc}",
                arrival.etag,
            )
            self.ledger.record_quarantine(arrival.source, arrival.key, "", str(exc), None)
            log.error(
                "input cannot be read; recorded as quarantined",
                source=arrival.source,
                key=arrival.key,
                reason=str(exc),
            )
            return None  # a queue redelivers it, and dead-letters it in the end

    def _plan(self, rule: Rule, arrival: Arrival, facts: InputFacts, mask_hash: str | None) -> Plan:
        return plan_for(
            rule,
            arrival,
            facts.sha256,
            facts=facts.image,
            sidecar=facts.sidecar,
            references=reference_files(rule, self.rules_dir, self.reference_dirs),
            extra_content=mask_hash,
            error=facts.sidecar_error,
        )

    def _submit(self, plan: Plan, arrival: Arrival) -> str:
        plan_id, created = self.ledger.submit(plan)
        bound = log.bind(source=arrival.source, key=arrival.key, rule=plan.rule, plan=plan_id)
        if created:
            bound.info(
                "queued",
                jobs=len(plan.units),
                sha256=plan.sha256[:12],
                sidecar=plan.sidecar.key if plan.sidecar else None,
                error=plan.error,
            )
        else:
            bound.info("already handled; not queued again")
        return plan_id

    def _ignored(self, arrival: Arrival, sha256: str | None = None) -> list[str]:
        self.ledger.mark_seen(
            arrival.source,
            arrival.key,
            arrival.size,
            arrival.mtime_ns,
            sha256,
            "ignored: no rule matches",
            arrival.etag,
        )
        log.info(
            "no rule matches; ignored (darkroom match explains why)",
            source=arrival.source,
            key=arrival.key,
        )
        return []

    def _sidecar_arrived(self, arrival: Arrival) -> list[str]:
        """A new or edited sidecar (or mask) is a new arrival for its image."""
        source = self.sources[arrival.source]
        self.ledger.mark_seen(
            arrival.source,
            arrival.key,
            arrival.size,
            arrival.mtime_ns,
            None,
            "sidecar",
            arrival.etag,
        )
        root_uri = arrival.uri[: len(arrival.uri) - len(arrival.key)]
        plan_ids: list[str] = []
        for image_key in image_keys(arrival.key):
            try:
                data = source.read(image_key)
            except DarkroomError:
                continue
            image = Arrival(arrival.source, image_key, root_uri + image_key, len(data), 0)
            log.info(
                "sidecar changed; the image is a new arrival",
                source=arrival.source,
                key=image_key,
                sidecar=arrival.key,
            )
            # Its bytes were just read to find it: hand them on rather than read them again.
            plan_ids += self._image_arrived(image, data) or []
        return plan_ids


def _uses_mask_sidecar(rules: list[Rule]) -> bool:
    return any(step.mask == "sidecar" for rule in rules for step in rule.steps)
