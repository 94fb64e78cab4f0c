"""Refusals: what intake records for an arrival it does not plan, and why.

An arrival whose bytes cannot be read (recorded as quarantined unless it vanished), one over
``limits.max_input_bytes`` (quarantined unread), one whose name is not UTF-8 (recorded once
per run, left where it is), and one no rule takes (each rule's reason, for ``darkroom
status``). Used by :class:`~daemon.intake.intake.Intake` while it decides.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import structlog

from daemon.errors import DarkroomError, InputError
from daemon.intake.decisions import ArrivalDecision, Decision, SeenRow
from daemon.queue.ledger import Ledger
from daemon.rules.match import Verdict
from daemon.types import Arrival

if TYPE_CHECKING:
    from daemon.sources.base import Source

log = structlog.get_logger("darkroom.intake")

_IGNORED_REASON_CHARS = 300  # each rule's reason, in the ``seen`` row status lists


def read_or_record(ledger: Ledger, source: Source, arrival: Arrival) -> bytes | None:
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
        ledger.mark_seen(
            arrival.source,
            arrival.key,
            arrival.size,
            arrival.mtime_ns,
            None,
            f"unreadable: {exc}",
            arrival.etag,
        )
        ledger.record_quarantine(arrival.source, arrival.key, "", str(exc), None)
        log.error(
            "input cannot be read; recorded as quarantined",
            source=arrival.source,
            key=arrival.key,
            reason=str(exc),
        )
        return None  # a queue redelivers it, and dead-letters it in the end


def refused_oversize(
    ledger: Ledger,
    source: Source,
    arrival: Arrival,
    size: int,
    limit: int | None,
    decision: ArrivalDecision,
) -> bool:
    """Whether ``arrival`` is over ``limits.max_input_bytes``: then it is quarantined with
    the reason, unread (a 2 GB file must not cost 2 GB of memory), and True."""
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
    ledger.record_quarantine(arrival.source, arrival.key, "", reason, location)
    if location is None:  # still at its key: this version is not read again
        decision.seen.append(SeenRow(arrival, None, f"quarantined: {reason}"))
    log.error(
        "input over the size limit; quarantined unread",
        source=arrival.source,
        key=arrival.key,
        reason=reason,
        location=location,
    )
    return True


def unnameable_decision(arrival: Arrival, recorded: set[tuple[str, str]]) -> Decision:
    """A file whose name is not valid UTF-8 (bytes a Windows share or an old camera
    wrote): it cannot be a key in the ledger, a template or a URL. It stays where it is;
    its record shows the name with the bad bytes escaped, and the fix."""
    shown = arrival.key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if (arrival.source, shown) in recorded:
        return ArrivalDecision(arrival)  # recorded once per run; rescans find it again
    recorded.add((arrival.source, shown))
    record = dataclasses.replace(arrival, key=shown, uri=shown)
    reason = "ignored: the file name is not valid UTF-8; rename it (e.g. convmv -f latin1)"
    log.warning(reason, source=arrival.source, key=shown)
    decision = ArrivalDecision(record)
    decision.seen.append(SeenRow(record, None, reason))
    return decision


def record_ignored(
    verdicts: list[Verdict],
    arrival: Arrival,
    decision: ArrivalDecision,
    sha256: str | None = None,
) -> None:
    """Record that no rule takes ``arrival``, with each rule's reason from the ``verdicts``
    that decided so (what ``darkroom status`` lists and ``darkroom match`` explains in full)."""
    why = "; ".join(f"{v.rule}: {', '.join(v.reasons)}" for v in verdicts if v.reasons)
    if len(why) > _IGNORED_REASON_CHARS:
        why = why[: _IGNORED_REASON_CHARS - 3] + "..."
    outcome = f"ignored: no rule matches ({why})" if why else "ignored: no rule matches"
    decision.seen.append(SeenRow(arrival, sha256, outcome))
    log.info(
        "no rule matches; ignored (darkroom match explains why)",
        source=arrival.source,
        key=arrival.key,
    )


def unnameable(key: str) -> bool:
    """Whether ``key`` holds bytes that are not UTF-8 (decoded with surrogateescape)."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
