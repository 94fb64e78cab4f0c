"""S3 source: objects under ``s3://bucket/prefix`` become arrivals, by listing or by events.

How an object becomes an arrival::

    poll:    ListObjectsV2 every poll_interval ──────────────┐
    events:  SQS long poll ─> S3 event record (ObjectCreated) ┼─> known(key, size, mtime_ns, etag)? ─no─> emit
             ListObjectsV2 every reconcile_interval ─────────┘

- :mod:`.common`: what both modes share — key selection, versions (key + ETag), the listing,
  reads with ``IfMatch``.
- :mod:`.poll`: ``mode: poll``, the listing alone (at start and on the app's scheduler).
- :mod:`.events`: ``mode: events``, the SQS receiver and its message bookkeeping, plus a
  reconciling listing for events that never came.

``S3Source`` is the one class the registry names: it checks the options and hands the work of
its mode to a ``PollMode`` or an ``EventMode``. Failed inputs stay where they are (moving needs
s3:DeleteObject on the inbox); their reason record goes under ``quarantine_prefix``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from daemon import aws
from daemon.errors import InputError
from daemon.sources.base import Emit, Known, PeriodicTask, Source
from daemon.sources.s3.common import PrefixObjects, Version, unquote_etag
from daemon.sources.s3.events import MAX_WAIT, EventMode
from daemon.sources.s3.notifications import parse_message
from daemon.sources.s3.poll import PollMode
from daemon.types import Arrival

if TYPE_CHECKING:
    from daemon.config.settings import S3SourceConfig

log = structlog.get_logger("darkroom.sources")

__all__ = ["S3Source", "parse_message"]

# Seconds stop() waits for the receiver (or the startup listing): a receive slice ends
# within MAX_WAIT on a live endpoint; a thread stuck on a dead one is a daemon thread and
# is left behind rather than holding the daemon's stop.
_JOIN_TIMEOUT = MAX_WAIT + 2.0


class S3Source(Source):
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
        quarantine_prefix: str | None = None,
    ) -> None:
        if mode not in ("poll", "events"):
            raise ValueError(f"source {name!r}: mode must be 'poll' or 'events', got {mode!r}")
        if mode == "events" and not queue_url:
            raise ValueError(
                f"source {name!r}: mode 'events' needs queue_url (the SQS queue that "
                "receives the bucket's notifications; see docs/s3.md)"
            )
        if visibility_timeout < 3:
            raise ValueError(f"source {name!r}: visibility_timeout must be >= 3 s")
        self.name = name
        self.objects = PrefixObjects(
            name,
            bucket,
            prefix,
            include=include,
            exclude=exclude,
            endpoint_url=endpoint_url,
            region=region,
        )
        self.mode_runner: PollMode | EventMode
        if queue_url and mode == "events":
            self.mode_runner = EventMode(
                self.objects,
                queue_url,
                reconcile_interval=reconcile_interval,
                reconcile_grace=reconcile_grace,
                visibility_timeout=visibility_timeout,
                wait_time=wait_time,
                max_in_flight=max_in_flight,
            )
        else:
            self.mode_runner = PollMode(self.objects, poll_interval)
        self.quarantine_prefix = quarantine_prefix
        self._state_lock = threading.Lock()  # start/stop
        self._started = False
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_config(cls, name: str, config: S3SourceConfig) -> S3Source:
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
            quarantine_prefix=config.quarantine_prefix,
        )

    def __repr__(self) -> str:
        return f"S3Source({self.name!r}, {self.where!r}, mode={self.mode!r})"

    @property
    def mode(self) -> str:
        return self.mode_runner.name

    @property
    def bucket(self) -> str:
        return self.objects.bucket

    @property
    def prefix(self) -> str:
        return self.objects.prefix

    @property
    def where(self) -> str:
        return self.objects.where

    # -- Source --------------------------------------------------------------------------------

    def start(self, emit: Emit, known: Known) -> None:
        """Make the clients, then start the receiver (events) or the startup listing (poll)."""
        with self._state_lock:
            if self._started:
                raise RuntimeError(f"source {self.name!r} is already started")
            self._started = True
            self.objects.emit, self.objects.known = emit, known
            self.objects.stopping = threading.Event()
            # Clients are made here, not concurrently from two threads.
            self.objects.s3  # noqa: B018
            if isinstance(self.mode_runner, EventMode):
                self.mode_runner.sqs  # noqa: B018
            runner = self.mode_runner
            thread = threading.Thread(target=runner.run, name=runner.thread_name, daemon=True)
            self._threads = [thread]
            thread.start()

    def scan(self) -> None:
        """List the prefix once and emit every selected version not handled yet.

        In event mode this is the reconciliation: objects younger than ``reconcile_grace``
        are left to their events. A listing already running makes this call a no-op.
        """
        if self.objects.known is None:
            raise RuntimeError(f"source {self.name!r}: scan() before start()")
        self.objects.scan(self.mode_runner.listing_grace)

    def stop(self) -> None:
        """End the receiver within one receive slice and release the messages still held."""
        with self._state_lock:
            if not self._started:
                return
            self._started = False
            self.objects.stopping.set()
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(_JOIN_TIMEOUT)
                    if thread.is_alive():
                        log.warning(
                            "thread did not stop in time", source=self.name, thread=thread.name
                        )
            self._threads = []
            self.mode_runner.stop()

    def read(self, key: str, etag: str | None = None) -> bytes:
        """The object's bytes; with ``etag``, only that version (InputError "changed" otherwise)."""
        return self.objects.read(key, etag, self.mode_runner.read_failed)

    def periodic(self) -> list[PeriodicTask]:
        """The poll listing, or the reconciliation listing in event mode."""
        runner = self.mode_runner
        return [PeriodicTask(self.scan, runner.interval, f"{runner.task}:{self.name}")]

    def settle(self, arrival: Arrival, outcome: str) -> None:
        """All work for this version is committed (or was never needed): in event mode, delete
        its messages once none of their other records is still waiting. Never raises."""
        version: Version = (arrival.key, unquote_etag(arrival.etag) if arrival.etag else "")
        try:
            self.mode_runner.settle(version, outcome)
        except Exception:
            log.exception("settle failed", source=self.name, key=arrival.key)

    def quarantine(self, key: str, record: dict[str, Any], folder: str | None) -> str | None:
        """Objects stay where they are (moving needs s3:DeleteObject on the inbox); the
        record ``<key>.reason.json`` goes under ``folder`` or ``quarantine_prefix``."""
        prefix = folder or self.quarantine_prefix
        if not prefix:
            return None
        target = prefix.rstrip("/") + "/" + key + ".reason.json"
        where = f"s3://{self.bucket}/{target}"
        with aws.translated(where, action="write", error=InputError):
            self.objects.s3.put_object(
                Bucket=self.bucket,
                Key=target,
                Body=json.dumps(record, indent=2).encode(),
                ContentType="application/json",
            )
        return where
