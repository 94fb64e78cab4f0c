"""Helpers for source tests: a thread-safe emit recorder, a deadline helper, a deaf observer."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from daemon.sources.folder import FolderSource
from daemon.types import Arrival
from tests import waiting

QUIET = 0.3  # quiet period used by most tests
BARRIER = "zz-barrier-"  # files settle() writes; a Recorder keeps them apart
_barriers = itertools.count()


def eventually(
    predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02
) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds (x the tests' PATIENCE)
    have passed."""
    return bool(waiting.eventually(predicate, timeout, interval))


class Recorder:
    """An ``emit`` that records arrivals (thread-safe); settle()'s barrier files are kept
    apart, in ``barriers``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.arrivals: list[Arrival] = []
        self.times: list[float] = []
        self.barriers: list[str] = []

    def __call__(self, arrival: Arrival) -> None:
        with self._lock:
            if arrival.key.startswith(BARRIER):
                self.barriers.append(arrival.key)
                return
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


def settle(source: FolderSource, recorder: Recorder) -> None:
    """The barrier before a negative check: when it returns, ``source`` has looked at every
    file now on disk and has delivered everything it decided to emit.

    A scan gates every file present; the gate then decides on each (nothing pending). A
    barrier file written after that is emitted by a later gate tick, and the gate thread
    delivers one tick after the other, so every emit decided before it has returned."""
    source.scan()
    waiting.wait_for(lambda: source.pending_count() == 0, 10, "every candidate decided")
    key = f"{BARRIER}{next(_barriers)}.jpg"
    write(source.root / key)
    source.scan()
    waiting.wait_for(lambda: key in recorder.barriers, 10, f"the barrier file {key}")


def wait_for_log(logs: list[dict], *events: str, timeout: float = 10.0) -> None:
    """Wait until structlog's captured ``logs`` hold a line whose event is one of ``events``."""
    waiting.wait_for(
        lambda: any(e["event"] in events for e in list(logs)),
        timeout,
        "a log line: " + " or ".join(repr(e) for e in events),
    )


def rescans(source: FolderSource) -> int:
    """How many scans ``source`` has begun (periodic ones included). Once it has grown by
    n + 1, n whole scans ran since it was read."""
    return source.scans_begun


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
