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

Steps 1-5 decide, without writing (the ``darkroom-intake`` thread); a second thread writes
every decision ready so far in one transaction (:meth:`Ledger.batch`: one commit and one
fsync for the group, each arrival's plans and ``seen`` row atomic on their own), and logs and
settles them. While a group commits the next is decided, so a burst of 10,000 becomes a few
hundred commits instead of 20,000, and a lone arrival is written at once (no waiting to fill
a group).

The ledger makes this idempotent, so duplicate events and rescans cost a lookup, not a job.
When a queue-backed source must be told an arrival is fully handled, intake hands the plan
ids to :class:`~daemon.intake.settlement.Settlement`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import structlog

from daemon.errors import DarkroomError, InputError
from daemon.intake.facts import InputFacts, examine, mask_sha256
from daemon.intake.listing import FolderListings
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
    from daemon.intake.settlement import Settlement
    from daemon.sources.base import Known, Source

log = structlog.get_logger("darkroom.intake")

# The most arrivals written in one transaction (a burst's groups are otherwise as large as
# what was decided while the previous group committed).
GROUP_MAX = 1000
# The longest the decide thread works on a chunk before handing it to the writer: bounds
# the latency a burst adds to each arrival's write.
CHUNK_S = 0.05
_STOP = object()  # after the last decision: the writer stops


@dataclass(frozen=True)
class _Seen:
    """A ``seen`` row to write with the plans (the ledger's ``mark_seen`` arguments)."""

    arrival: Arrival
    sha256: str | None
    outcome: str


@dataclass
class _Decision:
    """What one arrival becomes, decided before anything is written: the plans to submit
    (each with the arrival it is for) and the ``seen`` rows to write with them."""

    arrival: Arrival
    plans: list[Plan] = field(default_factory=list)
    seen: list[_Seen] = field(default_factory=list)
    results: list[tuple[str, bool]] = field(default_factory=list)  # (plan id, created)
    error: BaseException | None = None  # writing it failed: nothing of it was kept


# None: the arrival could not be read (not settled: a redelivery or rescan tries again).
Decision = _Decision | None


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
        limits: LimitsConfig | None = None,
    ):
        self.ledger = ledger
        self.rules = rules  # a callable, so a reload swaps the rule set atomically
        self.sources = sources
        self.on_submit = on_submit
        self.any_source = any_source  # one-shot runs: a rule takes files from any source
        self.settlement = settlement
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
        self._listings = FolderListings()  # sidecar and mask probes: one listing per folder
        self.queue: queue.Queue[Arrival | None] = queue.Queue()
        self._decided: queue.Queue[list[Decision] | object] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._unnameable_keys: set[tuple[str, str]] = set()  # names not UTF-8, recorded

    def emit(self, arrival: Arrival) -> None:
        self.queue.put(arrival)

    def known_for(self, source: str) -> Known:
        """The ``known`` callback for ``source``: was this version of a key handled already?"""

        def known(key: str, size: int, mtime_ns: int, etag: str | None = None) -> bool:
            if _unnameable(key):  # handled (recorded and skipped) by _decide, each time
                return False
            return self.ledger.is_seen(source, key, size, mtime_ns, etag)

        return known

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._decide_loop, name="darkroom-intake", daemon=True),
            threading.Thread(target=self._write_loop, name="darkroom-intake-write", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Decide and write what is queued, then stop (the marker follows the last arrival)."""
        self.queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _decide_loop(self) -> None:
        """Reads, hashes and plans each arrival; hands the decisions to the writer in
        chunks: every decision made while more arrivals were waiting, for at most
        ``CHUNK_S`` (a lone arrival goes on at once). One hand-off per chunk rather than per
        arrival: each one wakes the writer, and a thread switch per file costs more than
        the file."""
        while True:
            chunk: list[Decision] = []
            arrival = self.queue.get()
            started = time.monotonic()
            while arrival is not None:
                try:
                    chunk.append(self._decide(arrival))
                except Exception:  # one bad arrival must never stop intake
                    log.exception("intake failed", source=arrival.source, key=arrival.key)
                if len(chunk) >= GROUP_MAX or time.monotonic() - started > CHUNK_S:
                    break
                try:
                    arrival = self.queue.get_nowait()
                except queue.Empty:
                    break
            if chunk:
                self._decided.put(chunk)
            if arrival is None:
                self._decided.put(_STOP)
                return

    def _write_loop(self) -> None:
        """Writes every decision ready so far in one transaction, and again. While one group
        commits, the decide thread prepares the next: a burst forms large groups by
        itself, and a lone arrival is written at once."""
        while True:
            group: list[Decision] = []
            item = self._decided.get()
            stop = item is _STOP
            while not stop:
                group += cast(list[Decision], item)
                if len(group) >= GROUP_MAX:
                    break
                try:
                    item = self._decided.get_nowait()
                except queue.Empty:
                    break
                stop = item is _STOP
            try:
                self._handle_group(group)
            except Exception:  # one bad group must never stop intake
                log.exception("intake failed", arrivals=len(group))
            if stop:
                return

    def _handle_group(self, group: list[Decision]) -> None:
        if not group:
            return
        self._write(group)
        reports = [self._report(decision) for decision in group]
        if any(d is not None and d.error is None and d.plans for d in group):
            self.on_submit()
        if self.settlement is not None:
            self.settlement.track_many([r for r in reports if r is not None])

    def handle_many(self, arrivals: list[Arrival]) -> list[list[str] | None]:
        """``handle`` for many arrivals, written in one transaction (one commit); per
        arrival its plan ids, or None when it was not read or could not be written."""
        group = [self._decide(arrival) for arrival in arrivals]
        self._write(group)
        reports = [self._report(decision) for decision in group]
        if any(d is not None and d.error is None and d.plans for d in group):
            self.on_submit()
        return [None if report is None else report[1] for report in reports]

    def handle(self, arrival: Arrival) -> list[str] | None:
        """Submit plans for ``arrival``; returns the plan ids (new or existing), or None
        when it could not be read (then it is not settled: a redelivery or rescan tries
        again). Raises what writing it to the ledger raised."""
        decision = self._decide(arrival)
        self._write([decision])
        if decision is not None and decision.error is not None:
            raise decision.error
        report = self._report(decision)
        if decision is not None and decision.plans:
            self.on_submit()
        return None if report is None else report[1]

    # -- deciding (reads files; writes nothing but unreadable records) ------------------

    def _decide(self, arrival: Arrival) -> Decision:
        if _unnameable(arrival.key):
            return self._unnameable(arrival)
        decision = _Decision(arrival)
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

    def _brief_arrived(self, arrival: Arrival, decision: _Decision) -> bool:
        """A brief: one plan per row and rule that takes briefs; False when unreadable."""
        rules = self.rules().matching(arrival, None, False, any_source=self.any_source)
        if not rules:
            self._ignored(arrival, decision)
            return True
        source = self.sources[arrival.source]
        if self._oversize(source, arrival, arrival.size, decision):
            return True
        data = self._read(source, arrival)
        if data is None:
            return False
        files = functools.partial(
            reference_files, rules_dir=self.rules_dir, reference_dirs=self.reference_dirs
        )
        decision.plans += brief_plans(rules, arrival, data, files, self.sidecar_limits)
        decision.seen.append(_Seen(arrival, hashlib.sha256(data).hexdigest(), "submitted"))
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

    def _companion_arrived(self, arrival: Arrival, decision: _Decision) -> None:
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
        self, arrival: Arrival, decision: _Decision, data: bytes | None = None
    ) -> bool:
        """Add ``arrival``'s plans and ``seen`` row to ``decision``; False when it could
        not be read. ``data``: the bytes, when the caller already read them (a sidecar's
        image)."""
        rules = self.rules()
        # The key alone first: most files are decided without reading a byte.
        if not rules.matching(arrival, None, True, any_source=self.any_source, shallow=True):
            self._ignored(arrival, decision)
            return True
        source = self.sources[arrival.source]
        size = len(data) if data is not None else arrival.size
        if self._oversize(source, arrival, size, decision):  # refused before reading it
            return True
        if data is None:
            data = self._read(source, arrival)
            if data is None:
                return False
            if self._oversize(source, arrival, len(data), decision):  # it grew after settling
                return True
        exists = self._listings.exists(arrival.source, source, arrival.key)
        facts = examine(source, arrival.key, data, self.sidecar_limits, exists)
        matching = rules.matching(
            arrival, facts.image, facts.has_sidecar, any_source=self.any_source
        )
        if not matching:
            self._ignored(arrival, decision, facts.sha256)
            return True
        # Companions (rules/companions): a rule whose group is not complete waits for it.
        grouped = {r.name: self._companions(r, arrival, source) for r in matching}
        waiting = [m for f in grouped.values() if f is not None for m in f.missing]
        matching = [r for r in matching if not getattr(grouped[r.name], "missing", None)]
        if waiting:
            log.info("waiting for companions", source=arrival.source, key=arrival.key, why=waiting)
        if not matching:
            reason = "; ".join(waiting) + " (it runs when they arrive)"
            decision.seen.append(_Seen(arrival, facts.sha256, f"waiting: {reason}"))
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
        decision.seen.append(_Seen(arrival, facts.sha256, "submitted"))
        return True

    # -- writing (one transaction per group) -------------------------------------------

    def _write(self, group: list[Decision]) -> None:
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
                for decision in decisions:
                    self._write_one(decision)
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

    def _write_one(self, decision: _Decision) -> None:
        ledger = self.ledger
        decision.results = [ledger.submit(plan) for plan in decision.plans]
        for seen in decision.seen:
            a = seen.arrival
            ledger.mark_seen(a.source, a.key, a.size, a.mtime_ns, seen.sha256, seen.outcome, a.etag)

    def _report(self, decision: Decision) -> tuple[Arrival, list[str]] | None:
        """Log what was written for ``decision``; its (arrival, plan ids), or None when it
        was not read or not written (not settled: a redelivery or rescan tries again)."""
        if decision is None:
            return None
        arrival = decision.arrival
        if decision.error is not None:
            log.error(
                "intake failed; the file is tried again at the next rescan or redelivery",
                source=arrival.source,
                key=arrival.key,
                error=repr(decision.error),
            )
            return None
        plan_ids: list[str] = []
        for plan, (plan_id, created) in zip(decision.plans, decision.results, strict=True):
            bound = log.bind(
                source=plan.arrival.source, key=plan.arrival.key, rule=plan.rule, plan=plan_id
            )
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
            plan_ids.append(plan_id)
        return arrival, plan_ids

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

    def _oversize(self, source: Source, arrival: Arrival, size: int, decision: _Decision) -> bool:
        """Whether ``arrival`` is over ``limits.max_input_bytes``: then it is quarantined with
        the reason, unread (a 2 GB file must not cost 2 GB of memory), and True."""
        limit = self.max_input_bytes
        if limit is None or size <= limit:
            return False
        reason = (
            f"{arrival.key}: {size} bytes, over the {limit}-byte limit for inputs;"
            " raise limits.max_input_bytes in the config to process it"
        )
        record = {"source": arrival.source, "key": arrival.key, "reason": reason, "steps": []}
        location = None
        try:
            location = source.quarantine(arrival.key, record, None)
        except DarkroomError as exc:
            log.warning("cannot quarantine", key=arrival.key, reason=str(exc))
        self.ledger.record_quarantine(arrival.source, arrival.key, "", reason, location)
        if location is None:  # still at its key: this version is not read again
            decision.seen.append(_Seen(arrival, None, f"quarantined: {reason}"))
        log.error(
            "input over the size limit; quarantined unread",
            source=arrival.source,
            key=arrival.key,
            reason=reason,
            location=location,
        )
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

    def _unnameable(self, arrival: Arrival) -> Decision:
        """A file whose name is not valid UTF-8 (bytes a Windows share or an old camera
        wrote): it cannot be a key in the ledger, a template or a URL. It stays where it is;
        its record shows the name with the bad bytes escaped, and the fix."""
        shown = arrival.key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        if (arrival.source, shown) in self._unnameable_keys:
            return _Decision(arrival)  # recorded once per run; rescans find it again
        self._unnameable_keys.add((arrival.source, shown))
        record = dataclasses.replace(arrival, key=shown, uri=shown)
        reason = "ignored: the file name is not valid UTF-8; rename it (e.g. convmv -f latin1)"
        log.warning(reason, source=arrival.source, key=shown)
        decision = _Decision(record)
        decision.seen.append(_Seen(record, None, reason))
        return decision

    def _ignored(self, arrival: Arrival, decision: _Decision, sha256: str | None = None) -> None:
        decision.seen.append(_Seen(arrival, sha256, "ignored: no rule matches"))
        log.info(
            "no rule matches; ignored (darkroom match explains why)",
            source=arrival.source,
            key=arrival.key,
        )

    def _sidecar_arrived(self, arrival: Arrival, decision: _Decision) -> None:
        """A new or edited sidecar (or mask) is a new arrival for its image."""
        source = self.sources[arrival.source]
        decision.seen.append(_Seen(arrival, None, "sidecar"))
        root_uri = arrival.uri[: len(arrival.uri) - len(arrival.key)]
        self._listings.forget(arrival.source, arrival.key)  # the folder has a new name
        exists = self._listings.exists(arrival.source, source, arrival.key)
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


def _unnameable(key: str) -> bool:
    """Whether ``key`` holds bytes that are not UTF-8 (decoded with surrogateescape)."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _uses_mask_sidecar(rules: list[Rule]) -> bool:
    return any(step.mask == "sidecar" for rule in rules for step in rule.steps)
