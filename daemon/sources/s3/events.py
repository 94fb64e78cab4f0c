"""S3 ``mode: events``: S3 event notifications from an SQS queue, plus a reconciling listing.

Set up with ``queue_url`` (S3 → SQS, or S3 → SNS → SQS with raw delivery off or on):

- One receiver thread long-polls the queue in slices of at most ``MAX_WAIT`` s (and at most a
  third of the visibility timeout), so ``stop()`` returns within a slice and the same thread
  keeps the visibility of held messages extended (ChangeMessageVisibilityBatch) every third of
  ``visibility_timeout``. At most ``max_in_flight`` messages are held at once, so several
  daemons on one queue share the work.
- Every record of every message is parsed (:mod:`.notifications`). ``s3:TestEvent`` messages are deleted. Records that
  are not ObjectCreated, or for another bucket, outside the prefix or not selected need no
  work. Keys are form-encoded in events: decoded with ``unquote_plus``.
- Delivery is at-least-once and unordered: a record for a version already pending attaches to
  it (one emit), one that ``known()`` confirms needs no work, an older version announced late
  is read with its own ETag and found "changed".
- A message is deleted when every one of its records is resolved: settled by the app
  (``settle``), needing no work, or superseded (its version was replaced: the newer version has
  its own event). Never earlier.
- When a read fails otherwise (object gone, access denied, S3 unreachable) the app does not
  settle; the messages of that version are released (no longer extended), so SQS redelivers
  them after the visibility timeout and, after maxReceiveCount, moves them to the queue's DLQ.
- ``stop()`` releases the messages still held (visibility 0), so another daemon — or this one
  after a restart — gets them at once; what this daemon already queued is in its ledger, and a
  redelivered record it knows is deleted as a duplicate. Stopping is bounded: the release uses
  a one-try client with short timeouts (``aws.stop_path_client``) and gives up after
  ``RELEASE_BUDGET`` s (an unreachable queue redelivers after the visibility timeout anyway),
  and the receiver's client times out a read at ``MAX_WAIT + 10`` s (no receive lasts longer).

The reconciliation listing (every ``reconcile_interval`` s on the app's scheduler) skips objects
younger than ``reconcile_grace``, whose events are most likely still on their way. There is no
startup listing: events wait in the queue while the daemon is down.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog

from daemon import aws
from daemon.sources.s3.common import PendingVersion, PrefixObjects, Version, unquote_etag
from daemon.sources.s3.common import is_botocore as _is_botocore
from daemon.sources.s3.notifications import Record, parse_message
from daemon.types import Arrival

log = structlog.get_logger("darkroom.sources")

__all__ = ["MAX_WAIT", "EventMode", "queue_region"]

MAX_WAIT = 5  # seconds per receive call: stop() latency
_EMPTY_PAUSE = 1.0  # seconds between empty receives with wait_time 0 (short polling)
_ERROR_PAUSE = 5.0  # seconds after a failed receive
_MAX_HOLD = 11 * 3600.0  # SQS refuses to extend a message past 12 h after its first receipt
RELEASE_BUDGET = 5.0  # seconds stop() may spend releasing held messages
_READ_TIMEOUT = MAX_WAIT + 10.0  # a receive answers within its slice; longer is a dead endpoint


@dataclass
class _Held:
    """A received SQS message not deleted or released yet."""

    message_id: str
    receipt: str
    received_at: float
    extended_at: float
    waiting: set[Version] = field(default_factory=set)  # its records not resolved yet


class EventMode:
    """Receives, holds, extends and deletes the queue's messages for one S3 source."""

    name = "events"
    task = "s3-reconcile"  # the scheduler job: "s3-reconcile:<source>", every ``interval`` s

    def __init__(
        self,
        objects: PrefixObjects,
        queue_url: str,
        *,
        reconcile_interval: float,
        reconcile_grace: float,
        visibility_timeout: int,
        wait_time: int,
        max_in_flight: int,
    ) -> None:
        self.objects = objects
        self.queue_url = queue_url
        self.interval = float(reconcile_interval)
        self.listing_grace: float | None = float(reconcile_grace)
        self.visibility_timeout = int(visibility_timeout)
        self.wait_time = int(wait_time)
        self.max_in_flight = max(1, int(max_in_flight))
        self.thread_name = f"darkroom-sqs:{objects.source}"
        self._held: dict[str, _Held] = {}  # guarded by objects.lock, like pending
        self._warned: set[str] = set()  # message ids of unknown bodies, logged once
        self._foreign_buckets: set[str] = set()  # other buckets whose events arrived, logged once
        self._last_receive_error: str | None = None  # logged at warning once per kind
        self._client: Any = None

    @property
    def sqs(self) -> Any:
        """The SQS client, made on first use (the source makes it in ``start()``)."""
        if self._client is None:
            self._client = aws.client(
                "sqs",
                endpoint_url=self.objects.endpoint_url,
                region=self.objects.region or queue_region(self.queue_url),
                read_timeout=_READ_TIMEOUT,
            )
        return self._client

    def _stop_client(self) -> Any:
        """A one-try, short-timeout SQS client for the release in ``stop()``."""
        return aws.stop_path_client(
            "sqs",
            endpoint_url=self.objects.endpoint_url,
            region=self.objects.region or queue_region(self.queue_url),
        )

    @property
    def _source(self) -> str:
        return self.objects.source

    # -- the receiver thread ---------------------------------------------------------------------

    def run(self) -> None:
        """Receive until the source stops; each failure is logged and retried after a pause."""
        stopping = self.objects.stopping
        slice_ = max(0, min(self.wait_time, MAX_WAIT, self.visibility_timeout // 3))
        while not stopping.is_set():
            try:
                self._extend_due()
                with self.objects.lock:
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
                        with self.objects.lock:
                            self._held.pop(message["MessageId"], None)
                        log.exception(
                            "queue message not handled; it comes back later",
                            source=self._source,
                            message_id=message["MessageId"],
                        )
                if not messages and slice_ == 0:
                    stopping.wait(_EMPTY_PAUSE)
            except Exception as exc:
                # Once per kind of failure at warning level; while it lasts, the health
                # checks report it (status, /readyz, STATUS) and this stays at debug.
                reason = self._reason(exc, "receive from")
                report = log.warning if reason != self._last_receive_error else log.debug
                self._last_receive_error = reason
                report(
                    "receiving from the queue failed; trying again",
                    source=self._source,
                    queue=self.queue_url,
                    reason=reason,
                )
                stopping.wait(_ERROR_PAUSE)
                continue
            if self._last_receive_error is not None:
                log.info("receiving from the queue works again", source=self._source)
                self._last_receive_error = None

    def _handle_message(self, message: dict[str, Any]) -> None:
        message_id, receipt = message["MessageId"], message["ReceiptHandle"]
        kind, records = parse_message(message.get("Body", ""))
        if kind == "test":
            log.info("s3:TestEvent received and deleted", source=self._source)
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
                    source=self._source,
                    message_id=message_id,
                    body=message.get("Body", "")[:200],
                )
            return
        objects, lock = self.objects, self.objects.lock
        foreign = {r.bucket for r in records if r.bucket != objects.bucket}
        if records and len(foreign) == len({r.bucket for r in records}):
            # Every record is another bucket's: most likely this source names the wrong
            # bucket (or the notification points at the wrong queue). Never acknowledge what
            # is not ours: the message is left to the queue's redrive policy.
            for other in sorted(foreign - self._foreign_buckets):
                self._foreign_buckets.add(other)
                log.warning(
                    "queue delivers events of another bucket; left for the queue's redrive policy",
                    source=self._source,
                    queue=self.queue_url,
                    event_bucket=other,
                    source_bucket=objects.bucket,
                    fix="set the source's bucket to the one whose notifications feed this queue,"
                    " or point that bucket's notification at this source's queue",
                )
            return
        now = time.monotonic()
        wanted: list[tuple[Record, str]] = []
        for record in records:
            if record.bucket != objects.bucket or not record.key.startswith(objects.prefix):
                continue
            key = record.key[len(objects.prefix) :]
            if objects.wanted(key):
                wanted.append((record, key))
        with lock:
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
            with lock:
                pending = objects.pending.get(version)
                if pending is not None:  # a duplicate delivery, or also listed: one emit
                    pending.messages.add(message_id)
                    held.waiting.add(version)
                    continue
            if objects.is_known(key, record.size, record.mtime_ns, etag):
                with lock:
                    objects.seen[key] = etag
                continue
            arrival = objects.arrival(key, record.size, record.mtime_ns, etag)
            with lock:
                pending = objects.pending.get(version)
                if pending is None:
                    objects.pending[version] = PendingVersion(arrival, now, {message_id})
                    to_emit.append(arrival)
                else:
                    pending.messages.add(message_id)
                held.waiting.add(version)
        with lock:
            done = not held.waiting and self._held.get(message_id) is held
            if done:
                del self._held[message_id]
        if done:
            self._delete(message_id, held.receipt)
        for arrival in to_emit:
            objects.deliver(arrival)

    def _head_etag(self, full_key: str) -> str | None:
        """The ETag of an object whose event carried none (some S3-compatible stores)."""
        objects = self.objects
        try:
            head = objects.s3.head_object(Bucket=objects.bucket, Key=full_key)
            return unquote_etag(head["ETag"])
        except Exception as exc:
            if _is_botocore(exc) and aws.is_not_found(exc):
                return None
            raise

    # -- resolving records and messages ------------------------------------------------------------

    def settle(self, version: Version, outcome: str) -> None:
        """Resolve a version: delete each message once none of its records still waits."""
        to_delete: list[tuple[str, str]] = []
        with self.objects.lock:
            pending = self.objects.settled_locked(version, outcome)
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
                source=self._source,
                key=version[0],
                outcome=outcome,
                messages=len(to_delete),
            )

    def read_failed(self, version: Version, superseded: bool) -> None:
        """A version could not be read. Replaced by a newer one: its records need no more work.
        Otherwise: release its messages so SQS redelivers them (and in the end dead-letters)."""
        if superseded:
            self.settle(version, "superseded")
            return
        with self.objects.lock:
            pending = self.objects.settled_locked(version, "unreadable")
            if pending is None:
                return
            for message_id in pending.messages:
                self._held.pop(message_id, None)  # no longer extended: visible again soon

    def stop(self) -> None:
        """Release the messages still held (visibility 0) so they are redelivered at once."""
        with self.objects.lock:
            held = [(h.message_id, h.receipt) for h in self._held.values()]
            self._held.clear()
            for pending in self.objects.pending.values():
                pending.messages.clear()
        if held:
            self._change_visibility(
                held, 0, client=self._stop_client(), deadline=time.monotonic() + RELEASE_BUDGET
            )
            log.info(
                "unsettled queue messages released for redelivery",
                source=self._source,
                messages=len(held),
            )

    # -- SQS calls ---------------------------------------------------------------------------------

    def _delete(self, message_id: str, receipt: str) -> None:
        try:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
        except Exception as exc:  # redelivered later, then deleted as a duplicate
            log.warning(
                "cannot delete a queue message; it will come back and be deduplicated",
                source=self._source,
                message_id=message_id,
                reason=self._reason(exc, "delete from"),
            )

    def _extend_due(self) -> None:
        now = time.monotonic()
        third = self.visibility_timeout / 3
        due: list[tuple[str, str]] = []
        expired: list[str] = []
        with self.objects.lock:
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
                source=self._source,
                message_id=message_id,
            )
        self._change_visibility(due, self.visibility_timeout)

    def _change_visibility(
        self,
        messages: list[tuple[str, str]],
        timeout: int,
        *,
        client: Any = None,
        deadline: float | None = None,
    ) -> None:
        """Set the visibility of ``messages``, in batches of 10, with ``client`` (else the
        receiver's), skipping the batches left when ``deadline`` (monotonic) has passed."""
        sqs = client if client is not None else self.sqs
        for start in range(0, len(messages), 10):
            if deadline is not None and time.monotonic() > deadline:
                log.warning(
                    "queue messages not released in time; the queue redelivers them after "
                    "their visibility timeout",
                    source=self._source,
                    messages=len(messages) - start,
                )
                return
            batch = messages[start : start + 10]
            entries = [
                {"Id": str(i), "ReceiptHandle": receipt, "VisibilityTimeout": timeout}
                for i, (_, receipt) in enumerate(batch)
            ]
            try:
                result = sqs.change_message_visibility_batch(
                    QueueUrl=self.queue_url, Entries=entries
                )
                failed = result.get("Failed", [])
            except Exception as exc:
                failed = [{"Id": e["Id"], "Message": repr(exc)} for e in entries]
            for failure in failed:
                log.warning(
                    "cannot change a message's visibility",
                    source=self._source,
                    message_id=batch[int(failure["Id"])][0],
                    timeout=timeout,
                    reason=failure.get("Message") or failure.get("Code"),
                )

    def _reason(self, exc: Exception, action: str) -> str:
        if _is_botocore(exc):
            return str(aws.translate(exc, self.queue_url, action=action))
        return repr(exc)


def queue_region(queue_url: str | None) -> str | None:
    """The region in an AWS queue URL (https://sqs.eu-west-1.amazonaws.com/...), else None."""
    host = urlsplit(queue_url or "").hostname or ""
    parts = host.split(".")
    if len(parts) >= 4 and parts[0] == "sqs" and parts[2] == "amazonaws":
        return parts[1]
    return None
