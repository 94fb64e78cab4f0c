"""S3 source: objects under ``s3://bucket/prefix`` become arrivals, by listing or by events.

How an object becomes an arrival::

    poll:    ListObjectsV2 every poll_interval ──────────────┐
    events:  SQS long poll ─> S3 event record (ObjectCreated) ┼─> known(key, size, mtime_ns, etag)? ─no─> emit
             ListObjectsV2 every reconcile_interval ─────────┘

- Keys are relative to ``prefix``, which is treated as a folder (``in`` means ``in/``), and are
  selected with ``include``/``exclude`` globs (daemon.globs.selects). Keys ending in ``/``
  (console "folders") are never arrivals. Keys are S3's own bytes: no Unicode normalisation, so
  an NFC and an NFD name are two objects, each read back exactly.
- A version is (key, ETag): ETags are stored without quotes; ``mtime_ns`` is LastModified (a
  listing) or the event time (an event). ``known()`` is asked with the ETag, so the ledger
  matches on ETag + size and the two clocks never matter.
- The same version is emitted once per process while it is unsettled (``_pending``); a poll
  listing emits it again only if neither ``known()`` nor ``settle()`` confirmed it after
  ``_REEMIT_AFTER`` seconds (an arrival lost inside the daemon).
- ``read(key, etag)`` is GetObject with ``IfMatch``: a version replaced after its
  announcement raises InputError("... changed ...").

Event mode (``queue_url``; S3 → SQS, or S3 → SNS → SQS with raw delivery off or on):

- One receiver thread long-polls the queue in slices of at most ``_MAX_WAIT`` s (and at most a
  third of the visibility timeout), so ``stop()`` returns within a slice and the same thread
  keeps the visibility of held messages extended (ChangeMessageVisibilityBatch) every third of
  ``visibility_timeout``. At most ``max_in_flight`` messages are held at once, so several
  daemons on one queue share the work.
- Every record of every message is parsed. ``s3:TestEvent`` messages are deleted. Records that
  are not ObjectCreated, or for another bucket, outside the prefix or not selected need no
  work. Keys are form-encoded in events: decoded with ``unquote_plus``.
- Delivery is at-least-once and unordered: a record for a version already pending attaches to
  it (one emit), one that ``known()`` confirms needs no work, an older version announced late
  is read with its own ETag and found "changed".
- A message is deleted when every one of its records is resolved: settled by the app
  (``settle``), needing no work, or superseded (its version was replaced: the newer version has
  its own event). Never earlier.
- When ``read`` fails otherwise (object gone, access denied, S3 unreachable) the app does not
  settle; the messages of that version are released (no longer extended), so SQS redelivers
  them after the visibility timeout and, after maxReceiveCount, moves them to the queue's DLQ.
- ``stop()`` releases the messages still held (visibility 0), so another daemon — or this one
  after a restart — gets them at once; what this daemon already queued is in its ledger, and a
  redelivered record it knows is deleted as a duplicate.

Periodic work is returned by ``periodic()`` for the app's scheduler: the poll listing, or the
reconciliation listing in event mode (which skips objects younger than ``reconcile_grace``,
whose events are most likely still on their way). ``start()`` runs the startup listing in poll
mode on a short-lived thread; event mode relies on the queue (events wait there while the
daemon is down) and on reconciliation.
"""

from __future__ import annotations

import calendar
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import structlog

from daemon import aws
from daemon.errors import DarkroomError, InputError
from daemon.rules.globs import compile_glob, selects
from daemon.types import Arrival
from daemon.sources import Emit, Known

log = structlog.get_logger("darkroom.sources")

__all__ = ["S3Source", "parse_message"]

_PAGE_SIZE = 1000  # keys per ListObjectsV2 page
_MAX_WAIT = 5  # seconds per receive call: stop() latency
_EMPTY_PAUSE = 1.0  # seconds between empty receives with wait_time 0 (short polling)
_ERROR_PAUSE = 5.0  # seconds after a failed receive
_REEMIT_AFTER = 600.0  # seconds before a listing emits an unconfirmed version again
_MAX_HOLD = 11 * 3600.0  # SQS refuses to extend a message past 12 h after its first receipt
_JOIN_TIMEOUT = _MAX_WAIT + 10.0

Version = tuple[str, str]  # (key relative to the prefix, etag)


@dataclass
class _Pending:
    """An emitted version waiting for ``settle``; the messages that announced it."""

    arrival: Arrival
    emitted_at: float
    messages: set[str] = field(default_factory=set)  # SQS message ids


