"""The state directory's lock: one daemon per state directory (and so per ledger).

The lock is an ``flock`` on ``<state_dir>/lock``, which holds the owner's pid for the error
message; the kernel releases it when the process dies, so a crash never leaves it stale.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from daemon.errors import StateLocked

__all__ = ["StateLock"]


class StateLock:
    """One daemon per state directory: a second one would corrupt nothing, but race."""

    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StateLocked(
                f"{self.path.parent} is in use by darkroom (pid {holder}); stop it first, "
                "or give this one its own state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
