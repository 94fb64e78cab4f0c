"""A watched folder's files by key: which names are never inputs, and reading, moving and
quarantining a file without following symlinks out of the folder.

Never candidates: directories; names ending in ``.part``, ``.tmp``, ``.crdownload``,
``.filepart``, ``.partial``, ``.download`` (any case); any path component starting with ``.``
(dot-files and dot-dirs, which covers rsync's ``.name.jpg.AbC123`` temp files and the default
``.quarantine/`` and ``.processed/`` folders); names starting with ``~$`` (Office lock files);
keys matching one of the source's ``ignore`` globs (daemon.rules.globs).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daemon.errors import InputChanged, InputError
from daemon.rules.globs import match_any
from daemon.sources.uploads import FileStamp

__all__ = ["TEMP_SUFFIXES", "FolderFiles", "is_ignored"]

TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".filepart", ".partial", ".download")
_SYMLINK_HINT = "symlinks are not followed (one could point outside the watched folder)"


def is_ignored(key: str, ignore: Sequence[str] = ()) -> bool:
    """Whether a source-relative key can never be a candidate (temp, hidden, lock or ignored)."""
    parts = key.split("/")
    if any(part.startswith(".") for part in parts):
        return True
    name = parts[-1]
    if name.startswith("~$") or name.lower().endswith(TEMP_SUFFIXES):
        return True
    return bool(ignore) and match_any(ignore, key)


class FolderFiles:
    """Keys (``shoots/a.jpg``) <-> paths under one root, and what can be done to a file."""

    def __init__(self, root: str, ignore: Sequence[str] = ()) -> None:
        self.root = root
        self.ignore = tuple(ignore)
        self._prefix = root.rstrip(os.sep) + os.sep

    def key_for(self, path: str) -> str | None:
        """The key of an absolute path under root, or None (outside root or never a candidate)."""
        if not path.startswith(self._prefix):
            return None
        key = path[len(self._prefix) :]
        if os.sep != "/":
            key = key.replace(os.sep, "/")
        if not key or is_ignored(key, self.ignore):
            return None
        return key

    def path_for(self, key: str) -> str:
        """The path of ``key``; InputError for keys that are empty or escape the root."""
        if not isinstance(key, str) or not key or "\0" in key:
            raise InputError(f"{self.root}: invalid key {key!r}")
        parts = key.split("/")
        if key.startswith("/") or ".." in parts:
            raise InputError(
                f"{self.root}: key {key!r} escapes the source folder (absolute or '..')"
            )
        if any(part in ("", ".") for part in parts):
            raise InputError(f"{self.root}: invalid key {key!r} (empty or '.' segment)")
        return os.path.join(self.root, *parts)

    def read(self, key: str) -> bytes:
        """The file's bytes; InputError when it is gone, a directory, unreadable or a symlink."""
        path = self.path_for(key)
        where = f"{self.root}/{key}"
        try:
            # Looking for an image's sidecars reads four names that mostly do not exist: one
            # lstat says so before realpath's syscall per folder level below.
            os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise InputError(f"{where}: file vanished before it could be read", gone=True) from None
        except OSError:
            pass  # reported by the open below
        parent = os.path.dirname(key)
        if parent and os.path.realpath(os.path.dirname(path)) != os.path.join(
            os.path.realpath(self.root), *parent.split("/")
        ):
            raise InputError(f"{where}: is inside a symlinked folder; {_SYMLINK_HINT}")
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
                raise InputError(f"{where}: is a symlink; {_SYMLINK_HINT}") from None
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

    def move(self, key: str, target_key: str) -> None:
        """Rename ``key`` to ``target_key`` (never over an existing file)."""
        source, target = Path(self.path_for(key)), Path(self.path_for(target_key))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                raise InputError(f"{target} exists already; not overwriting it")
            os.rename(source, target)
        except OSError as exc:
            raise InputError(f"cannot move {source} to {target}: {exc.strerror}") from None

    def stamp(self, key: str) -> FileStamp | None:
        """Size, mtime and inode of ``key`` (None: gone or not a regular file)."""
        try:
            st = os.lstat(self.path_for(key))
        except (OSError, InputError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return FileStamp(st.st_size, st.st_mtime_ns, st.st_ino)

    def sha256(self, key: str) -> str | None:
        """The sha256 of ``key``'s bytes now (None: gone or unreadable)."""
        try:
            return hashlib.sha256(self.read(key)).hexdigest()
        except InputError:
            return None

    def quarantine(self, key: str, record: dict[str, Any], folder: Path) -> str:
        """Move ``key`` into ``folder`` (a timestamp added on a clash) with
        ``<name>.reason.json`` beside it; returns where it went.

        When ``record`` has a ``sha256`` only those bytes are moved: the file is hashed
        through one descriptor, renamed, and the renamed file checked to be that very inode,
        unchanged. Anything else at the name (a re-export, an upload that went on) is a new
        version: InputChanged, and it stays where it is."""
        source = Path(self.path_for(key))
        target = folder / key
        if target.exists():
            target = target.with_name(
                f"{target.stem}.{time.strftime('%Y%m%dT%H%M%S')}{target.suffix}"
            )
        expected = record.get("sha256") or None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            held = _hashed_stamp(source) if expected else None
            if held is not None and held[0] != expected:
                raise InputChanged(
                    f"{source}: not quarantined: it no longer holds the bytes that failed"
                    " (a newer version is processed on its own)"
                )
            if source.exists():
                os.rename(source, target)
                if held is not None:
                    _check_moved(source, target, held[1])
            reason = target.with_name(target.name + ".reason.json")
            reason.write_text(json.dumps(record, indent=2))
        except OSError as exc:
            raise InputError(f"cannot quarantine {source} to {target}: {exc.strerror}") from None
        return str(target)


def _hashed_stamp(path: Path) -> tuple[str, FileStamp] | None:
    """(sha256, stamp) of the file at ``path``, read through one descriptor and stamped before
    and after reading (None: no file there). A file written meanwhile gets the hash ""."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return None
    with os.fdopen(fd, "rb") as f:
        before = os.fstat(fd)
        digest = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
        after = os.fstat(fd)
    stamp = FileStamp(after.st_size, after.st_mtime_ns, after.st_ino)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        return "", stamp
    return digest.hexdigest(), stamp


def _check_moved(source: Path, target: Path, hashed: FileStamp) -> None:
    """After the rename: the moved file must be the one that was hashed, unchanged. If a
    writer replaced or extended it between the hash and the rename, put it back (never over
    a file that appeared at the name meanwhile) and say so."""
    st = os.lstat(target)
    if FileStamp(st.st_size, st.st_mtime_ns, st.st_ino) == hashed:
        return
    try:
        os.link(target, source)  # fails if the name was taken meanwhile: never overwrite
        os.unlink(target)
    except OSError:
        return  # the name has a newer file still; the moved one is kept with its record
    raise InputChanged(
        f"{source}: not quarantined: it changed while being moved (a newer version is"
        " processed on its own)"
    )
