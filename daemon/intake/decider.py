"""Deciding what one arrival becomes: read once, matched, planned; nothing written.

:class:`Decider` takes each arrival through one direction of steps:

1. the key alone against the rules (most files are decided without reading a byte);
2. the bytes, read once, and the facts they give: hash, header, sidecar
   (:mod:`daemon.intake.facts`);
3. the rules that take the arrival, given those facts (:mod:`daemon.rules.match`);
4. the mask's hash and the references, only for the rules that use them;
5. one ``Plan`` per matching rule (:func:`daemon.rules.plan.plan_for`).

What is not planned is recorded with its reason by :mod:`daemon.intake.refusals` (the only
writes: an unreadable or oversized input's quarantine record). The intake thread runs one
(:class:`~daemon.intake.intake.Intake`), and so does the second process a burst is decided
in (:mod:`daemon.intake.elsewhere`), where those writes are handed back to the main process.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from daemon.errors import DarkroomError
from daemon.intake.decisions import ArrivalDecision, Decision, SeenRow
from daemon.intake.facts import InputFacts, examine, mask_sha256
from daemon.intake.listing import FolderListings
from daemon.intake.refusals import (
    read_or_record,
    record_ignored,
    refused_oversize,
    unnameable,
    unnameable_decision,
)
from daemon.queue.ledger import Ledger
from daemon.rules import companions
from daemon.rules.briefs import brief_plans
from daemon.rules.match import RuleSet
from daemon.rules.metadata import ImageMetadata, read_metadata
from daemon.rules.plan import plan_for
from daemon.rules.references import reference_files
from daemon.rules.schema import Rule, is_brief
from daemon.rules.sidecars import SidecarLimits, image_keys, is_sidecar
from daemon.types import Arrival, Plan

if TYPE_CHECKING:
    from daemon.config.settings import LimitsConfig
    from daemon.sources.base import Source

log = structlog.get_logger("darkroom.intake")


class Decider:
    """Decides arrivals against the current rules; holds no state but caches."""

    def __init__(
        self,
        ledger: Ledger,
        rules: Callable[[], RuleSet],
        sources: Mapping[str, Source],
        *,
        any_source: bool = False,
        rules_dir: Path = Path("."),
        reference_dirs: Mapping[str, Path] | None = None,
        limits: LimitsConfig | None = None,
    ):
        self.ledger = ledger  # refusals only: an unreadable or oversized input's record
        self.rules = rules  # a callable, so a reload swaps the rule set atomically
        self.sources = sources
        self.any_source = any_source  # one-shot runs: a rule takes files from any source
        self.rules_dir = rules_dir
        self.reference_dirs = dict(reference_dirs or {})
        # What one input may cost (limits.*): checked before bytes are read or parsed.
        self.max_input_bytes = limits.max_input_bytes if limits else None
        self.sidecar_limits = (
            SidecarLimits(
                max_bytes=limits.max_sidecar_bytes, max_prompt_chars=limits.max_prompt_chars
            )
            if limits
            else SidecarLimits()
        )
        self.listings = FolderListings()  # sidecar and mask probes: one listing per folder
        self._unnameable_keys: set[tuple[str, str]] = set()  # names not UTF-8, recorded

    def decide(self, arrival: Arrival) -> Decision:
        """What ``arrival`` becomes: its plans and ``seen`` rows (None: it could not be read)."""
        if unnameable(arrival.key):
            return unnameable_decision(arrival, self._unnameable_keys)
        decision = ArrivalDecision(arrival)
        if is_brief(arrival.key):  # *.brief.yaml/.csv: rows without a photo, never a sidecar
            return decision if self._brief_arrived(arrival, decision) else None
        if is_sidecar(arrival.key):
            self._sidecar_arrived(arrival, decision)
            return decision
        if not self._image_arrived(arrival, decision):
            return None
        self._companion_arrived(arrival, decision)
        return decision

    # -- briefs and companions (issue 19: daemon.rules.briefs, daemon.rules.companions) ---

    def _brief_arrived(self, arrival: Arrival, decision: ArrivalDecision) -> bool:
        """A brief: one plan per row and rule that takes briefs; False when unreadable."""
        rule_set = self.rules()
        verdicts = rule_set.verdicts(arrival, None, False, any_source=self.any_source)
        rules = rule_set.taking(verdicts)
        if not rules:
            record_ignored(verdicts, arrival, decision)
            return True
        source = self.sources[arrival.source]
        if refused_oversize(
            self.ledger, source, arrival, arrival.size, self.max_input_bytes, decision
        ):
            return True
        data = read_or_record(self.ledger, source, arrival)
        if data is None:
            return False
        files = functools.partial(
            reference_files, rules_dir=self.rules_dir, reference_dirs=self.reference_dirs
        )
        decision.plans += brief_plans(rules, arrival, data, files, self.sidecar_limits)
        decision.seen.append(SeenRow(arrival, hashlib.sha256(data).hexdigest(), "submitted"))
        return True

    def _companions(self, rule: Rule, arrival: Arrival, source: Source) -> companions.Found | None:
        """The rule's companions of ``arrival`` (None: the rule has none)."""
        if not rule.companions:
            return None

        def read(key: str) -> bytes | None:
            try:
                return source.read(key)
            except DarkroomError:
                return None

        return companions.find(rule, arrival, companions.folder_keys(source, arrival.key), read)

    def _companion_arrived(self, arrival: Arrival, decision: ArrivalDecision) -> None:
        """A file that is a companion of photos next to it plans them again (the group is
        complete, or a companion changed: the plans' identity holds every input's hash)."""
        grouped = [r.rule for r in self.rules().rules if r.rule.companions]
        if not grouped:
            return
        source = self.sources[arrival.source]
        names = companions.folder_keys(source, arrival.key) or []
        root_uri = arrival.uri[: len(arrival.uri) - len(arrival.key)]
        photos = {
            photo
            for rule in grouped
            for photo in companions.photos_of(
                rule, arrival.key, arrival.source, names, any_source=self.any_source
            )
        }
        for photo in sorted(photos):
            try:
                data = source.read(photo)
            except DarkroomError:
                continue
            log.info("companion arrived; its photo is planned again", key=photo, by=arrival.key)
            image = Arrival(arrival.source, photo, root_uri + photo, len(data), 0)
            self._image_arrived(image, decision, data)

    def _image_arrived(
        self, arrival: Arrival, decision: ArrivalDecision, data: bytes | None = None
    ) -> bool:
        """Add ``arrival``'s plans and ``seen`` row to ``decision``; False when it could
        not be read. ``data``: the bytes, when the caller already read them (a sidecar's
        image)."""
        rules = self.rules()
        # The key alone first: most files are decided without reading a byte.
        by_key = rules.verdicts(arrival, None, True, any_source=self.any_source, shallow=True)
        if not rules.taking(by_key):
            record_ignored(by_key, arrival, decision)
            return True
        source = self.sources[arrival.source]
        size = len(data) if data is not None else arrival.size
        limit = self.max_input_bytes
        if refused_oversize(self.ledger, source, arrival, size, limit, decision):  # not read
            return True
        if data is None:
            data = read_or_record(self.ledger, source, arrival)
            if data is None:
                return False
            # It may have grown after settling.
            if refused_oversize(self.ledger, source, arrival, len(data), limit, decision):
                return True
        exists = self.listings.exists(arrival.source, source, arrival.key)
        facts = examine(source, arrival.key, data, self.sidecar_limits, exists)
        verdicts = rules.verdicts(
            arrival, facts.image, facts.has_sidecar, any_source=self.any_source
        )
        matching = rules.taking(verdicts)
        if not matching:
            record_ignored(verdicts, arrival, decision, facts.sha256)
            return True
        # Companions (rules/companions): a rule whose group is not complete waits for it.
        grouped = {r.name: self._companions(r, arrival, source) for r in matching}
        waiting = [m for f in grouped.values() if f is not None for m in f.missing]
        matching = [r for r in matching if not getattr(grouped[r.name], "missing", None)]
        if waiting:
            log.info("waiting for companions", source=arrival.source, key=arrival.key, why=waiting)
        if not matching:
            reason = "; ".join(waiting) + " (it runs when they arrive)"
            decision.seen.append(SeenRow(arrival, facts.sha256, f"waiting: {reason}"))
            return True
        mask_hash = (
            mask_sha256(source, arrival.key, exists) if _uses_mask_sidecar(matching) else None
        )
        # The photo's own metadata ({meta.caption}), from the bytes already read: only
        # when a rule's templates name it.
        metadata = read_metadata(data) if any(r.uses_metadata for r in matching) else None
        decision.plans += [
            self._plan(rule, arrival, facts, mask_hash, metadata, grouped[rule.name])
            for rule in matching
        ]
        decision.seen.append(SeenRow(arrival, facts.sha256, "submitted"))
        return True

    def _plan(
        self,
        rule: Rule,
        arrival: Arrival,
        facts: InputFacts,
        mask_hash: str | None,
        metadata: ImageMetadata | None = None,
        found: companions.Found | None = None,
    ) -> Plan:
        return plan_for(
            rule,
            arrival,
            facts.sha256,
            facts=facts.image,
            sidecar=facts.sidecar,
            references=reference_files(rule, self.rules_dir, self.reference_dirs),
            extra_content=mask_hash,
            error=facts.sidecar_error,
            metadata=metadata,
            companions=found.files if found else None,
        )

    def _sidecar_arrived(self, arrival: Arrival, decision: ArrivalDecision) -> None:
        """A new or edited sidecar (or mask) is a new arrival for its image."""
        source = self.sources[arrival.source]
        decision.seen.append(SeenRow(arrival, None, "sidecar"))
        root_uri = arrival.uri[: len(arrival.uri) - len(arrival.key)]
        self.listings.forget(arrival.source, arrival.key)  # the folder has a new name
        exists = self.listings.exists(arrival.source, source, arrival.key)
        for image_key in image_keys(arrival.key):
            if not exists(image_key):
                continue
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
            self._image_arrived(image, decision, data)


def _uses_mask_sidecar(rules: list[Rule]) -> bool:
    return any(step.mask == "sidecar" for rule in rules for step in rule.steps)
