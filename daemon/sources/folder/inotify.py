"""A Linux inotify observer for folder sources: one thread where watchdog's takes three.

watchdog's inotify observer passes every event through three threads and their queues (the
reader, the emitter with its delay for pairing moves, the dispatcher): about 80 µs of the
daemon's one core of Python per file in a 10,000-file burst, as much as intake spends
deciding the file. This observer reads the inotify descriptor on one thread, a buffer at a
time (at most every ``READ_PAUSE_S``, so a burst's events come in a few large reads), and
hands each event to the handler as the watchdog event the folder source already takes. It
has the surface RootWatch uses of a watchdog observer (``schedule``, ``start``, ``stop``,
``join``, ``is_alive``), so RootWatch and the tests' substitutes are unchanged; polling, and
platforms without inotify, keep watchdog's observers.

Kept from watchdog's behaviour, and what it adds:

- Recursive: every folder below the root is watched. A folder created or moved in is watched,
  with its subfolders, *before* its event is handed on, so the scan that event starts finds
  what was written into it before.
- A folder moved away or within the tree loses its watches; where it lands inside the tree,
  it is watched again under its new path.
- Symlinks are never followed (``IN_DONT_FOLLOW``; the walk does not enter them).
- Events lost to a full kernel queue (``IN_Q_OVERFLOW``), and folders that cannot be watched
  (``fs.inotify.max_user_watches`` reached: logged once, with the fix), call ``lost``, which
  wakes a rescan.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import struct
import sys
import threading
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

from daemon.sources.folder.watch import ALL_EVENTS

log = structlog.get_logger("darkroom.sources")

__all__ = ["READ_PAUSE_S", "InotifyObserver", "available"]

# After each read, the reader waits this long before the next, so that a burst's events
# gather into one large read rather than one read (and one GIL hand-off) each.
READ_PAUSE_S = 0.005
_BUFFER = 1 << 16

IN_MODIFY = 0x2
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_DONT_FOLLOW = 0x2000000
IN_ISDIR = 0x40000000
# Always asked for: folders created and moved (to watch them), and the folder itself going.
_TREE = IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
# A folder below the root that moves is handled at its parent's IN_MOVED_FROM / IN_MOVED_TO.
_GONE = IN_DELETE_SELF | IN_UNMOUNT | IN_IGNORED
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


class _Libc:
    """The three inotify calls, from the C library (glibc and musl have them)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.init1 = libc.inotify_init1
        self.init1.argtypes, self.init1.restype = [ctypes.c_int], ctypes.c_int
        self.add_watch = libc.inotify_add_watch
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.add_watch.restype = ctypes.c_int
        self.rm_watch = libc.inotify_rm_watch
        self.rm_watch.argtypes, self.rm_watch.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int


_libc: _Libc | None = None


def available() -> bool:
    """Whether this observer can run here (Linux, with a C library that has inotify)."""
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    if _libc is None:
        try:
            _libc = _Libc()
        except (OSError, AttributeError):
            return False
    return True


def _oserror(what: str, path: bytes | None = None) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}", os.fsdecode(path) if path else None)


