"""Folder source: watch a local or mounted folder and emit each file once it is complete.

How a file becomes an arrival::

    watchdog event ─┐                gate thread, every tick
    startup scan  ──┼─> candidate ─> size and mtime_ns unchanged ─> known()? ─no─> emit(Arrival)
    rescan        ──┘   (path only)  for quiet_period seconds

- The watchdog handler only records paths (watchdog 7.1 silently kills its dispatch thread
  when a handler raises, so it catches and logs everything). Moved events count under their
  ``dest_path``: uploaders that write ``x.jpg.part`` and rename it to ``x.jpg`` are only ever
  seen as a move. A created (or moved-in) directory is scanned, because files written into it
  before its watch was added send no events.
- A candidate is *complete* once its size and ``mtime_ns`` have been unchanged for
  ``quiet_period`` seconds (close-after-write is only a hint; network shares never send it).
  Candidates that vanish are dropped. Zero-byte files are emitted once stable: deciding that they
  are bad is the daemon's job.
- A periodic rescan (every ``rescan_interval`` s) walks the tree, because inotify overflow is
  never reported to the handler. ``known(key, size, mtime_ns)`` returning True means "already
  handled": scans skip such files without gating them again, and the gate asks it once more
  right before emitting.
- The same ``(key, size, mtime_ns)`` is emitted at most once per process while the file stays
  in the folder; a file modified later (new size or mtime) is a new candidate. Memory is kept
  bounded: a full rescan forgets keys whose files are gone, so a file deleted and re-created with
  the *same* size and mtime_ns is gated again and emitted unless ``known()`` says it was handled.
- Never candidates: directories; names ending in ``.part``, ``.tmp``, ``.crdownload``,
  ``.filepart``, ``.partial``, ``.download`` (any case); any path component starting with ``.``
  (dot-files and dot-dirs, which covers rsync's ``.name.jpg.AbC123`` temp files); names starting
  with ``~$`` (Office lock files); keys matching one of the ``ignore`` globs (daemon.globs).
- Symlinks are never followed and symlinked files are never emitted or read: a symlink could
  point outside the watched folder. (The root itself may be a symlink to a directory.)
- The root may vanish and come back (an unmounted share, ``rm -rf drop && mkdir drop``): the gate
  notices on its next tick, logs a warning once, and when the folder exists again it starts a
  fresh observer and scans. A root missing at start is handled the same way. This also covers
  watchdog's PollingObserver, which stops a watch for good once its folder vanishes.

``poll=True`` uses watchdog's PollingObserver (NFS/SMB mounts send no inotify events); it takes
a snapshot every ``min(1, quiet_period)`` seconds (at least 0.1 s).

Threads: the observer's, one gate thread and one rescan thread (which also runs the startup scan,
so ``start()`` does not block on a large tree). ``emit`` and ``known`` are called from the gate
and rescan threads, and from the caller of ``scan()``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import structlog
from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from daemon.errors import InputError
from daemon.rules.globs import compile_glob, match_any
from daemon.types import Arrival
from daemon.sources import Emit, Known

log = structlog.get_logger("darkroom.sources")

__all__ = ["TEMP_SUFFIXES", "FolderSource", "is_ignored"]

TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".filepart", ".partial", ".download")
_EVENTS = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]
_JOIN_TIMEOUT = 5.0  # seconds per thread in stop()
_OBSERVER_RETRY = 5.0  # seconds between attempts to (re)start a failing observer


def is_ignored(key: str, ignore: Sequence[str] = ()) -> bool:
    """Whether a source-relative key can never be a candidate (temp, hidden, lock or ignored)."""
    parts = key.split("/")
    if any(part.startswith(".") for part in parts):
        return True
    name = parts[-1]
    if name.startswith("~$") or name.lower().endswith(TEMP_SUFFIXES):
        return True
    return bool(ignore) and match_any(ignore, key)


@dataclass
class _Candidate:
    path: str
    size: int
    mtime_ns: int
    since: float  # monotonic time this (size, mtime_ns) was first seen


class _Handler(FileSystemEventHandler):
    """Records paths only; never lets an exception reach watchdog's dispatch thread."""

    def __init__(self, source: FolderSource) -> None:
        super().__init__()
        self._source = source

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._source._record_event(event)
        except Exception:
            with contextlib.suppress(Exception):
                log.exception(
                    "watch event dropped", source=self._source.name, watch_event=repr(event)
                )


