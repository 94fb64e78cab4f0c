"""No-follow, directory-descriptor-relative file operations for every folder the daemon writes.

A drop folder (and sometimes an output folder) is writable by people the operator does not
control: a path the daemon builds there may meet a symlink planted to redirect a write, a
rename or a ``mkdir`` somewhere else. So below an *anchor* (a folder named in the config,
whose own path is the operator's and is resolved normally) nothing is ever looked up by a
path string:

- :meth:`Folder.descend` walks component by component with ``open(name, O_DIRECTORY |
  O_NOFOLLOW, dir_fd=parent)``, creating missing folders with ``mkdir(name, dir_fd=parent)``;
  a component that is a symlink is refused with the path and the fix.
- Files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and mode ``0o666`` (folders
  ``0o777``), so the kernel applies the process umask: ``UMask=0027`` gives ``0640`` outputs.
- Renames pass ``src_dir_fd``/``dst_dir_fd``; :meth:`Folder.move_to` never replaces a file
  (``renameat2(RENAME_NOREPLACE)``, or a no-follow existence check where the filesystem
  lacks it).
- *Owned* folders (quarantine, processed) must be the daemon's own: a symlink, or a folder
  whose owner is not the daemon's user, is refused (:class:`UnsafeFolder`), never used.

Refusals are :class:`UnsafeFolder` (an :class:`~daemon.errors.EnvironmentFault`: the folder,
not the input, is wrong; the job is held and its input stays). Other ``OSError`` s propagate
for the caller to translate.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from daemon.errors import EnvironmentFault

__all__ = ["DIR_MODE", "FILE_MODE", "OWNED_DIR_MODE", "Folder", "UnsafeFolder", "split_key"]

FILE_MODE = 0o666  # the kernel applies the umask: never chmod to a fixed mode
DIR_MODE = 0o777
# Quarantine and processed folders: never group/other-writable, whatever the umask, so only
# the daemon's user can put anything in them.
OWNED_DIR_MODE = 0o755

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_RENAME_NOREPLACE = 1  # linux/fs.h


class UnsafeFolder(EnvironmentFault):
    """A folder the daemon would write into is a symlink or belongs to another user."""

    def __init__(self, message: str, *, hint: str, path: str):
        super().__init__(message, hint=hint)
        self.path = path


def split_key(key: str) -> list[str]:
    """``a/b/c.png`` -> ``["a", "b", "c.png"]``; ValueError for empty, ``.`` or ``..`` parts."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise ValueError(f"invalid relative path {key!r}")
    return parts


