"""When a file in a watched folder is complete: size and mtime_ns unchanged for a quiet period.

Close-after-write is only a hint (network shares never send it), so every path an event or a
scan reports becomes a *candidate*; the gate thread looks at the candidates every tick, and one
whose ``(size, mtime_ns)`` has not changed for ``quiet_period`` seconds is *complete*. An event
for a candidate restarts its quiet period (it means "still being written"); one that vanishes or
stops being a regular file is dropped.

``handled`` remembers the ``(size, mtime_ns)`` last found complete per key, so the same version
is completed at most once per process while it stays in the folder; a full rescan forgets keys
whose files are gone (memory stays bounded). Thread-safe: one lock guards everything here.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Candidate", "DirStamps", "QuietPeriod", "Ready"]

# A periodic rescan stats every file (to see in-place changes whose events were lost) one
# time in this many; the others stat only files in folders whose listing changed.
FULL_RESCAN_EVERY = 5


@dataclass
class Candidate:
    """A file waiting for its quiet period."""

    path: str
    size: int
    mtime_ns: int
    since: float  # monotonic time this (size, mtime_ns) was first seen


@dataclass(frozen=True)
class Ready:
    """A file found complete, to be emitted unless ``known()`` says it was handled."""

    key: str
    path: str
    size: int
    mtime_ns: int


class QuietPeriod:
    """The candidates of one folder source, and the versions already found complete."""

    def __init__(self, quiet_period: float) -> None:
        self.quiet_period = float(quiet_period)
        self._lock = threading.Lock()
        self._inbox: set[str] = set()  # file paths from events, not yet looked at
        self._inbox_dirs: set[str] = set()  # created / moved-in directories to scan
        self._pending: dict[str, Candidate] = {}
        self._handled: dict[str, tuple[int, int, float]] = {}  # key -> size, mtime_ns, when

    # -- events (watchdog's dispatch thread: cheap, never blocks on the filesystem) --------------

    def event(self, path: str, *, directory: bool) -> None:
        with self._lock:
            (self._inbox_dirs if directory else self._inbox).add(path)

    def take_events(self) -> tuple[set[str], set[str]]:
        """(file paths, directory paths) reported since the last call."""
        with self._lock:
            paths, dirs = self._inbox, self._inbox_dirs
            self._inbox, self._inbox_dirs = set(), set()
        return paths, dirs

    # -- candidates ------------------------------------------------------------------------------

    def changed(self, key: str, path: str, size: int, mtime_ns: int) -> None:
        """An event for ``key``: a new candidate, or its quiet period starts again."""
        now = time.monotonic()
        with self._lock:
            if self._is_handled(key, size, mtime_ns):
                return
            candidate = self._pending.get(key)
            if candidate is None:
                self._pending[key] = Candidate(path, size, mtime_ns, now)
            else:
                candidate.path = path
                candidate.size, candidate.mtime_ns, candidate.since = size, mtime_ns, now

    def scanned(
        self, key: str, path: str, size: int, mtime_ns: int, known: Callable[[], bool]
    ) -> None:
        """A scan found ``key``: a candidate unless it is pending, handled or ``known()``.
        ``known`` is called without the lock held (it asks the ledger)."""
        with self._lock:
            if self._is_handled(key, size, mtime_ns) or key in self._pending:
                return
        is_known = known()
        now = time.monotonic()
        with self._lock:
            if is_known:
                self._handled[key] = (size, mtime_ns, now)
                return
            if self._is_handled(key, size, mtime_ns) or key in self._pending:
                return
            self._pending[key] = Candidate(path, size, mtime_ns, now)

    def complete(self) -> list[Ready]:
        """Look at every candidate once; return those quiet for ``quiet_period`` seconds."""
        now = time.monotonic()
        with self._lock:
            # Only candidates whose quiet period may be over are looked at: a younger one's
            # stat could only restart its period, and the stat taken once it is due catches
            # any change as well (a burst of 10,000 is a stat each, not one per tick each).
            candidates = [
                (key, c) for key, c in self._pending.items() if now - c.since >= self.quiet_period
            ]
        ready: list[Ready] = []
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
                    candidate.size, candidate.mtime_ns = st.st_size, st.st_mtime_ns
                    candidate.since = now
                    continue
                if now - candidate.since < self.quiet_period:
                    continue
                del self._pending[key]
                if self._is_handled(key, st.st_size, st.st_mtime_ns):
                    continue
                self._handled[key] = (st.st_size, st.st_mtime_ns, now)
            ready.append(Ready(key, candidate.path, st.st_size, st.st_mtime_ns))
        return ready

    def forget_gone(self, present: set[str], before: float) -> None:
        """After a complete scan: forget handled keys not found, handled before ``before``."""
        with self._lock:
            gone = [k for k, v in self._handled.items() if k not in present and v[2] < before]
            for key in gone:
                del self._handled[key]

    def is_settled(self, key: str) -> bool:
        """Whether ``key`` is pending or was found complete (read without the lock, as
        ``is_pending``)."""
        return key in self._pending or key in self._handled

    def is_pending(self, key: str) -> bool:
        """Whether ``key`` waits for its quiet period (read without the lock: one dict
        lookup, asked for every file of a rescan; a stale answer is corrected by the gate's
        own stat or by the next rescan)."""
        return key in self._pending

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def clear(self) -> None:
        """Drop candidates and unread events (the source stopped); ``handled`` is kept."""
        with self._lock:
            self._pending.clear()
            self._inbox.clear()
            self._inbox_dirs.clear()

    def _is_handled(self, key: str, size: int, mtime_ns: int) -> bool:
        handled = self._handled.get(key)
        return handled is not None and handled[:2] == (size, mtime_ns)


class DirStamps:
    """The (mtime_ns, inode) of each folder when a rescan last listed it.

    A folder's mtime changes whenever a name in it is added, removed or renamed, not when a
    file in it is rewritten in place. So a periodic rescan that finds a folder's stamp
    unchanged skips the stat of its files that are already pending or handled (new names
    cannot be there), except on every ``FULL_RESCAN_EVERY``-th pass, which stats them all:
    a file rewritten in place while its events were lost is found within that many rescan
    intervals; anything added to a folder, at the next rescan. Used by one scan at a time.
    """

    def __init__(self) -> None:
        self._stamps: dict[str, tuple[int, int]] = {}
        self.passes = 0

    def next_pass_is_full(self) -> bool:
        full = self.passes % FULL_RESCAN_EVERY == 0
        self.passes += 1
        return full

    def unchanged(self, directory: str) -> bool:
        """Whether ``directory`` has the stamp it had when last listed; records the stamp
        taken now (before the listing that follows: a name added meanwhile changes it)."""
        try:
            st = os.stat(directory, follow_symlinks=False)
        except OSError:
            self._stamps.pop(directory, None)
            return False
        stamp = (st.st_mtime_ns, st.st_ino)
        before = self._stamps.get(directory)
        self._stamps[directory] = stamp
        return before == stamp

    def keep_only(self, directories: set[str]) -> None:
        """After a complete rescan: forget folders that are gone (memory stays bounded)."""
        for directory in [d for d in self._stamps if d not in directories]:
            del self._stamps[directory]
