"""The folder source's gate and rescan threads: how files become candidates, then arrivals.

:class:`FolderScanning` is the half of :class:`~daemon.sources.folder.FolderSource` that finds
files: the observer's events recorded by path, the gate thread that stats them and emits each
once its quiet period is over, and the rescan thread's walk of the whole tree (the startup
scan, a restarted watch, and every ``rescan_interval`` s). The module docstring of
:mod:`daemon.sources.folder` tells the whole story; the state is set up by ``FolderSource``.
"""

from __future__ import annotations

import functools
import os
import stat
import threading
import time

import structlog
from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
)

from daemon.sources.base import Emit, Known
from daemon.sources.folder.complete import DirStamps, QuietPeriod
from daemon.sources.folder.files import FolderFiles, is_ignored
from daemon.sources.folder.watch import RootWatch
from daemon.types import Arrival

log = structlog.get_logger("darkroom.sources")

__all__ = ["FolderScanning"]


class FolderScanning:
    """The gate thread, the rescan thread and the tree walk of a folder source (a mixin:
    ``FolderSource.__init__`` sets every attribute declared here)."""

    name: str
    ignore: tuple[str, ...]
    rescan_interval: float
    _root_str: str
    _tick: float
    _files: FolderFiles
    _quiet: QuietPeriod
    _dir_stamps: DirStamps
    _watch: RootWatch
    _scan_lock: threading.Lock
    _emit: Emit | None
    _known: Known | None
    _stopping: threading.Event
    _wake_rescan: threading.Event
    _unreadable_dirs: set[str]

    @property
    def scans_begun(self) -> int:
        """How many scans of the tree have begun (periodic ones included): once it grew by
        n + 1, n whole scans ran in between (what a test waits on before it says "nothing
        more happened")."""
        return self._dir_stamps.passes

    def scan(self, *, periodic: bool = False) -> None:
        """Walk the whole tree once, synchronously, and gate every new or changed file.

        Candidates found are emitted by the gate thread once they have been quiet for
        ``quiet_period``, not by this call. ``periodic`` (the rescan thread's timer): in
        folders whose names did not change only new files are stat'ed, except on every
        few passes (:class:`~daemon.sources.folder.complete.DirStamps`).
        """
        if self._known is None:
            raise RuntimeError(f"source {self.name!r}: scan() before start()")
        with self._scan_lock:
            started = time.monotonic()
            seen: set[str] = set()
            listed: set[str] = set()
            full = self._dir_stamps.next_pass_is_full() or not periodic
            complete = self._scan_tree(self._root_str, "", seen, full=full, listed=listed)
            if complete and not self._stopping.is_set():
                self._quiet.forget_gone(seen, started)
                self._dir_stamps.keep_only(listed)

    def _record_event(self, event: FileSystemEvent) -> None:
        """Called on the observer's thread: records the path, nothing more."""
        kind = event.event_type
        if kind == EVENT_TYPE_MOVED:
            path = event.dest_path
        elif kind in (EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_CLOSED):
            path = event.src_path
        else:
            return
        if not path:
            return
        if not event.is_directory:
            self._quiet.event(os.fsdecode(path), directory=False)
        elif kind in (EVENT_TYPE_CREATED, EVENT_TYPE_MOVED):
            self._quiet.event(os.fsdecode(path), directory=True)

    # -- the gate thread -------------------------------------------------------------------------

    def _gate_loop(self) -> None:
        stopping = self._stopping
        while not stopping.wait(self._tick):
            try:
                self._watch.check()
                self._take_events()
                for ready in self._quiet.complete():
                    if self._stopping.is_set():
                        break
                    self._deliver(ready.key, ready.path, ready.size, ready.mtime_ns)
            except Exception:
                log.exception("folder gate tick failed", source=self.name)

    def _take_events(self) -> None:
        paths, dirs = self._quiet.take_events()
        for path in sorted(dirs):
            key = self._files.key_for(path)
            # Inside the real root when a file in it would be: no symlinked folder on the way.
            if key is not None and self._inside_real_root(path + "/x", key + "/x", {}):
                self._scan_tree(path, key + "/", None)
        real_dirs: dict[str, bool] = {}
        for path in paths:
            key = self._files.key_for(path)
            if key is None or not self._inside_real_root(path, key, real_dirs):
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                self._quiet.changed(key, path, st.st_size, st.st_mtime_ns)

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
            woken = wake.wait(self.rescan_interval)
            if stopping.is_set():
                return
            if not woken:
                self._wait_while_gating()
            wake.clear()
            try:
                self.scan(periodic=not woken)
            except Exception:
                log.exception("folder rescan failed", source=self.name)

    def _wait_while_gating(self) -> None:
        """A periodic rescan waits, for at most another interval, while the gate has
        candidates: events are arriving, so the watch works, and a rescan in the middle of
        a burst would stat every file already handled while intake needs the CPU. Startup,
        a restarted watch and scan() do not wait."""
        deadline = time.monotonic() + self.rescan_interval
        while self._quiet.pending_count() and time.monotonic() < deadline:
            if self._stopping.wait(self._tick) or self._wake_rescan.is_set():
                return

    def _scan_tree(
        self,
        top: str,
        prefix: str,
        seen: set[str] | None,
        *,
        full: bool = True,
        listed: set[str] | None = None,
    ) -> bool:
        """Gate every new file under ``top`` (whose keys start with ``prefix``), not following
        symlinks. Returns False when some directory could not be listed (or we are stopping).
        ``full=False``: files already pending or handled in a folder whose names did not
        change since it was last listed are not stat'ed (``listed`` collects the folders)."""
        complete = True
        pending = self._quiet.is_pending
        stack = [(top, prefix)]
        while stack:
            if self._stopping.is_set():
                return False
            directory, dir_prefix = stack.pop()
            if listed is not None:
                listed.add(directory)
                same_names = self._dir_stamps.unchanged(directory) and not full
                skip = self._quiet.is_settled if same_names else pending
            else:
                skip = pending
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
                    if skip(key):  # pending: the gate stats it anyway (a burst: most files)
                        if seen is not None:
                            seen.add(key)
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if seen is not None:
                    seen.add(key)
                size, mtime_ns = st.st_size, st.st_mtime_ns
                known = functools.partial(self._is_known, key, size, mtime_ns)
                self._quiet.scanned(key, entry.path, size, mtime_ns, known)
        return complete

    def _inside_real_root(self, path: str, key: str, cache: dict[str, bool]) -> bool:
        """False when a directory between root and ``path`` is a symlink."""
        parent_key = key.rpartition("/")[0]
        if not parent_key:
            return True
        parent = os.path.dirname(path)
        ok = cache.get(parent)
        if ok is None:
            expected = os.path.join(self._watch.real_root, *parent_key.split("/"))
            ok = cache[parent] = os.path.realpath(parent) == expected
        return ok