class Folder:
    """An open directory descriptor and the path it was reached by (for messages only)."""

    def __init__(self, fd: int, path: str):
        self.fd = fd
        self.path = path

    def __repr__(self) -> str:
        return f"Folder({self.path!r}, fd={self.fd})"

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        # A Folder kept in a cache (a thread's, see daemon/sources/folder/files.py) is
        # dropped with it, never closed by hand: its descriptor goes with it.
        try:
            self.close()
        except Exception:  # at interpreter exit even ``os`` may be gone: never a warning
            pass

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def anchor(cls, path: Path | str, *, create: bool = False, mode: int = DIR_MODE) -> Folder:
        """Open a folder named in the config. Its own path is the operator's and is resolved
        as usual (the drop root itself may be a symlink); only what lies below is guarded."""
        text = os.fspath(path)
        if create:
            os.makedirs(text, mode=mode, exist_ok=True)
        return cls(os.open(text, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC), text)

    @classmethod
    def owned_anchor(cls, path: Path | str) -> Folder:
        """Open (creating it if missing) a daemon-owned folder named in the config by its
        absolute path: its parent is resolved as usual, the folder itself must not be a
        symlink and must belong to the daemon's user."""
        text = os.path.abspath(os.fspath(path))
        parent, name = os.path.split(text)
        with cls.anchor(parent, create=True) as above:
            return above.child(name, create=True, owned=True)

    def child(
        self, name: str, *, create: bool = False, owned: bool = False, mode: int | None = None
    ) -> Folder:
        """The subfolder ``name``, never through a symlink; created when missing and
        ``create``; with ``owned`` it must belong to the daemon's user."""
        path = os.path.join(self.path, name)
        if create:
            try:
                os.mkdir(
                    name,
                    (OWNED_DIR_MODE if owned else DIR_MODE) if mode is None else mode,
                    dir_fd=self.fd,
                )
            except FileExistsError:
                pass
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_symlink(self.fd, name):
                raise UnsafeFolder(
                    f"{path} is a symlink; refusing to follow it (it could point anywhere)",
                    hint=f"remove the symlink {path}: the daemon then creates a real folder"
                    " there itself",
                    path=path,
                ) from None
            raise
        if owned:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                os.close(fd)
                raise UnsafeFolder(
                    f"{path} belongs to uid {st.st_uid}, not to the daemon's user"
                    f" (uid {os.geteuid()}); refusing to write into it",
                    hint=f"remove {path} so the daemon creates it, or configure a folder"
                    " outside the watched folder that only the daemon's user can write",
                    path=path,
                )
        return Folder(fd, path)

    def descend(self, parts: Iterable[str], *, create: bool = False, owned: bool = False) -> Folder:
        """Walk ``parts`` one component at a time (see :meth:`child`); a new Folder even for
        no parts, so the caller always closes what it gets."""
        current = Folder(os.dup(self.fd), self.path)
        for part in parts:
            try:
                nxt = current.child(part, create=create, owned=owned)
            finally:
                current.close()
            current = nxt
        return current

    # -- files -------------------------------------------------------------------------------

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry ``name`` itself (a symlink is not followed); None when there is none."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open_read(self, name: str) -> int:
        """A read-only descriptor on the regular file ``name``, never through a symlink
        (OSError ``ELOOP`` when it is one; ``EISDIR``/``ENODEV``-like errors otherwise)."""
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC, dir_fd=self.fd)
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            os.close(fd)
            raise
        if not stat.S_ISREG(mode):
            os.close(fd)
            code = errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL
            raise OSError(code, "is a directory" if stat.S_ISDIR(mode) else "not a regular file")
        return fd

    def open_read_beneath(self, relpath: str) -> tuple[int, int] | None:
        """A read-only descriptor on the regular file at ``relpath`` below this folder,
        resolved by the kernel in one call (``openat2`` with ``RESOLVE_BENEATH |
        RESOLVE_NO_SYMLINKS``: no symlink anywhere on the way, never outside), with the size
        it has now; or None: no ``openat2`` here, or the open failed for any reason -- then
        the caller walks (:meth:`descend` and :meth:`open_read`), which says exactly why. A burst reads
        thousands of files; the walk costs a syscall per folder and per close, each a GIL
        hand-off, where this costs one."""
        if _openat2 is None:
            return None
        how = _OpenHow(
            os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC,
            0,
            _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS,
        )
        fd = _openat2(_SYS_OPENAT2, self.fd, os.fsencode(relpath), ctypes.byref(how), 24)
        if fd < 0:
            if ctypes.get_errno() in (errno.ENOSYS, errno.EPERM):
                _disable_openat2()  # an old kernel, or a seccomp filter that refuses it
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return fd, st.st_size

    def create(self, name: str, mode: int = FILE_MODE) -> int:
        """A new file ``name`` opened for writing: FileExistsError if anything (a symlink
        included) is there already."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
        return os.open(name, flags, mode, dir_fd=self.fd)

    def write_atomic(
        self, name: str, data: bytes, *, before_rename: Callable[[], None] | None = None
    ) -> None:
        """Replace ``name`` with ``data``: a dot-named temp file (exclusive, umask-moded),
        fsync, rename over ``name`` (a symlink there is replaced, never followed), fsync the
        folder. A reader sees the old file or the new one, never a part."""
        # Dot-prefixed so that anything watching the folder ignores it.
        prefix = f".{name[:200]}."
        while True:
            tmp = f"{prefix}{secrets.token_hex(4)}.tmp"
            try:
                fd = self.create(tmp)
                break
            except FileExistsError:
                continue
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if before_rename is not None:
                before_rename()
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except OSError:
                pass
            raise
        self.sync()

    def sync(self) -> None:
        os.fsync(self.fd)

    def move_to(self, name: str, target: Folder, target_name: str) -> None:
        """Rename ``name`` here to ``target_name`` in ``target``, never replacing anything
        there (FileExistsError). Neither name is followed if it is a symlink."""
        if _renameat2 is not None:
            result = _renameat2(
                self.fd,
                os.fsencode(name),
                target.fd,
                os.fsencode(target_name),
                _RENAME_NOREPLACE,
            )
            if result == 0:
                return
            code = ctypes.get_errno()
            if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
                if code == errno.EEXIST:
                    raise FileExistsError(code, os.strerror(code), target_name)
                raise OSError(code, os.strerror(code), name)
        # The filesystem cannot refuse to replace: check first (a window remains there).
        if target.lstat(target_name) is not None:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target_name)
        os.rename(name, target_name, src_dir_fd=self.fd, dst_dir_fd=target.fd)

    def walk_files(self) -> Iterator[tuple[Folder, str, str]]:
        """Every regular file below, as (its folder, its name, its relative path), without
        entering symlinked folders. The Folder handed out is closed after each folder."""
        yield from self._walk("")

    def _walk(self, prefix: str) -> Iterator[tuple[Folder, str, str]]:
        try:
            names = os.listdir(self.fd)
        except OSError:
            return
        subdirs = []
        for name in sorted(names):
            st = self.lstat(name)
            if st is None:
                continue
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(name)
            elif stat.S_ISREG(st.st_mode):
                yield self, name, prefix + name
        for name in subdirs:
            try:
                sub = Folder(
                    os.open(name, _DIR_FLAGS, dir_fd=self.fd), os.path.join(self.path, name)
                )
            except OSError:
                continue
            with sub:
                yield from sub._walk(prefix + name + "/")


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _load_renameat2() -> Callable[..., int] | None:
    """glibc's ``renameat2`` (2.28+), or None (then :meth:`Folder.move_to` checks first)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()

# openat2(2) (Linux 5.6+): resolve a whole relative path in the kernel without following
# any symlink and without leaving the starting folder. Called through CDLL, which releases
# the GIL: on a network share (NFS, SMB) a lookup can block for as long as the server takes,
# and no other thread of the daemon may wait for that.
_SYS_OPENAT2 = 437  # the same number on every architecture (the unified syscall table)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [  # noqa: RUF012 (ctypes' own declaration form)
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


def _load_openat2() -> Callable[..., int] | None:
    if not hasattr(os, "O_NOFOLLOW") or os.uname().sysname != "Linux":
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_long,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.POINTER(_OpenHow),
        ctypes.c_size_t,
    ]
    function.restype = ctypes.c_long
    return function


_openat2 = _load_openat2()


def _disable_openat2() -> None:
    global _openat2
    _openat2 = None
