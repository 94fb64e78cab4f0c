"""A folder sink: temp file + fsync + rename, so no partial output is ever visible."""

from __future__ import annotations

import builtins
import errno
import fcntl
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from daemon import faults
from daemon.errors import EnvironmentFault, OutputError, WriteConflict
from daemon.rules.templates import safe_relpath
from daemon.sinks.base import Sink

if TYPE_CHECKING:
    from daemon.config.settings import FolderSinkConfig

__all__ = ["LOCK_NAME", "FolderSink"]

# Taken for every compare-and-swap (the root index); dot-named, so never listed or indexed.
LOCK_NAME = ".darkroom.lock"


class FolderSink(Sink):
    """Outputs are files under ``root``; one daemon writes to a folder sink at a time."""

    def __init__(self, name: str, root: Path | str) -> None:
        self.name = name
        self.root = Path(root)

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
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
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

    def _target(self, path: str) -> Path:
        rel = safe_relpath(path)
        target = self.root / rel
        # A symlinked folder inside the sink must not carry writes outside it either.
        root = self.root.resolve()
        parent = target.parent.resolve() if target.parent.exists() else target.parent
        if target.parent.exists() and not parent.is_relative_to(root):
            raise OutputError(f"output path {path!r} resolves outside the sink root {root}")
        return target

    def write(
        self,
        path: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        target = self._target(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Dot-prefixed so that anything watching the output folder ignores it.
            fd, tmp = tempfile.mkstemp(
                prefix=f".{target.name[:200]}.", suffix=".tmp", dir=target.parent
            )
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                faults.point("after-temp-write")
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                # Not the input's fault: the job is held and tried again once space is freed.
                raise EnvironmentFault(
                    f"cannot write {target}: {exc.strerror}",
                    hint="the disk or quota is full; free space under the sink's root",
                ) from None
            raise OutputError(f"cannot write {target}: {exc.strerror}") from None
        return str(target)

    def read(self, path: str) -> bytes:
        target = self._target(path)
        try:
            return target.read_bytes()
        except OSError as exc:
            raise OutputError(f"cannot read {target}: {exc.strerror}") from None

    def cleanup_temp(self, older_than: float = 0.0) -> int:
        """Remove temp files a killed process left behind (``.name.XXXX.tmp``). Only one
        daemon writes to a folder sink, so at start every temp file is an orphan; later,
        only old ones are (``older_than`` seconds)."""
        removed = 0
        if not self.root.exists():
            return 0
        cutoff = time.time() - older_than
        for path in self.root.rglob(".*.tmp"):
            try:
                if older_than and path.stat().st_mtime > cutoff:
                    continue
                path.unlink()
                removed += 1
            except OSError:
                pass
        return removed

    def delete(self, path: str) -> None:
        try:
            self._target(path).unlink(missing_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot delete {self.location(path)}: {exc.strerror}") from None

    def list(self, prefix: str = "") -> builtins.list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def exists(self, path: str) -> bool:
        return self._target(path).is_file()

    def location(self, path: str) -> str:
        return str(self.root / safe_relpath(path))
