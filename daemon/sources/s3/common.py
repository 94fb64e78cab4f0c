"""What both S3 modes share: the prefix's objects — listing, versions emitted, reads by ETag.

- Keys are relative to ``prefix``, which is treated as a folder (``in`` means ``in/``), and are
  selected with ``include``/``exclude`` globs (daemon.rules.globs.selects). Keys ending in ``/``
  (console "folders") are never arrivals. Keys are S3's own bytes: no Unicode normalisation, so
  an NFC and an NFD name are two objects, each read back exactly.
- A version is (key, ETag): ETags are stored without quotes; ``mtime_ns`` is LastModified (a
  listing) or the event time (an event). ``known()`` is asked with the ETag, so the ledger
  matches on ETag + size and the two clocks never matter.
- The same version is emitted once per process while it is unsettled (``pending``); a listing
  emits it again only if neither ``known()`` nor a settle confirmed it after ``REEMIT_AFTER``
  seconds (an arrival lost inside the daemon) and no queue message is waiting on it.
- ``read(key, etag)`` is GetObject with ``IfMatch``: a version replaced after its
  announcement raises InputError("... changed ...").
"""

from __future__ import annotations

import calendar
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from daemon import aws
from daemon.errors import DarkroomError, InputError
from daemon.rules.globs import compile_glob, selects
from daemon.sources.base import Emit, Known
from daemon.types import Arrival

log = structlog.get_logger("darkroom.sources")

__all__ = ["PAGE_SIZE", "REEMIT_AFTER", "PendingVersion", "PrefixObjects", "Version"]

PAGE_SIZE = 1000  # keys per ListObjectsV2 page
REEMIT_AFTER = 600.0  # seconds before a listing emits an unconfirmed version again
# Outcomes after which a version needs no more work, so listings skip it.
_HANDLED = ("done", "failed", "partial", "ignored", "duplicate")

Version = tuple[str, str]  # (key relative to the prefix, etag)


@dataclass
class PendingVersion:
    """An emitted version waiting to be settled; the queue messages that announced it."""

    arrival: Arrival
    emitted_at: float  # monotonic
    messages: set[str] = field(default_factory=set)  # SQS message ids (events mode)


