"""Intake: turns arrivals from the sources into plans in the ledger.

Sources call ``emit`` from their own threads; it only enqueues. One intake thread reads
each arrival, hashes it, matches the rules and submits a plan per matching rule. The
ledger makes this idempotent, so duplicate events and rescans cost a lookup, not a job.
"""

from __future__ import annotations

import hashlib
import io
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from daemon.errors import DarkroomError
from daemon.types import Arrival
from daemon.queue.ledger import Ledger
from pathlib import Path, PurePosixPath

from PIL import Image

from daemon.rules import (
    ImageFacts,
    RuleSet,
    Sidecar,
    is_sidecar,
    mask_key,
    plan_for,
    resolve_references,
    sidecar_keys,
)
from daemon.intake.settlement import Settlement

log = structlog.get_logger("darkroom.intake")


class Intake:
    def __init__(
        self,
        ledger: Ledger,
        rules: Callable[[], RuleSet],
        sources: Mapping[str, Any],
        on_submit: Callable[[], None],
        *,
        any_source: bool = False,
        settlement: Settlement | None = None,
        rules_dir: Path = Path("."),
        reference_dirs: Mapping[str, Path] | None = None,
    ):
        self.ledger = ledger
        self.rules_dir = rules_dir
        self.reference_dirs = dict(reference_dirs or {})
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
        if is_sidecar(arrival.key):
            return self._sidecar_arrived(arrival)
        bound = log.bind(source=arrival.source, key=arrival.key)
        rules = self.rules()
        source = self.sources[arrival.source]
        # Name and source first: most files are decided without reading a byte.
        if not rules.matching(arrival, None, True, any_source=self.any_source, shallow=True):
            return self._ignored(arrival, bound)
        try:
            data = source.read(arrival.key, arrival.etag)
        except DarkroomError as exc:
            if getattr(exc, "gone", True):
                # Vanished (or, for S3, replaced): a newer arrival, if any, has its own event.
                bound.warning("cannot read arrival", reason=str(exc))
                return None
            # There but unreadable: the ledger must be able to say how it ended.
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
            bound.error("input cannot be read; recorded as quarantined", reason=str(exc))
            return None  # not settled: a queue redelivers it, and dead-letters it in the end
        sha = hashlib.sha256(data).hexdigest()
        facts = image_facts(data)
        sidecar, sidecar_error = self._sidecar(source, arrival.key)
        matching = rules.matching(
            arrival,
            facts,
            sidecar is not None or sidecar_error is not None,
            any_source=self.any_source,
        )
        if not matching:
            return self._ignored(arrival, bound, sha)
        mask_sha = self._mask_sha(source, arrival.key, matching)
        plan_ids = []
        for rule in matching:
            plan = plan_for(
                rule,
                arrival,
                sha,
                facts=facts,
                sidecar=sidecar,
                references=self._references(rule),
                extra_content=mask_sha,
            )
            if sidecar_error:
                plan["error"] = sidecar_error
            pid, created = self.ledger.submit(plan)
            plan_ids.append(pid)
            if created:
                bound.info(
                    "queued",
                    rule=rule.name,
                    plan=pid,
                    jobs=len(plan["steps"]),
                    sha256=sha[:12],
                    sidecar=sidecar.key if sidecar else None,
                    error=plan.get("error"),
                )
            else:
                bound.info("already handled; not queued again", rule=rule.name, plan=pid)
        self.ledger.mark_seen(
            arrival.source,
            arrival.key,
            arrival.size,
            arrival.mtime_ns,
            sha,
            "submitted",
            arrival.etag,
        )
        self.on_submit()
        return plan_ids

    def _ignored(self, arrival: Arrival, bound: Any, sha: str | None = None) -> list[str]:
        self.ledger.mark_seen(
            arrival.source,
            arrival.key,
            arrival.size,
            arrival.mtime_ns,
            sha,
            "ignored: no rule matches",
            arrival.etag,
        )
        bound.info("no rule matches; ignored (darkroom match explains why)")
        return []

    def _sidecar(self, source: Any, key: str) -> tuple[Sidecar | None, str | None]:
        """The image's sidecar, if one exists; a broken one is an error for its plans."""
        for candidate in sidecar_keys(key):
            try:
                data = source.read(candidate)
            except DarkroomError:
                continue
            try:
                return Sidecar.parse(candidate, data), None
            except DarkroomError as exc:
                return None, str(exc)
        return None, None

    def _mask_sha(self, source: Any, key: str, rules: list[Any]) -> str | None:
        if not any(step.mask == "sidecar" for rule in rules for step in rule.steps):
            return None
        try:
            return hashlib.sha256(source.read(mask_key(key))).hexdigest()
        except DarkroomError:
            return None

    def _references(self, rule: Any) -> dict[str, list[dict[str, str]]]:
        resolved = {}
        for step in rule.steps:
            if step.references:
                paths = resolve_references(step.references, self.rules_dir, self.reference_dirs)
                resolved[step.name] = [
                    {"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                    for p in paths
                ]
        return resolved

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
        base = (
            arrival.key[: -len(".mask.png")]
            if arrival.key.lower().endswith(".mask.png")
            else str(PurePosixPath(arrival.key).with_suffix(""))
        )
        plan_ids: list[str] = []
        for ext in IMAGE_EXTENSIONS:
            image_key = base + ext
            try:
                data = source.read(image_key)
            except DarkroomError:
                continue
            image = Arrival(
                arrival.source,
                image_key,
                arrival.uri[: len(arrival.uri) - len(arrival.key)] + image_key,
                len(data),
                0,
            )
            log.info(
                "sidecar changed; the image is a new arrival",
                source=arrival.source,
                key=image_key,
                sidecar=arrival.key,
            )
            plan_ids += self.handle(image) or []
        return plan_ids


IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".tif",
    ".tiff",
    ".bmp",
    ".JPG",
    ".JPEG",
    ".PNG",
    ".WEBP",
)


def image_facts(data: bytes) -> ImageFacts | None:
    """Type and upright size from the header, without decoding pixels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            kind = {
                "JPEG": "jpeg",
                "PNG": "png",
                "WEBP": "webp",
                "TIFF": "tiff",
                "BMP": "bmp",
                "GIF": "gif",
                "MPO": "jpeg",
            }.get(image.format or "", (image.format or "").lower())
            return ImageFacts(kind, width, height)
    except Exception:  # anything unreadable: the job says why, with the full decode
        return None
