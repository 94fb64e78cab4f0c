"""The Source contract: what every source must do, and optional hooks that default to nothing.

A source watches one location and calls ``emit(arrival)`` once per complete object. It never
decides what to do with a file (rules do) and never modifies it unless told to (``move``,
``quarantine``). ``emit`` may be called from any thread; it must be cheap and never raise back
into the source.

Required: ``start``, ``scan``, ``stop``, ``read``. Optional hooks, each a no-op here so that
callers call them directly:

- ``settle(arrival, outcome)``: all work for an arrival is committed or was never needed;
  a queue-backed source deletes its message here, never earlier.
- ``periodic()``: work the app runs on its one scheduler (listings, reconciliation).
- ``move(key, target)``: a rule's ``on_success: move``; False means "this source cannot move".
- ``quarantine(key, record, folder)``: put a failed input (or its reason record) aside;
  None means "nothing was put anywhere".
- ``upload_verdict(key, sha256, truncated=...)``: whether bytes that failed to decode may be
  an upload still in progress (:mod:`daemon.sources.uploads`); objects that appear whole
  (S3) are always settled.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from daemon.sources.uploads import UploadVerdict
from daemon.types import Arrival

__all__ = ["Emit", "Known", "PeriodicTask", "Source"]

Emit = Callable[[Arrival], None]


class Known(Protocol):
    """Whether this version of ``key`` (size + mtime_ns, or size + etag when given) was already
    handled, so rescans and duplicate events stay cheap."""

    def __call__(self, key: str, size: int, mtime_ns: int, etag: str | None = None) -> bool: ...


@dataclass(frozen=True)
class PeriodicTask:
    """Work a source wants run every ``interval_s`` seconds on the app's scheduler."""

    function: Callable[[], None]
    interval_s: float
    name: str  # the scheduler job's name, unique per source ("s3-poll:cam")


class Source(abc.ABC):
    """Where arrivals come from. Subclasses set ``name`` (the config's name for the source)."""

    name: str

    @abc.abstractmethod
    def start(self, emit: Emit, known: Known) -> None:
        """Begin watching (non-blocking) and run the startup scan."""

    @abc.abstractmethod
    def scan(self) -> None:
        """Look at everything again (periodic rescan; recovers lost events)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop watching; pending, not yet complete candidates are dropped."""

    @abc.abstractmethod
    def read(self, key: str, etag: str | None = None) -> bytes:
        """The object's bytes. Raises daemon.errors.InputError when it is gone or unreadable.

        With ``etag`` (from the arrival), a source that can check versions (S3) refuses to
        return a different version: InputError("...changed...")."""

    # -- optional hooks ----------------------------------------------------------------------

    def settle(self, arrival: Arrival, outcome: str) -> None:
        """Called once all work for ``arrival`` is committed (``done``/``failed``) or was
        never needed (``ignored``/``duplicate``). Sources without a queue do nothing."""

    def periodic(self) -> list[PeriodicTask]:
        """Work for the app's scheduler; none by default."""
        return []

    def move(self, key: str, target: str, *, sha256: str | None = None) -> bool:
        """Move ``key`` to ``target`` (a key in the same source) after success. Returns False
        when this source cannot move; raises InputError when it can but the move failed.
        With ``sha256`` only those bytes are moved: InputChanged when a newer version is at
        ``key`` (it stays, and is processed on its own)."""
        return False

    def quarantine(self, key: str, record: dict[str, Any], folder: str | None) -> str | None:
        """Put a failed input aside with its reason ``record``; ``folder`` is a rule's
        ``output.quarantine`` (else the source's own default). Returns where it went, or None
        when this source keeps no quarantine. Raises InputError when it could not."""
        return None

    def reader_factory(self) -> Callable[[], Source] | None:
        """A picklable callable that builds, in another process, a source that reads the
        same objects (``read``, and ``folder_names`` where it has one); intake decides a
        burst in a second process with it (:mod:`daemon.intake.decide_process`). None:
        this source is read in the main process only."""
        return None

    def upload_verdict(self, key: str, sha256: str, *, truncated: bool) -> UploadVerdict:
        """Called when the bytes ``sha256`` of ``key`` failed to decode, before they are
        quarantined: ``waiting`` while they may still be arriving, ``changed`` when a newer
        version replaced them. Sources whose objects appear whole say ``settled``."""
        return UploadVerdict.settled()