class PrefixObjects:
    """The objects under ``s3://bucket/prefix`` as one source sees them.

    Holds the S3 client, the versions emitted and not settled (``pending``), the versions
    confirmed handled (``seen``, which keeps listings cheap) and the ``emit``/``known`` the
    source was started with. Thread-safe: ``lock`` guards ``pending`` and ``seen``.
    """

    def __init__(
        self,
        source: str,
        bucket: str,
        prefix: str,
        *,
        include: Sequence[str],
        exclude: Sequence[str],
        endpoint_url: str | None,
        region: str | None,
    ) -> None:
        for label, patterns in (("include", include), ("exclude", exclude)):
            if isinstance(patterns, str):
                raise ValueError(f"source {source!r}: {label} must be a list of glob patterns")
            for pattern in patterns:
                try:
                    compile_glob(pattern)
                except ValueError as exc:
                    raise ValueError(f"source {source!r}: {label}: {exc}") from None
        self.source = source
        self.bucket = bucket
        self.prefix = folder_prefix(prefix)
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.endpoint_url = endpoint_url
        self.region = region
        self.lock = threading.Lock()  # guards pending and seen
        self.pending: dict[Version, PendingVersion] = {}
        self.seen: dict[str, str] = {}  # key -> etag confirmed handled
        self.emit: Emit | None = None
        self.known: Known | None = None
        self.stopping = threading.Event()
        self._client: Any = None
        self._list_lock = threading.Lock()  # one listing at a time

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def s3(self) -> Any:
        """The S3 client, made on first use (the source makes it in ``start()``)."""
        if self._client is None:
            self._client = aws.client("s3", endpoint_url=self.endpoint_url, region=self.region)
        return self._client

    # -- listing -------------------------------------------------------------------------------

    def scan(self, grace: float | None = None) -> None:
        """List the prefix once and emit every selected version not handled yet, leaving
        objects younger than ``grace`` seconds to their events. Listing errors are logged; a
        listing already running makes this call a no-op."""
        if not self._list_lock.acquire(blocking=False):
            return
        try:
            self._list_and_offer(grace)
        except DarkroomError as exc:
            log.warning(
                "cannot list the source", source=self.source, where=self.where, reason=str(exc)
            )
        finally:
            self._list_lock.release()

    def _list_and_offer(self, grace: float | None) -> None:
        horizon = time.time() - grace if grace is not None else None
        listed: set[str] = set()
        paginator = self.s3.get_paginator("list_objects_v2")
        with aws.translated(self.where, action="list"):
            for page in paginator.paginate(
                Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": PAGE_SIZE}
            ):
                if self.stopping.is_set():
                    return
                for obj in page.get("Contents", ()):
                    key = obj["Key"][len(self.prefix) :]
                    listed.add(key)
                    if not self.wanted(key):
                        continue
                    mtime_ns = ns(obj["LastModified"])
                    if horizon is not None and mtime_ns / 1e9 > horizon:
                        continue  # its event is most likely on its way
                    self._offer(
                        key, int(obj.get("Size", 0)), mtime_ns, unquote_etag(obj.get("ETag", ""))
                    )
        with self.lock:  # a complete listing: forget what is gone, so memory stays bounded
            for key in [k for k in self.seen if k not in listed]:
                del self.seen[key]

    def _offer(self, key: str, size: int, mtime_ns: int, etag: str) -> None:
        version = (key, etag)
        now = time.monotonic()
        with self.lock:
            if self.seen.get(key) == etag or self._waiting(self.pending.get(version), now):
                return
        if self.is_known(key, size, mtime_ns, etag):
            with self.lock:
                self.seen[key] = etag
                self.pending.pop(version, None)
            return
        arrival = self.arrival(key, size, mtime_ns, etag)
        with self.lock:
            current = self.pending.get(version)
            if self._waiting(current, now):
                return
            messages = current.messages if current else set()
            self.pending[version] = PendingVersion(arrival, now, messages)
        self.deliver(arrival)

    @staticmethod
    def _waiting(pending: PendingVersion | None, now: float) -> bool:
        """An emitted version is still on its way (a message holds it, or it is recent)."""
        return pending is not None and (
            bool(pending.messages) or now - pending.emitted_at < REEMIT_AFTER
        )

    # -- versions --------------------------------------------------------------------------------

    def settled(self, version: Version, outcome: str) -> PendingVersion | None:
        """Forget a pending version; remember it as handled when ``outcome`` says so.
        Returns what was pending (its messages are the caller's to resolve)."""
        with self.lock:
            return self.settled_locked(version, outcome)

    def settled_locked(self, version: Version, outcome: str) -> PendingVersion | None:
        """``settled`` for a caller that holds ``lock`` already."""
        if outcome in _HANDLED:
            self.seen[version[0]] = version[1]
        return self.pending.pop(version, None)

    def read(self, key: str, etag: str | None, failed: Callable[[Version, bool], None]) -> bytes:
        """The object's bytes; with ``etag``, only that version (InputError "changed"
        otherwise). On failure ``failed(version, superseded)`` is called before raising."""
        full = self.prefix + key
        where = f"s3://{self.bucket}/{full}"
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if etag:
            args["IfMatch"] = f'"{unquote_etag(etag)}"'
        try:
            data: bytes = self.s3.get_object(**args)["Body"].read()
            return data
        except Exception as exc:
            if is_botocore(exc):
                error = aws.translate(exc, where, action="read", error=InputError)
            else:  # a dropped connection while streaming the body, say: worth another try
                error = InputError(f"cannot read {where}: {type(exc).__name__}: {exc}")
                error.retryable = True
            version = (key, unquote_etag(etag) if etag else "")
            failed(version, bool(etag) and aws.is_precondition_failed(exc))
            raise error from None

    # -- emitting --------------------------------------------------------------------------------

    def wanted(self, key: str) -> bool:
        return bool(key) and not key.endswith("/") and selects(key, self.include, self.exclude)

    def arrival(self, key: str, size: int, mtime_ns: int, etag: str) -> Arrival:
        return Arrival(
            source=self.source,
            key=key,
            uri=f"s3://{self.bucket}/{self.prefix}{key}",
            size=size,
            mtime_ns=mtime_ns,
            etag=etag,
        )

    def deliver(self, arrival: Arrival) -> None:
        emit = self.emit
        if emit is None or self.stopping.is_set():
            return
        try:
            emit(arrival)
        except Exception:
            log.exception("emit failed", source=self.source, key=arrival.key)

    def is_known(self, key: str, size: int, mtime_ns: int, etag: str) -> bool:
        known = self.known
        if known is None:
            return False
        try:
            return bool(known(key, size, mtime_ns, etag))
        except Exception:
            log.exception("known() failed; treating the object as new", source=self.source, key=key)
            return False


def folder_prefix(prefix: str) -> str:
    """A prefix is a folder: no leading '/', exactly one trailing '/' (or empty)."""
    prefix = (prefix or "").lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def unquote_etag(etag: str) -> str:
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


def ns(when: datetime) -> int:
    """LastModified (an aware datetime) in integer nanoseconds since the epoch."""
    return calendar.timegm(when.utctimetuple()) * 1_000_000_000 + when.microsecond * 1000


def is_botocore(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(("botocore", "boto3", "s3transfer"))