@dataclass
class _Held:
    """A received SQS message we have not deleted or released yet."""

    message_id: str
    receipt: str
    received_at: float
    extended_at: float
    waiting: set[Version] = field(default_factory=set)  # its records not resolved yet


@dataclass(frozen=True)
class Record:
    """One ObjectCreated record of an S3 event notification."""

    bucket: str
    key: str  # full object key, decoded
    size: int
    etag: str | None
    mtime_ns: int
    event: str


def parse_message(body: str) -> tuple[str, list[Record]]:
    """Classify an SQS message body: ``("test", [])`` for s3:TestEvent, ``("records", [...])``
    for S3 event notifications (ObjectCreated records only; SNS envelopes unwrapped), and
    ``("unknown", [])`` for anything else."""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and data.get("Type") == "Notification" and "Message" in data:
            data = json.loads(data["Message"])  # S3 -> SNS -> SQS without raw delivery
    except (TypeError, ValueError):
        return "unknown", []
    if not isinstance(data, dict):
        return "unknown", []
    if data.get("Event") == "s3:TestEvent":
        return "test", []
    records = data.get("Records")
    if not isinstance(records, list):
        return "unknown", []
    out = []
    for raw in records:
        try:
            name = str(raw.get("eventName", ""))
            name = name[3:] if name.startswith("s3:") else name
            if raw.get("eventSource", "aws:s3") != "aws:s3" or not name.startswith(
                "ObjectCreated:"
            ):
                continue
            s3 = raw["s3"]
            etag = s3["object"].get("eTag") or s3["object"].get("etag")
            out.append(
                Record(
                    bucket=s3["bucket"]["name"],
                    key=unquote_plus(s3["object"]["key"]),
                    size=int(s3["object"].get("size", 0)),
                    etag=_unquote_etag(etag) if etag else None,
                    mtime_ns=_event_time_ns(raw.get("eventTime")),
                    event=name,
                )
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            log.warning("malformed S3 event record skipped", record=str(raw)[:500])
    return "records", out


class S3Source:
    """Emits objects under ``s3://bucket/prefix`` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        bucket: str,
        prefix: str = "",
        *,
        mode: str = "poll",
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        poll_interval: float = 60.0,
        queue_url: str | None = None,
        reconcile_interval: float = 900.0,
        reconcile_grace: float = 60.0,
        visibility_timeout: int = 300,
        wait_time: int = 20,
        max_in_flight: int = 20,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        if mode not in ("poll", "events"):
            raise ValueError(f"source {name!r}: mode must be 'poll' or 'events', got {mode!r}")
        if mode == "events" and not queue_url:
            raise ValueError(
                f"source {name!r}: mode 'events' needs queue_url (the SQS queue that "
                "receives the bucket's notifications; see docs/s3.md)"
            )
        for label, patterns in (("include", include), ("exclude", exclude)):
            if isinstance(patterns, str):
                raise ValueError(f"source {name!r}: {label} must be a list of glob patterns")
            for pattern in patterns:
                try:
                    compile_glob(pattern)
                except ValueError as exc:
                    raise ValueError(f"source {name!r}: {label}: {exc}") from None
        if visibility_timeout < 3:
            raise ValueError(f"source {name!r}: visibility_timeout must be >= 3 s")
        self.name = name
        self.bucket = bucket
        self.prefix = _folder(prefix)
        self.mode = mode
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.poll_interval = float(poll_interval)
        self.queue_url = queue_url
        self.reconcile_interval = float(reconcile_interval)
        self.reconcile_grace = float(reconcile_grace)
        self.visibility_timeout = int(visibility_timeout)
        self.wait_time = int(wait_time)
        self.max_in_flight = max(1, int(max_in_flight))
        self.endpoint_url = endpoint_url
        self.region = region

        self._s3: Any = None
        self._sqs: Any = None
        self._lock = threading.Lock()  # guards the maps below
        self._pending: dict[Version, _Pending] = {}
        self._held: dict[str, _Held] = {}
        self._seen: dict[str, str] = {}  # key -> etag confirmed handled (keeps listings cheap)
        self._warned: set[str] = set()  # message ids of unknown bodies, logged once
        self._scan_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._running = False
        self._emit: Emit | None = None
        self._known: Known | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"S3Source({self.name!r}, {self.where!r}, mode={self.mode!r})"

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @classmethod
    def from_config(cls, name: str, config: Any) -> S3Source:
        return cls(
            name,
            config.bucket,
            config.prefix,
            mode=config.mode,
            include=config.include,
            exclude=config.exclude,
            poll_interval=config.poll_interval,
            queue_url=config.queue_url,
            reconcile_interval=config.reconcile_interval,
            reconcile_grace=config.reconcile_grace,
            visibility_timeout=config.visibility_timeout,
            wait_time=config.wait_time,
            max_in_flight=config.max_in_flight,
            endpoint_url=config.endpoint_url,
            region=config.region,
        )._with_quarantine(config.quarantine_prefix)

    quarantine_prefix: str | None = None

    def _with_quarantine(self, prefix: str | None) -> S3Source:
        self.quarantine_prefix = prefix
        return self

    def quarantine(self, key: str, record: dict[str, Any], where: str | None = None) -> str | None:
        """Objects stay where they are (moving needs s3:DeleteObject on the inbox); the
        record ``<key>.reason.json`` goes under ``quarantine_prefix`` when one is set."""
        prefix = where or self.quarantine_prefix
        if not prefix:
            return None
        target = prefix.rstrip("/") + "/" + key + ".reason.json"
        with aws.translated(f"s3://{self.bucket}/{target}", action="write", error=InputError):
            self.s3.put_object(
                Bucket=self.bucket,
                Key=target,
                Body=json.dumps(record, indent=2).encode(),
                ContentType="application/json",
            )
        return f"s3://{self.bucket}/{target}"

    # -- clients ---------------------------------------------------------------------------

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = aws.client("s3", endpoint_url=self.endpoint_url, region=self.region)
        return self._s3

    @property
    def sqs(self) -> Any:
        if self._sqs is None:
            self._sqs = aws.client(
                "sqs",
                endpoint_url=self.endpoint_url,
                region=self.region or _queue_region(self.queue_url),
            )
        return self._sqs

    # -- Source protocol -------------------------------------------------------------------

    def start(self, emit: Emit, known: Known) -> None:
        """Make the clients, then start the receiver (events) or the startup listing (poll)."""
        with self._state_lock:
            if self._running:
                raise RuntimeError(f"source {self.name!r} is already started")
            self._running = True
            self._emit, self._known = emit, known
            self._stopping = threading.Event()
            self.s3  # noqa: B018 - clients are made here, not concurrently from two threads
            if self.mode == "events":
                self.sqs  # noqa: B018
                target, label = self._receive_loop, "darkroom-sqs"
            else:
                target, label = self._startup_scan, "darkroom-s3-scan"
            thread = threading.Thread(target=target, name=f"{label}:{self.name}", daemon=True)
            self._threads = [thread]
            thread.start()

    def periodic(self) -> list[tuple[Callable[[], None], float, str]]:
        """(function, interval s, job name) for the app's scheduler."""
        if self.mode == "poll":
            return [(self.scan, self.poll_interval, f"s3-poll:{self.name}")]
        return [(self.scan, self.reconcile_interval, f"s3-reconcile:{self.name}")]

    def scan(self) -> None:
        """List the prefix once and emit every selected version not handled yet.

        In event mode this is the reconciliation: objects younger than ``reconcile_grace``
        are left to their events. A listing already running makes this call a no-op.
        """
        if self._known is None:
            raise RuntimeError(f"source {self.name!r}: scan() before start()")
        if not self._scan_lock.acquire(blocking=False):
            return
        try:
            self._list_and_offer()
        except DarkroomError as exc:
            log.warning(
                "cannot list the source", source=self.name, where=self.where, reason=str(exc)
            )
        finally:
            self._scan_lock.release()

    def stop(self) -> None:
        """End the receiver within one receive slice and release the messages still held."""
        with self._state_lock:
            if not self._running:
                return
            self._running = False
            self._stopping.set()
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(_JOIN_TIMEOUT)
                    if thread.is_alive():
                        log.warning(
                            "thread did not stop in time", source=self.name, thread=thread.name
                        )
            self._threads = []
            if self.mode == "events":
                self._release_all()

    def settle(self, arrival: Arrival, outcome: str) -> None:
        """All work for this version is committed (or was never needed): delete its messages
        once none of their other records is still waiting. Never raises."""
        etag = _unquote_etag(arrival.etag) if arrival.etag else None
        try:
            self._resolve((arrival.key, etag or ""), outcome)
        except Exception:
            log.exception("settle failed", source=self.name, key=arrival.key)

    def read(self, key: str, etag: str | None = None) -> bytes:
        """The object's bytes; with ``etag``, only that version (InputError "changed" otherwise)."""
        full = self.prefix + key
        where = f"s3://{self.bucket}/{full}"
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if etag:
            args["IfMatch"] = f'"{_unquote_etag(etag)}"'
        try:
            return self.s3.get_object(**args)["Body"].read()
        except Exception as exc:
            if _is_botocore(exc):
                error = aws.translate(exc, where, action="read", error=InputError)
            else:  # a dropped connection while streaming the body, say: worth another try
                error = InputError(f"cannot read {where}: {type(exc).__name__}: {exc}")
                error.retryable = True
            version = (key, _unquote_etag(etag) if etag else "")
            self._read_failed(version, superseded=bool(etag) and aws.is_precondition_failed(exc))
            raise error from None

    # -- listing ---------------------------------------------------------------------------

    def _list_and_offer(self) -> None:
        started = time.time()
        horizon = started - self.reconcile_grace if self.mode == "events" else None
        listed: set[str] = set()
        paginator = self.s3.get_paginator("list_objects_v2")
        with aws.translated(self.where, action="list"):
            for page in paginator.paginate(
                Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": _PAGE_SIZE}
            ):
                if self._stopping.is_set():
                    return
                for obj in page.get("Contents", ()):
                    key = obj["Key"][len(self.prefix) :]
                    listed.add(key)
                    if not self._wanted(key):
                        continue
                    mtime_ns = _ns(obj["LastModified"])
                    if horizon is not None and mtime_ns / 1e9 > horizon:
                        continue  # its event is most likely on its way
                    self._offer(
                        key, int(obj.get("Size", 0)), mtime_ns, _unquote_etag(obj.get("ETag", ""))
                    )
        with self._lock:  # a complete listing: forget what is gone, so memory stays bounded
            for key in [k for k in self._seen if k not in listed]:
                del self._seen[key]

    def _offer(self, key: str, size: int, mtime_ns: int, etag: str) -> None:
        version = (key, etag)
        now = time.monotonic()
        with self._lock:
            if self._seen.get(key) == etag:
                return
            pending = self._pending.get(version)
            if pending is not None and (
                pending.messages or now - pending.emitted_at < _REEMIT_AFTER
            ):
                return
        if self._is_known(key, size, mtime_ns, etag):
            with self._lock:
                self._seen[key] = etag
                self._pending.pop(version, None)
            return
        arrival = self._arrival(key, size, mtime_ns, etag)
        with self._lock:
            current = self._pending.get(version)
            if current is not None and (
                current.messages or now - current.emitted_at < _REEMIT_AFTER
            ):
                return
            self._pending[version] = _Pending(arrival, now, current.messages if current else set())
        self._deliver(arrival)

    # -- the receiver thread ---------------------------------------------------------------

    def _receive_loop(self) -> None:
        stopping = self._stopping
        slice_ = max(0, min(self.wait_time, _MAX_WAIT, self.visibility_timeout // 3))
        while not stopping.is_set():
            try:
                self._extend_due()
                with self._lock:
                    room = self.max_in_flight - len(self._held)
                if room <= 0:
                    stopping.wait(min(1.0, self.visibility_timeout / 6))
                    continue
                response = self.sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=min(10, room),
                    WaitTimeSeconds=slice_,
                    VisibilityTimeout=self.visibility_timeout,
                    AttributeNames=["ApproximateReceiveCount"],
                )
                messages = response.get("Messages", [])
                if stopping.is_set():
                    self._change_visibility(
                        [(m["MessageId"], m["ReceiptHandle"]) for m in messages], 0
                    )
                    return
                for message in messages:
                    try:
                        self._handle_message(message)
                    except Exception:  # released: SQS redelivers it after the visibility timeout
                        with self._lock:
                            self._held.pop(message["MessageId"], None)
                        log.exception(
                            "queue message not handled; it comes back later",
                            source=self.name,
                            message_id=message["MessageId"],
                        )
                if not messages and slice_ == 0:
                    stopping.wait(_EMPTY_PAUSE)
            except Exception as exc:
                reason = (
                    str(aws.translate(exc, self.queue_url or "", action="receive from"))
                    if _is_botocore(exc)
                    else repr(exc)
                )
                log.warning(
                    "receiving from the queue failed; trying again",
                    source=self.name,
                    queue=self.queue_url,
                    reason=reason,
                )
                stopping.wait(_ERROR_PAUSE)

    def _handle_message(self, message: dict[str, Any]) -> None:
        message_id, receipt = message["MessageId"], message["ReceiptHandle"]
        kind, records = parse_message(message.get("Body", ""))
        if kind == "test":
            log.info("s3:TestEvent received and deleted", source=self.name)
            self._delete(message_id, receipt)
            return
        if kind == "unknown":
            if message_id not in self._warned:
                if len(self._warned) > 10_000:
                    self._warned.clear()
                self._warned.add(message_id)
                log.warning(
                    "queue message is not an S3 event notification; left for the queue's "
                    "redrive policy",
                    source=self.name,
                    message_id=message_id,
                    body=message.get("Body", "")[:200],
                )
            return
        now = time.monotonic()
        wanted: list[tuple[Record, str]] = []
        for record in records:
            if record.bucket != self.bucket or not record.key.startswith(self.prefix):
                continue
            key = record.key[len(self.prefix) :]
            if self._wanted(key):
                wanted.append((record, key))
        with self._lock:
            held = self._held.get(message_id)
            if held is None:
                held = self._held[message_id] = _Held(message_id, receipt, now, now)
            else:  # redelivered while we still hold it (an expired visibility): newest receipt
                held.receipt, held.extended_at = receipt, now
        to_emit: list[Arrival] = []
        for record, key in wanted:
            etag = record.etag or self._head_etag(record.key)
            if etag is None:
                continue  # gone already: nothing to do for this record
            version = (key, etag)
            with self._lock:
                pending = self._pending.get(version)
                if pending is not None:  # a duplicate delivery, or also listed: one emit
                    pending.messages.add(message_id)
                    held.waiting.add(version)
                    continue
            if self._is_known(key, record.size, record.mtime_ns, etag):
                with self._lock:
                    self._seen[key] = etag
                continue
            arrival = self._arrival(key, record.size, record.mtime_ns, etag)
            with self._lock:
                pending = self._pending.get(version)
                if pending is None:
                    self._pending[version] = _Pending(arrival, now, {message_id})
                    to_emit.append(arrival)
                else:
                    pending.messages.add(message_id)
                held.waiting.add(version)
        with self._lock:
            done = not held.waiting and self._held.get(message_id) is held
            if done:
                del self._held[message_id]
        if done:
            self._delete(message_id, held.receipt)
        for arrival in to_emit:
            self._deliver(arrival)

    def _head_etag(self, full_key: str) -> str | None:
        """The ETag of an object whose event carried none (some S3-compatible stores)."""
        try:
            return _unquote_etag(self.s3.head_object(Bucket=self.bucket, Key=full_key)["ETag"])
        except Exception as exc:
            if _is_botocore(exc) and aws.is_not_found(exc):
                return None
            raise

    # -- resolving records and messages ----------------------------------------------------

    def _resolve(self, version: Version, outcome: str) -> None:
        to_delete: list[tuple[str, str]] = []
        with self._lock:
            pending = self._pending.pop(version, None)
            if outcome in ("done", "failed", "partial", "ignored", "duplicate"):
                self._seen[version[0]] = version[1]
            if pending is None:
                return
            for message_id in pending.messages:
                held = self._held.get(message_id)
                if held is None:
                    continue
                held.waiting.discard(version)
                if not held.waiting:
                    del self._held[message_id]
                    to_delete.append((message_id, held.receipt))
        for message_id, receipt in to_delete:
            self._delete(message_id, receipt)
        if to_delete:
            log.debug(
                "messages deleted",
                source=self.name,
                key=version[0],
                outcome=outcome,
                messages=len(to_delete),
            )

    def _read_failed(self, version: Version, superseded: bool) -> None:
        """A version could not be read. Replaced by a newer one: its records need no more work.
        Otherwise: release its messages so SQS redelivers them (and in the end dead-letters)."""
        if superseded:
            self._resolve(version, "superseded")
            return
        with self._lock:
            pending = self._pending.pop(version, None)
            if pending is None:
                return
            for message_id in pending.messages:
                self._held.pop(message_id, None)  # no longer extended: visible again soon

    def _delete(self, message_id: str, receipt: str) -> None:
        try:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
        except Exception as exc:  # redelivered later, then deleted as a duplicate
            log.warning(
                "cannot delete a queue message; it will come back and be deduplicated",
                source=self.name,
                message_id=message_id,
                reason=str(aws.translate(exc, self.queue_url or "", action="delete from"))
                if _is_botocore(exc)
                else repr(exc),
            )

    def _extend_due(self) -> None:
        now = time.monotonic()
        third = self.visibility_timeout / 3
        due: list[tuple[str, str]] = []
        expired: list[str] = []
        with self._lock:
            for held in self._held.values():
                if now - held.received_at > _MAX_HOLD:
                    expired.append(held.message_id)
                elif now - held.extended_at >= third:
                    held.extended_at = now
                    due.append((held.message_id, held.receipt))
            for message_id in expired:
                del self._held[message_id]
        for message_id in expired:
            log.warning(
                "message held for 11 hours without being settled; released",
                source=self.name,
                message_id=message_id,
            )
        self._change_visibility(due, self.visibility_timeout)

    def _change_visibility(self, messages: list[tuple[str, str]], timeout: int) -> None:
        for start in range(0, len(messages), 10):
            batch = messages[start : start + 10]
            entries = [
                {"Id": str(i), "ReceiptHandle": receipt, "VisibilityTimeout": timeout}
                for i, (_, receipt) in enumerate(batch)
            ]
            try:
                result = self.sqs.change_message_visibility_batch(
                    QueueUrl=self.queue_url, Entries=entries
                )
                failed = result.get("Failed", [])
            except Exception as exc:
                failed = [{"Id": e["Id"], "Message": repr(exc)} for e in entries]
            for failure in failed:
                log.warning(
                    "cannot change a message's visibility",
                    source=self.name,
                    message_id=batch[int(failure["Id"])][0],
                    timeout=timeout,
                    reason=failure.get("Message") or failure.get("Code"),
                )

    def _release_all(self) -> None:
        with self._lock:
            held = [(h.message_id, h.receipt) for h in self._held.values()]
            self._held.clear()
            for pending in self._pending.values():
                pending.messages.clear()
        if held:
            self._change_visibility(held, 0)
            log.info(
                "unsettled queue messages released for redelivery",
                source=self.name,
                messages=len(held),
            )

    # -- helpers ---------------------------------------------------------------------------

    def _startup_scan(self) -> None:
        try:
            self.scan()
        except Exception:
            log.exception("startup listing failed", source=self.name)

    def _wanted(self, key: str) -> bool:
        return bool(key) and not key.endswith("/") and selects(key, self.include, self.exclude)

    def _arrival(self, key: str, size: int, mtime_ns: int, etag: str) -> Arrival:
        return Arrival(
            source=self.name,
            key=key,
            uri=f"s3://{self.bucket}/{self.prefix}{key}",
            size=size,
            mtime_ns=mtime_ns,
            etag=etag,
        )

    def _deliver(self, arrival: Arrival) -> None:
        emit = self._emit
        if emit is None or self._stopping.is_set():
            return
        try:
            emit(arrival)
        except Exception:
            log.exception("emit failed", source=self.name, key=arrival.key)

    def _is_known(self, key: str, size: int, mtime_ns: int, etag: str) -> bool:
        known = self._known
        if known is None:
            return False
        try:
            return bool(known(key, size, mtime_ns, etag))
        except Exception:
            log.exception("known() failed; treating the object as new", source=self.name, key=key)
            return False


def _folder(prefix: str) -> str:
    """A prefix is a folder: no leading '/', exactly one trailing '/' (or empty)."""
    prefix = (prefix or "").lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def _queue_region(queue_url: str | None) -> str | None:
    """The region in an AWS queue URL (https://sqs.eu-west-1.amazonaws.com/...), else None."""
    from urllib.parse import urlsplit

    host = urlsplit(queue_url or "").hostname or ""
    parts = host.split(".")
    if len(parts) >= 4 and parts[0] == "sqs" and parts[2] == "amazonaws":
        return parts[1]
    return None


def _unquote_etag(etag: str) -> str:
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


def _ns(when: Any) -> int:
    """LastModified (an aware datetime) in integer nanoseconds since the epoch."""
    return calendar.timegm(when.utctimetuple()) * 1_000_000_000 + when.microsecond * 1000


def _event_time_ns(text: Any) -> int:
    """An S3 eventTime ("2026-11-27T01:07:49.180Z") in ns; 0 when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return 0
    from datetime import datetime

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return 0
    return _ns(when)


def _is_botocore(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(("botocore", "boto3", "s3transfer"))
