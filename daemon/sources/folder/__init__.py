"""Folder source: watch a local or mounted folder and emit each file once it is complete.

How a file becomes an arrival::

    watchdog event ─┐                gate thread, every tick
    startup scan  ──┼─> candidate ─> size and mtime_ns unchanged ─> known()? ─no─> emit(Arrival)
    rescan        ──┘   (path only)  for quiet_period seconds

- :mod:`.watch` keeps an observer on the root (also while the root vanishes and comes back):
  on Linux our one-thread inotify observer (:mod:`.inotify`), elsewhere watchdog's. Moved
  events count under their ``dest_path``: uploaders that write ``x.jpg.part`` and rename it
  to ``x.jpg`` are only ever seen as a move. A created (or moved-in) directory is
  scanned, because files written into it before its watch was added send no events.
- :mod:`.complete` decides when a candidate is complete (the quiet period). Zero-byte files are
  emitted once stable: deciding that they are bad is the daemon's job.
- :mod:`.files` names the files that are never candidates and reads, moves and quarantines
  files by key without following symlinks.
- :mod:`.scanning` is the gate and rescan threads and the tree walk (a mixin of
  :class:`FolderSource`).
- A periodic rescan (every ``rescan_interval`` s) walks the tree, because events can be lost
  (watchdog never reports an inotify overflow; ours wakes a rescan at once).
  ``known(key, size, mtime_ns)`` returning True means "already handled": scans skip such
  files without gating them again, and the gate asks it once more right before emitting.
- The same ``(key, size, mtime_ns)`` is emitted at most once per process while the file stays
  in the folder; a file modified later (new size or mtime) is a new candidate. A full rescan
  forgets keys whose files are gone, so a file deleted and re-created with the *same* size and
  mtime_ns is gated again and emitted unless ``known()`` says it was handled.
- Symlinks are never followed and symlinked files are never emitted or read: a symlink could
  point outside the watched folder. (The root itself may be a symlink to a directory.)

``poll=True`` uses watchdog's PollingObserver (NFS/SMB mounts send no inotify events); it takes
a snapshot every ``min(1, quiet_period)`` seconds (at least 0.1 s).

Threads: the observer's (one for ours, three for watchdog's), one gate thread and one rescan
thread (which also runs the startup scan, so ``start()`` does not block on a large tree).
``emit`` and ``known`` are called from the gate and rescan threads, and from the caller of
``scan()``.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

import structlog
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from daemon.errors import DarkroomError, InputError
from daemon.rules.globs import compile_glob
from daemon.rules.sidecars import companion_keys, image_keys
from daemon.safefs import UnsafeFolder
from daemon.sources.base import Emit, Known, Source
from daemon.sources.folder import inotify
from daemon.sources.folder.complete import DirStamps, QuietPeriod
from daemon.sources.folder.files import TEMP_SUFFIXES, FolderFiles, is_ignored
from daemon.sources.folder.scanning import FolderScanning
from daemon.sources.folder.watch import ALL_EVENTS, INOTIFY_EVENTS, JOIN_TIMEOUT, RootWatch
from daemon.sources.uploads import UploadVerdict, UploadWatch

if TYPE_CHECKING:
    from daemon.config.settings import FolderSourceConfig

log = structlog.get_logger("darkroom.sources")

__all__ = ["DEFAULT_PROCESSED", "DEFAULT_QUARANTINE", "TEMP_SUFFIXES", "FolderSource", "is_ignored"]

# Inside the root unless the config names folders elsewhere (recommended: docs/security.md).
DEFAULT_QUARANTINE = ".quarantine"
DEFAULT_PROCESSED = ".processed"
_REFUSED = {
    "quarantine": "failed inputs stay where they are until it is fixed",
    "processed": "on_success: move leaves inputs where they are until it is fixed",
}


class FolderSource(FolderScanning, Source):
    """Emits complete, non-temporary regular files under ``root`` (see the module docstring)."""

    quarantine_dir: Path | None = None  # else .quarantine/ inside the root (never watched)
    processed_dir: Path | None = None  # else .processed/ inside the root (never watched)

    def __init__(
        self,
        name: str,
        root: Path | str,
        *,
        quiet_period: float = 1.0,
        rescan_interval: float = 30.0,
        poll: bool = False,
        ignore: Sequence[str] = (),
        truncated_grace: float = 120.0,
    ) -> None:
        if quiet_period < 0:
            raise ValueError(f"source {name!r}: quiet_period must be >= 0, got {quiet_period}")
        if truncated_grace < 0:
            raise ValueError(
                f"source {name!r}: truncated_grace must be >= 0, got {truncated_grace}"
            )
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
        self._tick = max(0.02, min(0.25, self.quiet_period / 4))
        self._files = FolderFiles(self._root_str, self.ignore)
        self._quiet = QuietPeriod(self.quiet_period)
        self._dir_stamps = DirStamps()  # rescans skip stats in folders whose names are unchanged
        self.truncated_grace = float(truncated_grace)
        self._uploads = UploadWatch(
            self.quiet_period, self.truncated_grace, self._files.stamp, self._files.sha256
        )

        self._state_lock = threading.Lock()  # start/stop
        self._scan_lock = threading.Lock()  # one full scan at a time
        self._running = False
        self._emit: Emit | None = None
        self._known: Known | None = None
        self._stopping = threading.Event()
        self._wake_rescan = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch = RootWatch(
            name,
            self._root_str,
            # Looked up at each (re)start: tests replace _new_observer on the instance.
            new_observer=lambda: self._new_observer(),
            record=lambda event: self._record_event(event),
            unwatched=lambda: self._wake_rescan.set(),
            rescan_interval=self.rescan_interval,
            events=INOTIFY_EVENTS if _inotify(poll) else ALL_EVENTS,
        )
        self._unreadable_dirs: set[str] = set()  # logged once each

    def __repr__(self) -> str:
        return f"FolderSource({self.name!r}, {self._root_str!r})"

    @classmethod
    def from_config(cls, name: str, config: FolderSourceConfig) -> FolderSource:
        source = cls(
            name,
            config.path,
            quiet_period=config.quiet_period,
            rescan_interval=config.rescan_interval,
            poll=config.poll,
            ignore=config.ignore,
            truncated_grace=config.truncated_grace,
        )
        source.quarantine_dir = config.quarantine
        source.processed_dir = getattr(config, "processed", None)
        return source

    # -- Source ----------------------------------------------------------------------------------

    def start(self, emit: Emit, known: Known) -> None:
        """Start the observer, the gate and rescan threads; the startup scan runs on the latter."""
        with self._state_lock:
            if self._running:
                raise RuntimeError(f"source {self.name!r} is already started")
            self._running = True
            self._emit, self._known = emit, known
            self._stopping = threading.Event()
            self._wake_rescan = threading.Event()
            self._watch.check()
            self._prepare_folders()
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
                    thread.join(JOIN_TIMEOUT)
                    if thread.is_alive():
                        log.warning(
                            "thread did not stop in time", source=self.name, thread=thread.name
                        )
            self._threads = []
            self._watch.stop()
            self._quiet.clear()

    def read(self, key: str, etag: str | None = None) -> bytes:
        """The file's bytes; InputError when it is gone, a directory, unreadable or a symlink."""
        return self._files.read(key)

    def move(self, key: str, target: str, *, sha256: str | None = None) -> bool:
        """Move a processed file (a rule's ``on_success: move``; ``target`` is
        ``<processed_dir>/<key>``). The default ``.processed`` means the source's processed
        folder (``processed:`` in its config, else ``.processed/`` in the root); another
        ``processed_dir`` is relative to the root. The folder is the daemon's own (created
        by it, refused when a symlink or another user's: UnsafeFolder, the file stays) and
        dot-folders are never watched, so the file is not seen again.

        Nothing there is ever replaced: a file re-uploaded under a name moved before goes
        beside it under a free name (``hero.20260101T120000.jpg``), logged with where it
        went. With ``sha256`` only those bytes are moved: a newer version uploaded at the
        name meanwhile stays for its own run (InputChanged). Its sidecars and mask go with
        it, renamed like it, unless another image of the same stem still needs them
        (``photo.jpg`` and ``photo.png`` share ``photo.txt``)."""
        folder, moved_key = self._processed_target(key, target)
        moved_to = self._files.move(key, folder, moved_key, sha256=sha256)
        asked, got = PurePosixPath(moved_key), PurePosixPath(os.path.basename(moved_to))
        if got.name != asked.name:
            log.info(
                "moved under a free name: the processed folder holds an earlier file by that"
                " name, which is kept",
                source=self.name,
                key=key,
                to=moved_to,
            )
        old_stem, new_stem = PurePosixPath(key).stem, got.stem
        for companion in companion_keys(key):
            if self._files.stamp(companion) is None:
                continue
            if any(self._files.stamp(image) is not None for image in image_keys(companion)):
                log.info("sidecar kept: another image uses it", source=self.name, key=companion)
                continue
            tail = PurePosixPath(companion).name[len(old_stem) :]  # ".txt", ".mask.png"
            companion_to = str(asked.parent / (new_stem + tail)).removeprefix("./")
            try:
                self._files.move(companion, folder, companion_to)
            except DarkroomError as exc:
                log.warning("cannot move sidecar with its image", key=companion, reason=str(exc))
        return True

    def _processed_target(self, key: str, target: str) -> tuple[Path | str, str]:
        """(the daemon-owned folder, the key inside it) for a move to ``target``."""
        if target.endswith("/" + key):
            folder, moved_key = target[: -len(key) - 1].strip("/"), key
        else:
            head, _, moved_key = target.rpartition("/")
            folder = head.strip("/")
        if not folder or folder == ".":
            raise InputError(
                f"{self.root}/{key}: cannot move it to {target!r}: processed_dir must name a"
                " folder (the default is .processed)"
            )
        if folder == DEFAULT_PROCESSED:
            return self.processed_dir or DEFAULT_PROCESSED, moved_key
        return folder, moved_key

    def quarantine(self, key: str, record: dict[str, Any], folder: str | None) -> str:
        """Move a failed input out of the way, with ``<name>.reason.json`` beside it.
        ``folder`` (a rule's output.quarantine) is relative to the root; the default is the
        source's quarantine folder, else ``.quarantine/`` inside the root (never watched).
        The folder is the daemon's own: a symlink or another user's folder there is refused
        (UnsafeFolder, an environment fault) and the input stays where it is."""
        target: Path | str = (
            folder.strip("/") if folder else (self.quarantine_dir or DEFAULT_QUARANTINE)
        )
        return self._files.quarantine(key, record, target)

    def _prepare_folders(self) -> None:
        """Create the quarantine and processed folders now, as the daemon's own, so nobody
        else can create them first; say loudly when an existing one is refused (each use
        checks again, so fixing it needs no restart)."""
        if not self.root.is_dir():
            return  # created on first use, once the root is there (RootWatch waits for it)
        for role, folder in (
            ("quarantine", self.quarantine_dir or DEFAULT_QUARANTINE),
            ("processed", self.processed_dir or DEFAULT_PROCESSED),
        ):
            try:
                self._files.owned(folder).close()
            except UnsafeFolder as exc:
                log.error(
                    "folder refused",
                    source=self.name,
                    role=role,
                    path=exc.path,
                    reason=str(exc),
                    consequence=_REFUSED[role],
                )
            except (OSError, InputError) as exc:
                log.error(
                    "cannot create folder",
                    source=self.name,
                    role=role,
                    path=str(folder),
                    reason=getattr(exc, "strerror", None) or str(exc),
                    consequence=_REFUSED[role],
                )

    def upload_verdict(self, key: str, sha256: str, *, truncated: bool) -> UploadVerdict:
        """Bytes of ``key`` failed to decode: settled only once the file has stayed unchanged
        for another quiet period (``truncated_grace`` when it looks cut off) and still holds
        them; ``changed`` when a newer version is there (:mod:`daemon.sources.uploads`)."""
        return self._uploads.verdict(key, sha256, truncated=truncated)

    # -- status ----------------------------------------------------------------------------------

    def pending_count(self) -> int:
        """Candidates waiting for their quiet period (for status and metrics)."""
        return self._quiet.pending_count()

    # -- seams -----------------------------------------------------------------------------------

    def _new_observer(self) -> BaseObserver:
        """The observer to use (a seam: tests substitute one that loses events): on Linux our
        one-thread inotify observer (:mod:`.inotify`), else watchdog's."""
        if self.poll:
            return PollingObserver(timeout=max(0.1, min(1.0, self.quiet_period)))
        if inotify.available():
            return cast(BaseObserver, inotify.InotifyObserver(lost=lambda: self._wake_rescan.set()))
        return Observer()

    # -- listing ---------------------------------------------------------------------------------

    def reader_factory(self) -> Callable[[], Source]:
        """This folder's reader in another process: the same root and ignore patterns
        (what ``read`` and ``folder_names`` use); never started, so it watches nothing."""
        return functools.partial(FolderSource, self.name, self._root_str, ignore=self.ignore)

    def folder_names(self, folder: str) -> frozenset[str] | None:
        """The names directly in ``folder`` (a key prefix; "" is the root), or None when it
        cannot be listed. Intake lists an image's folder once for a burst instead of probing
        each possible sidecar name (:mod:`daemon.intake.listing`); what it then reads goes
        through :meth:`read` and its checks."""
        try:
            path = self._files.path_for(folder) if folder else self._root_str
            return frozenset(os.listdir(path))  # names only: no stat per entry
        except (OSError, InputError):
            return None


def _inotify(poll: bool) -> bool:
    """Whether the watch is inotify's (Linux, not polling): its writes end with a close."""
    return not poll and (
        inotify.available() or getattr(Observer, "__name__", "") == "InotifyObserver"
    )
