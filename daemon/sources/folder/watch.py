"""The watchdog side of a folder source: an observer kept running on the root while it exists.

- The handler only hands events on (watchdog 7.1 silently kills its dispatch thread when a
  handler raises, so it catches and logs everything).
- The root may vanish and come back (an unmounted share, ``rm -rf drop && mkdir drop``):
  ``check()`` — run every gate tick — notices, logs a warning once, and when the folder exists
  again starts a fresh observer. A root missing at start is handled the same way. This also
  covers watchdog's PollingObserver, which stops a watch for good once its folder vanishes.
- An observer that cannot start (inotify watch or instance limits) is retried every
  ``_OBSERVER_RETRY`` s; rescans keep finding files meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

log = structlog.get_logger("darkroom.sources")

__all__ = ["ALL_EVENTS", "INOTIFY_EVENTS", "JOIN_TIMEOUT", "RootWatch"]

JOIN_TIMEOUT = 5.0  # seconds per thread when stopping
_OBSERVER_RETRY = 5.0  # seconds between attempts to (re)start a failing observer
# Deleted and "opened" events say nothing about a file becoming complete.
_EVENTS = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]
# With inotify a write ends with a close (IN_CLOSE_WRITE), so "modified" (IN_MODIFY, one per
# write() call: thousands for one photo copied in 64 KiB chunks, and a third of a small
# file's events) adds nothing: the gate stats a candidate before it counts it complete, and
# a size or mtime changed meanwhile starts its quiet period again. A polling observer (and
# macOS's FSEvents) sees no closes, only "modified", so it keeps them.
INOTIFY_EVENTS = [event for event in _EVENTS if event is not FileModifiedEvent]
ALL_EVENTS = _EVENTS


class _Handler(FileSystemEventHandler):
    """Hands events on; never lets an exception reach watchdog's dispatch thread."""

    def __init__(self, source: str, record: Callable[[FileSystemEvent], None]) -> None:
        super().__init__()
        self._source = source
        self._record = record

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._record(event)
        except Exception:
            with contextlib.suppress(Exception):
                log.exception("watch event dropped", source=self._source, watch_event=repr(event))


class RootWatch:
    """Owns the observer on one root. Used by one thread at a time: the source's ``start``,
    then its gate thread, then its ``stop``."""

    def __init__(
        self,
        source: str,
        root: str,
        *,
        new_observer: Callable[[], BaseObserver],
        record: Callable[[FileSystemEvent], None],
        unwatched: Callable[[], None],
        rescan_interval: float,
        events: list[type[FileSystemEvent]] = ALL_EVENTS,
    ) -> None:
        self.source = source
        self.root = root
        self.real_root = root  # the root with symlinks resolved, as of the last (re)start
        self._new_observer = new_observer
        self._handler = _Handler(source, record)
        self._unwatched = unwatched  # called when files may have arrived unwatched
        self._rescan_interval = rescan_interval
        self._events = events
        self._observer: BaseObserver | None = None
        self._identity: tuple[int, int] | None = None
        self._missing = False
        self._retry_at = 0.0
        self._failing = False

    def check(self) -> None:
        """Keep an observer running on the root while it exists."""
        try:
            st = os.stat(self.root)
            is_dir = stat.S_ISDIR(st.st_mode)
        except OSError:
            is_dir = False
        if not is_dir:
            if not self._missing:
                self._missing = True
                log.warning(
                    "watched folder is missing or not a directory; waiting for it",
                    source=self.source,
                    root=self.root,
                )
            self.stop()
            return
        identity = (st.st_dev, st.st_ino)
        restart = (
            self._missing
            or self._observer is None
            or identity != self._identity
            or not _healthy(self._observer)
        )
        if self._missing:
            self._missing = False
            self._retry_at = 0.0
            log.info("watched folder is present", source=self.source, root=self.root)
        if not restart or time.monotonic() < self._retry_at:
            return
        if self._observer is not None:
            log.info("restarting folder watch", source=self.source, root=self.root)
        self.stop()
        self._identity = identity
        self.real_root = os.path.realpath(self.root)
        self._start_observer()
        self._unwatched()  # whatever arrived while unwatched

    def _start_observer(self) -> None:
        observer: BaseObserver | None = None
        try:
            observer = self._new_observer()
            observer.schedule(self._handler, self.root, recursive=True, event_filter=self._events)
            observer.start()
        except Exception as exc:  # e.g. OSError: inotify watch or instance limit reached
            if observer is not None:
                with contextlib.suppress(Exception):
                    observer.stop()
            self._retry_at = time.monotonic() + _OBSERVER_RETRY
            if self._failing:
                return  # logged once per failing streak; rescans keep finding files meanwhile
            self._failing = True
            log.error(
                "could not watch folder; relying on rescans until it can",
                source=self.source,
                root=self.root,
                error=f"{type(exc).__name__}: {exc}",
                rescan_interval_s=self._rescan_interval,
                retry_every_s=_OBSERVER_RETRY,
            )
        else:
            self._observer = observer
            if self._failing:
                self._failing = False
                log.info("watching folder again", source=self.source, root=self.root)

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is None:
            return
        try:
            observer.stop()
            observer.join(JOIN_TIMEOUT)
        except Exception:
            log.exception("stopping the folder watch failed", source=self.source)


def _healthy(observer: BaseObserver) -> bool:
    """The observer thread and every emitter thread are alive (emitters stop for good when
    their folder vanishes); our inotify observer says so itself."""
    healthy = getattr(observer, "healthy", None)
    if healthy is not None:
        return bool(healthy())
    try:
        return observer.is_alive() and all(e.is_alive() for e in list(observer.emitters))
    except RuntimeError:  # set changed size during iteration: look again next tick
        return True
