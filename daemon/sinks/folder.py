"""A folder sink: temp file + fsync + rename, so no partial output is ever visible.

Below the configured root nothing is looked up by path: every write, read and delete walks
from the root's descriptor without following symlinks (:mod:`daemon.safefs`), so a symlinked
folder inside the sink is refused (the job is held with the path and the fix) instead of
carrying a write elsewhere. Files are created ``0o666`` and folders ``0o777`` and left to
the process umask.
"""

from __future__ import annotations

import builtins
import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from daemon import faults
from daemon.errors import EnvironmentFault, OutputError, WriteConflict
from daemon.rules.templates import safe_relpath
from daemon.safefs import FILE_MODE, Folder, UnsafeFolder
from daemon.sinks.base import Sink, content_version

if TYPE_CHECKING:
    from daemon.config.settings import FolderSinkConfig

__all__ = ["LOCK_NAME", "FolderSink"]

# Taken for every compare-and-swap (the root index); dot-named, so never listed or indexed.
LOCK_NAME = ".darkroom.lock"
_VERSIONS_KEPT = 256  # the files whose version was hashed last (the index, recent manifests)
_STAMP_SETTLED_NS = 100_000_000  # file times advance in ticks of a few ms (jiffies)


class FolderSink(Sink):
    """Outputs are files under ``root``; one daemon writes to a folder sink at a time."""

    def __init__(self, name: str, root: Path | str) -> None:
        self.name = name
        self.root = Path(root)
        self._versions: dict[str, tuple[tuple[int, ...], str]] = {}  # path -> (stat, token)
        self._versions_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FolderSink({self.name!r}, {str(self.root)!r})"

    @classmethod
    def from_config(cls, name: str, config: FolderSinkConfig) -> FolderSink:
        return cls(name, config.path)

    def local_root(self) -> Path:
        return self.root

    def write_manifest(self, path: str, data: bytes, *, replacing: str | None = None) -> str:
        # One daemon per output folder (a folder sink is not shared between machines), and
        # ``darkroom review`` may rewrite a manifest while a new round runs: a plain atomic
        # replace is right here.
        return self.write(path, data, "application/json")

    def write_if(
        self,
        path: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        replacing: str | None,
    ) -> str:
        """Compare-and-swap under an exclusive lock on ``.darkroom.lock`` in the sink root,
        which every process writing this folder (daemons, ``darkroom review``) takes."""
        lock_path = self.root / LOCK_NAME
        try:
            with Folder.anchor(self.root, create=True) as root:
                # O_NOFOLLOW: a planted symlink at the lock's name must not create or truncate
                # a file elsewhere.
                fd = os.open(
                    LOCK_NAME,
                    os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                    FILE_MODE,
                    dir_fd=root.fd,
                )
        except OSError as exc:
            raise OutputError(f"cannot lock {lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = self.version(path)
            if current != replacing:
                raise WriteConflict(
                    f"{self.location(path)} changed while it was being updated"
                    f" (expected {replacing or 'none'}, found {current or 'none'})"
                )
            return self.write(path, data, content_type)
        finally:
            os.close(fd)  # closing releases the lock

    def _folder(self, parts: builtins.list[str], *, create: bool) -> Folder:
        """The folder holding an output, reached from the root without following a symlink:
        a symlinked folder inside the sink never carries a write (or a read) outside it,
        whether the folders below it exist yet or not."""
        with Folder.anchor(self.root, create=create) as root:
            return root.descend(parts, create=create)

    def write(
        self,
        path: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        parts = safe_relpath(path).split("/")
        target = self.root.joinpath(*parts)
        try:
            with self._folder(parts[:-1], create=True) as folder:
                # Created 0o666 and left to the umask (UMask=0027 -> 0640): never chmod'ed.
                folder.write_atomic(
                    parts[-1], data, before_rename=lambda: faults.point("after-temp-write")
                )
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                # Not the input's fault: the job is held and tried again once space is freed.
                raise EnvironmentFault(
                    f"cannot write {target}: {exc.strerror}",
                    hint="the disk or quota is full; free space under the sink's root",
                ) from None
            raise OutputError(f"cannot write {target}: {exc.strerror}") from None
        return str(target)

    def version(self, path: str) -> str | None:
        """The sha256 of the file's bytes (see :meth:`Sink.version`), hashed again only
        when the file changed: the root index is asked its version several times per
        finished plan, and at 10,000 sources it is megabytes. A write here is a rename of
        a new file (a new inode) and an edit in place changes the ctime, so an unchanged
        (device, inode, size, mtime, ctime) is an unchanged file -- once that ctime is older
        than a timestamp tick or two: within one, a freed inode taken again by a write of the
        same size could carry the same stamp."""
        parts = safe_relpath(path).split("/")
        try:
            with self._folder(parts[:-1], create=False) as folder:
                fd = folder.open_read(parts[-1])
        except (UnsafeFolder, OSError):
            return super().version(path)  # gone, a symlink, unreadable: read() says which
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            with self._versions_lock:
                known = self._versions.get(path)
            settled = time.time_ns() - st.st_ctime_ns > _STAMP_SETTLED_NS
            if known is not None and known[0] == stamp and settled:
                return known[1]
            token = content_version(fh.read())
        with self._versions_lock:
            self._versions[path] = (stamp, token)
            if len(self._versions) > _VERSIONS_KEPT:
                self._versions.pop(next(iter(self._versions)))
        return token

    def read(self, path: str) -> bytes:
        parts = safe_relpath(path).split("/")
        target = self.root.joinpath(*parts)
        try:
            with self._folder(parts[:-1], create=False) as folder:
                fd = folder.open_read(parts[-1])
            with os.fdopen(fd, "rb") as fh:
                return fh.read()
        except UnsafeFolder as exc:
            raise OutputError(f"cannot read {target}: {exc}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OutputError(f"cannot read {target}: it is a symlink") from None
            raise OutputError(f"cannot read {target}: {exc.strerror}") from None

    def cleanup_temp(self, older_than: float = 0.0) -> int:
        """Remove temp files a killed process left behind (``.name.XXXX.tmp``). Only one
        daemon writes to a folder sink, so at start every temp file is an orphan; later,
        only old ones are (``older_than`` seconds)."""
        removed = 0
        if not self.root.exists():
            return 0
        cutoff = time.time() - older_than
        with Folder.anchor(self.root) as root:
            for folder, name, _ in root.walk_files():
                if not (name.startswith(".") and name.endswith(".tmp")):
                    continue
                try:
                    st = folder.lstat(name)
                    if st is None or (older_than and st.st_mtime > cutoff):
                        continue
                    os.unlink(name, dir_fd=folder.fd)
                    removed += 1
                except OSError:
                    pass
        return removed

    def delete(self, path: str) -> None:
        parts = safe_relpath(path).split("/")
        try:
            with self._folder(parts[:-1], create=False) as folder:
                os.unlink(parts[-1], dir_fd=folder.fd)
        except FileNotFoundError:
            return
        except UnsafeFolder as exc:
            raise OutputError(f"cannot delete {self.location(path)}: {exc}") from None
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                return  # a parent is a file: there is no such output
            raise OutputError(f"cannot delete {self.location(path)}: {exc.strerror}") from None

    def list(self, prefix: str = "") -> builtins.list[str]:
        parts = safe_relpath(prefix).split("/") if prefix.strip("/") else []
        base = "/".join(parts) + "/" if parts else ""
        try:
            folder = self._folder(parts, create=False)
        except (OSError, UnsafeFolder):
            return []
        with folder:
            return sorted(
                base + rel
                for _, _, rel in folder.walk_files()
                if not rel.rpartition("/")[2].startswith(".")
            )

    def exists(self, path: str) -> bool:
        """Whether a regular file is there, reached without following a symlink."""
        parts = safe_relpath(path).split("/")
        try:
            with self._folder(parts[:-1], create=False) as folder:
                st = folder.lstat(parts[-1])
        except (OSError, UnsafeFolder):
            return False
        return st is not None and stat.S_ISREG(st.st_mode)

    def location(self, path: str) -> str:
        return str(self.root / safe_relpath(path))