class FolderSource:
    """Emits complete, non-temporary regular files under ``root`` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        root: Path | str,
        *,
        quiet_period: float = 1.0,
        rescan_interval: float = 30.0,
        poll: bool = False,
        ignore: Sequence[str] = (),
    ) -> None:
        if quiet_period < 0:
            raise ValueError(f"source {name!r}: quiet_period must be >= 0, got {quiet_period}")
        if rescan_interval <= 0:
            raise ValueError(f"source {name!r}: rescan_interval must be > 0, got {rescan_interval}")
        if isinstance(ignore, str):
            raise ValueError(
                f"source {name!r}: ignore must be a list of glob patterns, not one str"
            )
        for pattern in ignore:
            try:
                compile_glob(pattern)
            except ValueError as exc:
                raise ValueError(f"source {name!r}: ignore: {exc}") from None
        self.name = name
        self.root = Path(os.path.abspath(root))
        self.quiet_period = float(quiet_period)
        self.rescan_interval = float(rescan_interval)
        self.poll = poll
        self.ignore = tuple(ignore)
        self._root_str = str(self.root)
        self._prefix = self._root_str.rstrip(os.sep) + os.sep
        self._tick = max(0.02, min(0.25, self.quiet_period / 4))

        self._lock = threading.Lock()  # guards everything below up to the threads
        self._inbox: set[str] = set()  # file paths from events, not yet looked at
        self._inbox_dirs: set[str] = set()  # created / moved-in directories to scan
        self._pending: dict[str, _Candidate] = {}
        self._handled: dict[str, tuple[int, int, float]] = {}  # key -> size, mtime_ns, when

        self._state_lock = threading.Lock()  # start/stop
        self._scan_lock = threading.Lock()  # one full scan at a time
        self._running = False
        self._emit: Emit | None = None
        self._known: Known | None = None
        self._stopping = threading.Event()
        self._wake_rescan = threading.Event()
        self._threads: list[threading.Thread] = []
        self._handler = _Handler(self)

        # Owned by whoever runs _check_root: start(), then the gate thread, then stop().
        self._observer: BaseObserver | None = None
        self._root_identity: tuple[int, int] | None = None
        self._real_root = self._root_str
        self._root_missing = False
        self._observer_retry_at = 0.0
        self._watch_failing = False
        self._unreadable_dirs: set[str] = set()

    def __repr__(self) -> str:
        return f"FolderSource({self.name!r}, {self._root_str!r})"

    # -- Source protocol ---------------------------------------------------------------------

    def start(self, emit: Emit, known: Known) -> None:
        """Start the observer, the gate and rescan threads; the startup scan runs on the latter."""
        with self._state_lock:
            if self._running:
                raise RuntimeError(f"source {self.name!r} is already started")
            self._running = True
            self._emit, self._known = emit, known
            self._stopping = threading.Event()
            self._wake_rescan = threading.Event()
            self._check_root()
            self._threads = [
                threading.Thread(
                    target=self._gate_loop, name=f"darkroom-gate:{self.name}", daemon=True
                ),
                threading.Thread(
                    target=self._rescan_loop, name=f"darkroom-rescan:{self.name}", daemon=True
                ),
            ]
            for thread in self._threads:
                thread.start()
            self._wake_rescan.set()  # startup scan: files that arrived while we were down

    def scan(self) -> None:
        """Walk the whole tree once, synchronously, and gate every new or changed file.

        Candidates found are emitted by the gate thread once they have been quiet for
        ``quiet_period``, not by this call.
        """
        if self._known is None:
            raise RuntimeError(f"source {self.name!r}: scan() before start()")
        with self._scan_lock:
            started = time.monotonic()
            seen: set[str] = set()
            complete = self._scan_tree(self._root_str, "", seen)
            if complete and not self._stopping.is_set():
                with self._lock:
                    gone = [k for k, v in self._handled.items() if k not in seen and v[2] < started]
                    for key in gone:
                        del self._handled[key]

    def stop(self) -> None:
        """Stop the observer and threads (joins are bounded); pending candidates are dropped."""
        with self._state_lock:
            if not self._running:
                return
            self._running = False
            self._stopping.set()
            self._wake_rescan.set()
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(_JOIN_TIMEOUT)
                    if thread.is_alive():
                        log.warning(
                            "thread did not stop in time", source=self.name, thread=thread.name
                        )
            self._threads = []
            self._stop_observer()
            with self._lock:
                self._pending.clear()
                self._inbox.clear()
                self._inbox_dirs.clear()

    @classmethod
    def from_config(cls, name: str, config: Any) -> FolderSource:
        source = cls(
            name,
            config.path,
            quiet_period=config.quiet_period,
            rescan_interval=config.rescan_interval,
            poll=config.poll,
            ignore=config.ignore,
        )
        source.quarantine_dir = config.quarantine
        return source

    quarantine_dir: Path | None = None

    def quarantine(self, key: str, record: dict[str, Any], where: str | None = None) -> str:
        """Move a failed input out of the way, with ``<name>.reason.json`` beside it.
        ``where`` (a rule's output.quarantine) is relative to the root; the default is the
        source's quarantine folder, else ``.quarantine/`` inside the root (never watched)."""
        folder = (
            Path(self._path_for(where.strip("/")))
            if where
            else (self.quarantine_dir or Path(self._root_str) / ".quarantine")
        )
        source = Path(self._path_for(key))
        target = folder / key
        if target.exists():
            target = target.with_name(
                f"{target.stem}.{time.strftime('%Y%m%dT%H%M%S')}{target.suffix}"
            )
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.exists():
                os.rename(source, target)
            reason = target.with_name(target.name + ".reason.json")
            reason.write_text(json.dumps(record, indent=2))
        except OSError as exc:
            raise InputError(f"cannot quarantine {source} to {target}: {exc.strerror}") from None
        return str(target)

    def settle(self, arrival: Arrival, outcome: str) -> None:
        """Nothing to acknowledge: the folder itself is the record."""

    def move(self, key: str, target_key: str) -> None:
        """Move a processed file (a rule's ``on_success: move``) within the root. Targets in
        dot-folders (the default ``.processed/``) are never watched, so it is not seen again."""
        source, target = Path(self._path_for(key)), Path(self._path_for(target_key))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                raise InputError(f"{target} exists already; not overwriting it")
            os.rename(source, target)
        except OSError as exc:
            raise InputError(f"cannot move {source} to {target}: {exc.strerror}") from None

    def read(self, key: str, etag: str | None = None) -> bytes:
        """The file's bytes; InputError when it is gone, a directory, unreadable or a symlink."""
        path = self._path_for(key)
        where = f"{self._root_str}/{key}"
        parent = os.path.dirname(key)
        if parent and os.path.realpath(os.path.dirname(path)) != os.path.join(
            os.path.realpath(self._root_str), *parent.split("/")
        ):
            raise InputError(
                f"{where}: is inside a symlinked folder; symlinks are not followed "
                "(one could point outside the watched folder)"
            )
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except (FileNotFoundError, NotADirectoryError):
            raise InputError(f"{where}: file vanished before it could be read", gone=True) from None
        except IsADirectoryError:
            raise InputError(f"{where}: is a directory") from None
        except PermissionError:
            raise InputError(f"{where}: permission denied") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InputError(
                    f"{where}: is a symlink; symlinks are not followed "
                    "(one could point outside the watched folder)"
                ) from None
            raise InputError(f"{where}: could not be read: {exc.strerror}") from None
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            os.close(fd)
            raise
        if not stat.S_ISREG(mode):
            os.close(fd)
            what = "is a directory" if stat.S_ISDIR(mode) else "is not a regular file"
            raise InputError(f"{where}: {what}")
        with os.fdopen(fd, "rb") as f:
            try:
                return f.read()
            except OSError as exc:
                raise InputError(f"{where}: could not be read: {exc.strerror}") from None

    # -- status --------------------------------------------------------------------------------

    def pending_count(self) -> int:
        """Candidates waiting in the gate for their quiet period (for status and metrics)."""
        with self._lock:
            return len(self._pending)

    # -- observer and root -----------------------------------------------------------------------

    def _new_observer(self) -> BaseObserver:
        """The watchdog observer to use (a seam: tests substitute one that loses events)."""
        if self.poll:
            return PollingObserver(timeout=max(0.1, min(1.0, self.quiet_period)))
        return Observer()

    def _check_root(self) -> None:
        """Keep an observer running on the root while it exists; called every gate tick."""
        try:
            st = os.stat(self._root_str)
            is_dir = stat.S_ISDIR(st.st_mode)
        except OSError:
            is_dir = False
        if not is_dir:
            if not self._root_missing:
                self._root_missing = True
                log.warning(
                    "watched folder is missing or not a directory; waiting for it",
                    source=self.name,
                    root=self._root_str,
                )
            self._stop_observer()
            return
        identity = (st.st_dev, st.st_ino)
        restart = (
            self._root_missing
            or self._observer is None
            or identity != self._root_identity
            or not _healthy(self._observer)
        )
        if self._root_missing:
            self._root_missing = False
            self._observer_retry_at = 0.0
            log.info("watched folder is present", source=self.name, root=self._root_str)
        if not restart or time.monotonic() < self._observer_retry_at:
            return
        if self._observer is not None:
            log.info("restarting folder watch", source=self.name, root=self._root_str)
        self._stop_observer()
        self._root_identity = identity
        self._real_root = os.path.realpath(self._root_str)
        observer: BaseObserver | None = None
        try:
            observer = self._new_observer()
            observer.schedule(self._handler, self._root_str, recursive=True, event_filter=_EVENTS)
            observer.start()
        except Exception as exc:  # e.g. OSError: inotify watch or instance limit reached
            if observer is not None:
                with contextlib.suppress(Exception):
                    observer.stop()
            self._observer_retry_at = time.monotonic() + _OBSERVER_RETRY
            if self._watch_failing:
                return  # logged once per failing streak; rescans keep finding files meanwhile
            self._watch_failing = True
            log.error(
                "could not watch folder; relying on rescans until it can",
                source=self.name,
                root=self._root_str,
                error=f"{type(exc).__name__}: {exc}",
                rescan_interval_s=self.rescan_interval,
                retry_every_s=_OBSERVER_RETRY,
            )
        else:
            self._observer = observer
            if self._watch_failing:
                self._watch_failing = False
                log.info("watching folder again", source=self.name, root=self._root_str)
        self._wake_rescan.set()  # whatever arrived while unwatched

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is None:
            return
        try:
            observer.stop()
            observer.join(_JOIN_TIMEOUT)
        except Exception:
            log.exception("stopping the folder watch failed", source=self.name)

    # -- event intake (watchdog's dispatch thread) -------------------------------------------------

    def _record_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind == EVENT_TYPE_MOVED:
            path = event.dest_path
        elif kind in (EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_CLOSED):
            path = event.src_path
        else:
            return
        if not path:
            return
        path = os.fsdecode(path)
        with self._lock:
            if not event.is_directory:
                self._inbox.add(path)
            elif kind in (EVENT_TYPE_CREATED, EVENT_TYPE_MOVED):
                self._inbox_dirs.add(path)

    # -- the gate thread ---------------------------------------------------------------------------

    def _gate_loop(self) -> None:
        stopping = self._stopping
        while not stopping.wait(self._tick):
            try:
                self._check_root()
                self._drain_inbox()
                self._gate()
            except Exception:
                log.exception("folder gate tick failed", source=self.name)

    def _drain_inbox(self) -> None:
        with self._lock:
            paths, dirs = self._inbox, self._inbox_dirs
            self._inbox, self._inbox_dirs = set(), set()
        for path in sorted(dirs):
            key = self._key_for(path)
            if key is not None and self._inside_real_root(path, key + "/x", {}):
                self._scan_tree(path, key + "/", None)
        real_dirs: dict[str, bool] = {}
        now = time.monotonic()
        for path in paths:
            key = self._key_for(path)
            if key is None or not self._inside_real_root(path, key, real_dirs):
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            with self._lock:
                handled = self._handled.get(key)
                if handled is not None and handled[:2] == (st.st_size, st.st_mtime_ns):
                    continue
                candidate = self._pending.get(key)
                if candidate is None:
                    self._pending[key] = _Candidate(path, st.st_size, st.st_mtime_ns, now)
                else:  # an event means "still being written": restart its quiet period
                    candidate.path = path
                    candidate.size, candidate.mtime_ns, candidate.since = (
                        st.st_size,
                        st.st_mtime_ns,
                        now,
                    )

    def _gate(self) -> None:
        with self._lock:
            candidates = list(self._pending.items())
        ready: list[tuple[str, str, int, int]] = []
        for key, candidate in candidates:
            try:
                st = os.lstat(candidate.path)
                regular = stat.S_ISREG(st.st_mode)
            except OSError:
                regular = False
            now = time.monotonic()
            with self._lock:
                if self._pending.get(key) is not candidate:
                    continue
                if not regular:  # vanished (or replaced by a directory / symlink)
                    del self._pending[key]
                    continue
                if (st.st_size, st.st_mtime_ns) != (candidate.size, candidate.mtime_ns):
                    candidate.size, candidate.mtime_ns, candidate.since = (
                        st.st_size,
                        st.st_mtime_ns,
                        now,
                    )
                    continue
                if now - candidate.since < self.quiet_period:
                    continue
                del self._pending[key]
                handled = self._handled.get(key)
                if handled is not None and handled[:2] == (st.st_size, st.st_mtime_ns):
                    continue
                self._handled[key] = (st.st_size, st.st_mtime_ns, now)
            ready.append((key, candidate.path, st.st_size, st.st_mtime_ns))
        for key, path, size, mtime_ns in ready:
            if self._stopping.is_set():
                return
            self._deliver(key, path, size, mtime_ns)

    def _deliver(self, key: str, path: str, size: int, mtime_ns: int) -> None:
        if self._is_known(key, size, mtime_ns):
            return
        arrival = Arrival(source=self.name, key=key, uri=path, size=size, mtime_ns=mtime_ns)
        emit = self._emit
        if emit is None:
            return
        try:
            emit(arrival)
        except Exception:
            log.exception(
                "emit failed; the file is seen again after a restart if still unhandled",
                source=self.name,
                key=key,
            )

    def _is_known(self, key: str, size: int, mtime_ns: int) -> bool:
        known = self._known
        if known is None:
            return False
        try:
            return bool(known(key, size, mtime_ns))
        except Exception:
            log.exception("known() failed; treating the file as new", source=self.name, key=key)
            return False

    # -- scanning --------------------------------------------------------------------------------

    def _rescan_loop(self) -> None:
        stopping, wake = self._stopping, self._wake_rescan
        while True:
            wake.wait(self.rescan_interval)
            if stopping.is_set():
                return
            wake.clear()
            try:
                self.scan()
            except Exception:
                log.exception("folder rescan failed", source=self.name)

    def _scan_tree(self, top: str, prefix: str, seen: set[str] | None) -> bool:
        """Gate every new file under ``top`` (whose keys start with ``prefix``), not following
        symlinks. Returns False when some directory could not be listed (or we are stopping)."""
        complete = True
        stack = [(top, prefix)]
        while stack:
            if self._stopping.is_set():
                return False
            directory, dir_prefix = stack.pop()
            try:
                with os.scandir(directory) as entries:
                    found = list(entries)
            except (FileNotFoundError, NotADirectoryError):
                if directory == top:
                    complete = False
                continue
            except OSError as exc:
                complete = False
                if directory not in self._unreadable_dirs:
                    self._unreadable_dirs.add(directory)
                    log.warning(
                        "cannot list folder; its files are skipped",
                        source=self.name,
                        path=directory,
                        error=exc.strerror,
                    )
                continue
            self._unreadable_dirs.discard(directory)
            for entry in found:
                if entry.name.startswith("."):
                    continue
                key = dir_prefix + entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, key + "/"))
                        continue
                    if not entry.is_file(follow_symlinks=False) or is_ignored(key, self.ignore):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if seen is not None:
                    seen.add(key)
                self._offer_scanned(key, entry.path, st.st_size, st.st_mtime_ns)
        return complete

    def _offer_scanned(self, key: str, path: str, size: int, mtime_ns: int) -> None:
        with self._lock:
            handled = self._handled.get(key)
            if (handled is not None and handled[:2] == (size, mtime_ns)) or key in self._pending:
                return
        known = self._is_known(key, size, mtime_ns)
        now = time.monotonic()
        with self._lock:
            if known:
                self._handled[key] = (size, mtime_ns, now)
                return
            handled = self._handled.get(key)
            if (handled is not None and handled[:2] == (size, mtime_ns)) or key in self._pending:
                return
            self._pending[key] = _Candidate(path, size, mtime_ns, now)

    # -- paths -----------------------------------------------------------------------------------

    def _key_for(self, path: str) -> str | None:
        """The key of an absolute path under root, or None (outside root or never a candidate)."""
        if not path.startswith(self._prefix):
            return None
        key = path[len(self._prefix) :]
        if os.sep != "/":
            key = key.replace(os.sep, "/")
        if not key or is_ignored(key, self.ignore):
            return None
        return key

    def _inside_real_root(self, path: str, key: str, cache: dict[str, bool]) -> bool:
        """False when a directory between root and ``path`` is a symlink."""
        parent_key = key.rpartition("/")[0]
        if not parent_key:
            return True
        parent = os.path.dirname(path)
        ok = cache.get(parent)
        if ok is None:
            expected = os.path.join(self._real_root, *parent_key.split("/"))
            ok = cache[parent] = os.path.realpath(parent) == expected
        return ok

    def _path_for(self, key: str) -> str:
        if not isinstance(key, str) or not key or "\0" in key:
            raise InputError(f"{self._root_str}: invalid key {key!r}")
        parts = key.split("/")
        if key.startswith("/") or ".." in parts:
            raise InputError(
                f"{self._root_str}: key {key!r} escapes the source folder (absolute or '..')"
            )
        if any(part in ("", ".") for part in parts):
            raise InputError(f"{self._root_str}: invalid key {key!r} (empty or '.' segment)")
        return os.path.join(self._root_str, *parts)


def _healthy(observer: BaseObserver) -> bool:
    """The observer thread and every emitter thread are alive (emitters stop for good when
    their folder vanishes)."""
    try:
        return observer.is_alive() and all(e.is_alive() for e in list(observer.emitters))
    except RuntimeError:  # set changed size during iteration: look again next tick
        return True
