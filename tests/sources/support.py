"""Helpers for source tests: a thread-safe emit recorder, a deadline helper, a deaf observer."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from daemon.sources.folder import FolderSource
from daemon.types import Arrival
from tests import waiting

QUIET = 0.3  # quiet period used by most tests


def eventually(
    predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02
) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds (x the tests' PATIENCE)
    have passed."""
    return bool(waiting.eventually(predicate, timeout, interval))


class Recorder:
    """An ``emit`` that records arrivals (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.arrivals: list[Arrival] = []
        self.times: list[float] = []

    def __call__(self, arrival: Arrival) -> None:
        with self._lock:
            self.arrivals.append(arrival)
            self.times.append(time.monotonic())

    def snapshot(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)

    def emitted_keys(self) -> list[str]:
        return [a.key for a in self.snapshot()]

    def counts(self) -> Counter[str]:
        return Counter(self.emitted_keys())

    def wait_for_keys(self, *keys: str, timeout: float = 10.0) -> bool:
        wanted = set(keys)
        return eventually(lambda: wanted <= set(self.emitted_keys()), timeout)

    def last(self, key: str) -> Arrival:
        return [a for a in self.snapshot() if a.key == key][-1]


class DeafObserver:
    """A watchdog observer stand-in that delivers no events (every event is 'lost')."""

    emitters = ()

    def schedule(self, *args: object, **kwargs: object) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass

    def is_alive(self) -> bool:
        return True


class DeafFolderSource(FolderSource):
    """A folder source whose watch loses every event: only scans find files."""

    def _new_observer(self):  # type: ignore[override]
        return DeafObserver()


def never_known(key: str, size: int, mtime_ns: int) -> bool:
    return False


def write(path: Path, data: bytes = b"x" * 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
