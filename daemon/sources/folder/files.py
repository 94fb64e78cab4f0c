"""A watched folder's files by key: which names are never inputs, and reading, moving and
quarantining a file without following symlinks out of the folder.

Every path below the root is walked from the root's descriptor (:mod:`daemon.safefs`), so a
symlink planted anywhere on the way is refused, never followed. Quarantine and processed
folders are the daemon's own: created by it (never group- or other-writable), refused when
they are a symlink or belong to another user (``UnsafeFolder``, an environment fault: the
input stays where it is).

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
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daemon.errors import InputChanged, InputError
from daemon.rules.globs import match_any
from daemon.safefs import Folder, UnsafeFolder
from daemon.sources.uploads import FileStamp

__all__ = ["TEMP_SUFFIXES", "FolderFiles", "is_ignored"]

TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".filepart", ".partial", ".download")
_ROOT_REOPEN_S = 1.0
_SYMLINK_HINT = "symlinks are not followed (one could point outside the watched folder)"
# What a move checks it still holds, by what the move is for (InputChanged says it).
_WHICH_BYTES = {"quarantined": "the bytes that failed", "moved": "the bytes that were processed"}


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
        self._local = threading.local()

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
        """The file's bytes; InputError when it is gone, a directory, unreadable or a symlink
        (or inside a symlinked folder): the path is walked from the root's descriptor."""
        self.path_for(key)  # validates the key
        fast = self._reading_root().open_read_beneath(key)
        if fast is not None:
            return _read_all(fast[0], f"{self.root}/{key}", fast[1])
        # No openat2, or the open failed: the walk, which says why.
        where = f"{self.root}/{key}"
        parts = key.split("/")
        try:
            folder = self._parent(parts)
            with folder:
                fd = folder.open_read(parts[-1])
        except (FileNotFoundError, NotADirectoryError):
            raise InputError(f"{where}: file vanished before it could be read", gone=True) from None
        except IsADirectoryError:
            raise InputError(f"{where}: is a directory") from None
        except PermissionError:
            raise InputError(f"{where}: permission denied") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InputError(f"{where}: is a symlink; {_SYMLINK_HINT}") from None
            if exc.errno == errno.EINVAL:
                raise InputError(f"{where}: is not a regular file") from None
            raise InputError(f"{where}: could not be read: {exc.strerror}") from None
        return _read_all(fd, where)

    def _reading_root(self) -> Folder:
        """The root's descriptor, opened again at most once a second, one per thread (so
        none is closed while another thread resolves a path from it): a burst reads
        thousands of files, and the root is the operator's path, which may be replaced."""
        held: tuple[Folder, float] | None = getattr(self._local, "root", None)
        now = time.monotonic()
        if held is not None and now - held[1] < _ROOT_REOPEN_S:
            return held[0]
        if held is not None:
            held[0].close()
        root = Folder.anchor(self.root)
        self._local.root = (root, now)
        return root

    def _parent(self, parts: list[str]) -> Folder:
        """The folder holding the file ``parts``, walked from the root without following a
        symlink (InputError when one is in the way: inputs never live behind symlinks)."""
        with Folder.anchor(self.root) as root:
            try:
                return root.descend(parts[:-1])
            except UnsafeFolder:
                raise InputError(
                    f"{self.root}/{'/'.join(parts)}: is inside a symlinked folder; {_SYMLINK_HINT}"
                ) from None

    def owned(self, folder: Path | str) -> Folder:
        """Open, creating it when missing, a folder only the daemon writes (quarantine,
        processed): an absolute path (the source's config) or a path relative to the root (a
        rule's). Inside the root it is reached from the root's descriptor; the folder itself
        must not be a symlink and must belong to the daemon's user, else UnsafeFolder."""
        text = os.fspath(folder)
        if os.path.isabs(text):
            text = os.path.abspath(text)
            if not text.startswith(self._prefix):
                return Folder.owned_anchor(text)
            text = text[len(self._prefix) :]
        self.path_for(text)  # no '..', no absolute, no empty segment
        parts = text.split("/")
        with Folder.anchor(self.root) as root, root.descend(parts[:-1], create=True) as above:
            return above.child(parts[-1], create=True, owned=True)

    def move(
        self, key: str, folder: Path | str, target_key: str, *, sha256: str | None = None
    ) -> str:
        """Rename ``key`` to ``target_key`` inside the daemon-owned ``folder`` (see
        :meth:`owned`), never through a symlink and never over an existing file: when the
        name is taken (a file of that name was moved there before) it goes under a free one,
        ``stem.YYYYmmddTHHMMSS[-N].ext``. Returns where it went. With ``sha256`` only those
        bytes are moved, as in :meth:`quarantine`: a newer version at ``key`` stays where it
        is (InputChanged). UnsafeFolder when ``folder`` is refused; InputError otherwise."""
        self.path_for(target_key)
        parts, target_parts = key.split("/"), target_key.split("/")
        self.path_for(key)
        source_path = f"{self.root}/{key}"
        shown = f"{os.fspath(folder)}/{target_key}"
        try:
            with (
                self._parent(parts) as source,
                self.owned(folder) as base,
                base.descend(target_parts[:-1], create=True, owned=True) as target,
            ):
                shown = os.path.join(target.path, target_parts[-1])
                st = source.lstat(parts[-1])
                if st is None:
                    raise InputError(
                        f"{source_path}: file vanished before it could be moved", gone=True
                    )
                if not stat.S_ISREG(st.st_mode):
                    raise InputError(f"{source_path}: is not a regular file; not moving it")
                moved = _move_to_free_name(
                    source, parts[-1], target, target_parts[-1], sha256, source_path, "moved"
                )
                shown = os.path.join(target.path, moved)
        except OSError as exc:
            raise InputError(f"cannot move {source_path} to {shown}: {exc.strerror}") from None
        return shown

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

    def quarantine(self, key: str, record: dict[str, Any], folder: Path | str) -> str:
        """Move ``key`` into the daemon-owned ``folder`` (see :meth:`owned`; a timestamp
        added on a clash) with ``<name>.reason.json`` beside it; returns where it went.
        UnsafeFolder (nothing moved or written) when the folder is a symlink or another
        user's.

        When ``record`` has a ``sha256`` only those bytes are moved: the file is hashed
        through one descriptor, renamed, and the renamed file checked to be that very inode,
        unchanged. Anything else at the name (a re-export, an upload that went on) is a new
        version: InputChanged, and it stays where it is."""
        self.path_for(key)
        parts = key.split("/")
        name = parts[-1]
        source_path = f"{self.root}/{key}"
        shown = f"{os.fspath(folder)}/{key}"
        expected = record.get("sha256") or None
        try:
            with (
                self._parent(parts) as source,
                self.owned(folder) as base,
                base.descend(parts[:-1], create=True, owned=True) as target,
            ):
                shown = os.path.join(target.path, name)
                if source.lstat(name) is None:
                    target_name = _free_name(target, name)  # only the record is written
                else:
                    target_name = _move_to_free_name(
                        source, name, target, name, expected, source_path, "quarantined"
                    )
                shown = os.path.join(target.path, target_name)
                target.write_atomic(
                    target_name + ".reason.json", json.dumps(record, indent=2).encode()
                )
        except OSError as exc:
            raise InputError(
                f"cannot quarantine {source_path} to {shown}: {exc.strerror}"
            ) from None
        return shown