class InotifyObserver:
    """Watches one folder tree with inotify; hands its events to one handler."""

    def __init__(self, lost: Callable[[], None] = lambda: None) -> None:
        self._lost = lost
        self._handler: FileSystemEventHandler | None = None
        self._root = b""
        self._wanted: frozenset[type[FileSystemEvent]] = frozenset()
        self._mask = _TREE
        self._fd = -1
        self._wake_r = self._wake_w = -1
        self._paths: dict[int, bytes] = {}  # watch descriptor -> folder
        self._watches: dict[bytes, int] = {}  # folder -> watch descriptor
        self._root_wd = -1
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._limit_logged = False

    # -- the watchdog observer surface RootWatch uses ---------------------------------------

    def schedule(
        self,
        handler: FileSystemEventHandler,
        path: str,
        *,
        recursive: bool = True,
        event_filter: list[type[FileSystemEvent]] | None = None,
    ) -> None:
        if not recursive:
            raise ValueError("InotifyObserver watches whole trees (recursive=True)")
        self._handler = handler
        self._root = os.fsencode(path).rstrip(b"/") or b"/"
        wanted = set(ALL_EVENTS if event_filter is None else event_filter)
        self._wanted = frozenset(wanted)
        self._mask = _TREE | (IN_CLOSE_WRITE if FileClosedEvent in wanted else 0)
        self._mask |= IN_MODIFY if FileModifiedEvent in wanted else 0

    def start(self) -> None:
        """Watch the tree (OSError when the root cannot be watched), then read on a thread."""
        if self._handler is None:
            raise RuntimeError("schedule() a handler before start()")
        if not available() or _libc is None:
            raise OSError(errno.ENOSYS, "inotify is not available here")
        fd = _libc.init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if fd < 0:
            raise _oserror("inotify_init1")  # e.g. EMFILE: fs.inotify.max_user_instances
        self._fd = fd
        try:
            self._root_wd = self._add(self._root, strict=True)
            self._watch_tree(self._root, skip_top=True)
            self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        except BaseException:
            self._close()
            raise
        self._thread = threading.Thread(target=self._run, name="darkroom-inotify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is None:
            self._close()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def healthy(self) -> bool:
        """Reading, and the root still watched (its removal ends the watch for good)."""
        return self.is_alive() and self._root_wd in self._paths

    # -- the reader thread --------------------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        try:
            while not self._stopping.is_set():
                poller.poll()
                if self._stopping.is_set():
                    break
                try:
                    data = os.read(self._fd, _BUFFER)
                except BlockingIOError:
                    continue
                try:
                    self._handle(data)
                except Exception:  # one bad buffer must not end the watch
                    log.exception("inotify events dropped; a rescan looks again")
                    self._lost()
                time.sleep(READ_PAUSE_S)
        except OSError as exc:  # the descriptor failed: the thread ends, RootWatch restarts
            log.error("folder watch stopped", root=os.fsdecode(self._root), error=str(exc))
        finally:
            self._close()

    def _handle(self, data: bytes) -> None:
        offset, end = 0, len(data)
        while offset < end:
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            name = data[offset + 16 : offset + 16 + length].rstrip(b"\0")
            offset += 16 + length
            if mask & IN_Q_OVERFLOW:
                log.warning("inotify queue overflowed; a rescan finds what was missed")
                self._lost()
                continue
            folder = self._paths.get(wd)
            if folder is None:  # a watch already dropped
                continue
            if not name:  # the watched folder itself: removed, or (the root) moved away
                if mask & _GONE or (mask & IN_MOVE_SELF and wd == self._root_wd):
                    self._forget(wd)
                continue
            path = folder + b"/" + name if folder != b"/" else b"/" + name
            if mask & IN_ISDIR:
                self._folder_event(mask, path)
            else:
                self._file_event(mask, path)

    def _file_event(self, mask: int, path: bytes) -> None:
        text = os.fsdecode(path)
        if mask & IN_CLOSE_WRITE:
            self._dispatch(FileClosedEvent(text))
        if mask & IN_CREATE:
            self._dispatch(FileCreatedEvent(text))
        if mask & IN_MOVED_TO:
            self._dispatch(FileMovedEvent("", text))
        if mask & IN_MODIFY:
            self._dispatch(FileModifiedEvent(text))

    def _folder_event(self, mask: int, path: bytes) -> None:
        if mask & IN_MOVED_FROM:  # away, or to a new name (then IN_MOVED_TO watches it again)
            self._unwatch_tree(path)
        if mask & (IN_CREATE | IN_MOVED_TO):
            # Watched before its event goes on: the scan that event starts then finds what
            # was written into it before, and events find what comes after.
            self._watch_tree(path)
            text = os.fsdecode(path)
            self._dispatch(DirCreatedEvent(text) if mask & IN_CREATE else DirMovedEvent("", text))

    def _dispatch(self, event: FileSystemEvent) -> None:
        if type(event) in self._wanted and self._handler is not None:
            self._handler.dispatch(event)

    # -- watches ------------------------------------------------------------------------------

    def _watch_tree(self, top: bytes, *, skip_top: bool = False) -> None:
        """Watch ``top`` and every folder below it (not through symlinks)."""
        stack = [top]
        while stack:
            folder = stack.pop()
            if not (skip_top and folder == top) and self._add(folder) < 0:
                continue
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        with contextlib.suppress(OSError):
                            if entry.is_dir(follow_symlinks=False):
                                stack.append(entry.path)
            except OSError:  # gone, or unreadable: the scan says so
                continue

    def _add(self, folder: bytes, *, strict: bool = False) -> int:
        """Watch ``folder``; its descriptor, or -1 when it cannot be watched (OSError when
        ``strict``: the root)."""
        assert _libc is not None
        # The root may be a symlink to a folder (followed); nothing below it is.
        mask = self._mask | IN_ONLYDIR | (0 if strict else IN_DONT_FOLLOW)
        wd = _libc.add_watch(self._fd, folder, mask)
        if wd < 0:
            error = _oserror("inotify_add_watch", folder)
            if strict:
                raise error
            if error.errno == errno.ENOSPC:
                self._watch_limit(folder)
            return -1  # vanished, replaced by a file or symlink, or unreadable
        old = self._paths.get(wd)
        if old is not None and old != folder:
            self._watches.pop(old, None)
        self._paths[wd] = folder
        self._watches[folder] = wd
        return wd

    def _unwatch_tree(self, top: bytes) -> None:
        prefix = top + b"/"
        for folder in [f for f in self._watches if f == top or f.startswith(prefix)]:
            wd = self._watches.pop(folder)
            self._paths.pop(wd, None)
            if _libc is not None:
                _libc.rm_watch(self._fd, wd)

    def _forget(self, wd: int) -> None:
        folder = self._paths.pop(wd, None)
        if folder is not None and self._watches.get(folder) == wd:
            del self._watches[folder]

    def _watch_limit(self, folder: bytes) -> None:
        self._lost()
        if self._limit_logged:
            return
        self._limit_logged = True
        log.error(
            "inotify watch limit reached: files in folders past it are found by rescans only",
            root=os.fsdecode(self._root),
            folder=os.fsdecode(folder),
            watched=len(self._paths),
            fix="raise fs.inotify.max_user_watches (sysctl -w fs.inotify.max_user_watches=524288)",
        )

    def _close(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._wake_r = self._wake_w = -1
        self._paths.clear()
        self._watches.clear()