def _move_to_free_name(
    source: Folder,
    name: str,
    target: Folder,
    target_name: str,
    expected: str | None,
    shown: str,
    verb: str,
) -> str:
    """Rename ``name`` into ``target`` as ``target_name``, or a free name beside it when
    that is taken (never over anything); returns the name it got. With ``expected`` (a
    sha256) the file is hashed through one descriptor first and the renamed file checked to
    be that very inode, unchanged: anything else is a newer version (InputChanged; it stays
    where it is)."""
    held = _hashed_stamp(source, name) if expected else None
    if held is not None and held[0] != expected:
        raise InputChanged(
            f"{shown}: not {verb}: it no longer holds {_WHICH_BYTES.get(verb, 'those bytes')}"
            " (a newer version is processed on its own)"
        )
    free = _free_name(target, target_name)
    while True:
        try:
            source.move_to(name, target, free)
            break
        except FileExistsError:  # taken meanwhile: never overwrite
            free = _free_name(target, target_name, stamped=True)
    if held is not None:
        _check_moved(source, name, target, free, held[1], shown, verb)
    return free


def _read_all(fd: int, where: str, size: int | None = None) -> bytes:
    """Every byte of the open file ``fd`` (closed after), in as few reads as its size allows:
    one, when the file has not grown since ``size`` was taken. Each system call here hands
    the GIL to another thread and waits to win it back; in a burst that wait, not the call,
    is most of a read."""
    try:
        if size is None:
            size = os.fstat(fd).st_size
        chunks, total = [], 0
        want = max(size + 1, 1 << 16)
        while chunk := os.read(fd, want):
            chunks.append(chunk)
            total += len(chunk)
            if len(chunk) < want and total >= size:
                break  # short, with every byte the file had: its end (no extra read for EOF)
        return b"".join(chunks)
    except OSError as exc:
        raise InputError(f"{where}: could not be read: {exc.strerror}") from None
    finally:
        os.close(fd)


def _free_name(folder: Folder, name: str, *, stamped: bool = False) -> str:
    """``name``, or ``stem.YYYYmmddTHHMMSS[-N].suffix`` when something is there already."""
    if not stamped and folder.lstat(name) is None:
        return name
    stem, dot, suffix = name.rpartition(".") if "." in name[1:] else (name, "", "")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in range(1, 10_000):
        tail = stamp if n == 1 else f"{stamp}-{n}"
        candidate = f"{stem}.{tail}{dot}{suffix}" if dot else f"{name}.{tail}"
        if folder.lstat(candidate) is None:
            return candidate
    raise FileExistsError(errno.EEXIST, f"no free name in {folder.path}", name)


def _hashed_stamp(folder: Folder, name: str) -> tuple[str, FileStamp] | None:
    """(sha256, stamp) of the file ``name``, read through one no-follow descriptor and
    stamped before and after reading (None: no file there). A file written meanwhile gets
    the hash ""."""
    try:
        fd = folder.open_read(name)
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


def _check_moved(
    source: Folder,
    name: str,
    target: Folder,
    target_name: str,
    hashed: FileStamp,
    shown: str,
    verb: str,
) -> None:
    """After the rename: the moved file must be the one that was hashed, unchanged. If a
    writer replaced or extended it between the hash and the rename, put it back (never over
    a file that appeared at the name meanwhile) and say so."""
    st = target.lstat(target_name)
    if st is None or FileStamp(st.st_size, st.st_mtime_ns, st.st_ino) == hashed:
        return
    try:
        # link() fails if the name was taken meanwhile: never overwrite.
        os.link(
            target_name, name, src_dir_fd=target.fd, dst_dir_fd=source.fd, follow_symlinks=False
        )
        os.unlink(target_name, dir_fd=target.fd)
    except OSError:
        return  # the name has a newer file still; the moved one is kept with its record
    raise InputChanged(
        f"{shown}: not {verb}: it changed while being moved (a newer version is"
        " processed on its own)"
    )
