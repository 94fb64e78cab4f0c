"""A second process that decides a burst's arrivals, off the main process's GIL.

In a burst of 10,000 files, deciding (reading, hashing, matching, planning) is half of what
the main process does, and everything the main process does shares one core: its GIL. Here
the deciding runs in a child process (:mod:`daemon.intake.decide_child`), on another core,
while the main process writes, logs and runs what was decided before.

- It is started by the first burst: when the intake queue holds ``START_BACKLOG`` arrivals.
  A daemon that sees a file a minute never pays for it (about 40 MiB and half a second of
  imports), and neither does a machine with one core. Until it says it is ready, the intake
  thread decides as before.
- Once ready it decides the arrivals of a backlog (``ELSEWHERE_BACKLOG`` or more waiting),
  in chunks of up to ``CHUNK_ARRIVALS``, two in flight, and sends back each chunk's
  decisions in order with the log lines it made while deciding; the intake thread replays
  those lines in the main process (one log stream, in order). Files that trickle in (a
  `cp` at disk speed, one upload at a time) are decided in the intake thread: a round trip
  per file would cost more than it spares.
- Each decider drops its listing of a folder when it decides a sidecar or mask there; a
  sidecar decided in the main process is sent with the next chunk, so the child's listing
  goes too (:class:`Chunk`).
- The current rules go with the first chunk after each reload.
- What it cannot do alone comes back as :data:`IN_MAIN`, and the intake thread decides that
  arrival as before: an arrival that needs a write (an unreadable or oversized input is
  recorded and quarantined), one from a source it cannot read (S3: one GetObject per object,
  from the main process), and one that failed there unexpectedly.
- If it dies, the chunks it held are decided in the main process, the death is logged, and
  a later burst starts another (not sooner than ``RESTART_AFTER_S`` after).
- It exits when the daemon closes it, and by itself when the daemon is gone (its socket
  closes).

The two processes speak over a socket pair with :class:`multiprocessing.connection.Connection`
(length-prefixed pickles); the child is started with :mod:`subprocess`, not
:mod:`multiprocessing`, so it never re-imports the daemon's ``__main__``.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from daemon.intake.decisions import Decision
from daemon.intake.listing import MAX_AGE_S
from daemon.types import Arrival

if TYPE_CHECKING:
    from daemon.config.settings import LimitsConfig
    from daemon.rules.match import RuleSet
    from daemon.sources.base import Source

log = structlog.get_logger("darkroom.intake")

START_BACKLOG = 200  # arrivals waiting in the intake queue: a burst, worth a second process
ELSEWHERE_BACKLOG = 16  # arrivals waiting: a backlog worth a round trip to the child
CHUNK_ARRIVALS = 100  # per message: about 40 ms of deciding, small enough to keep both busy
IN_FLIGHT = 2  # chunks sent and not yet answered: one decided while the other travels
RESTART_AFTER_S = 60.0  # after it died, the earliest another starts
STALE_KEPT = 4096  # stale folders remembered for the child; beyond, all its listings go
READY_TIMEOUT_S = 120.0  # a child that never says it is ready is given up on


@dataclass(frozen=True)
class LogLine:
    """A line logged in the child, replayed in the main process."""

    logger: str
    method: str  # "info", "warning", ...
    fields: dict[str, Any]  # "event" and the line's keys


@dataclass(frozen=True)
class Decided:
    """One arrival's decision, made in the child, and the lines it logged meanwhile."""

    decision: Decision
    lines: tuple[LogLine, ...] = ()


class InMain:
    """The child could not decide this arrival alone: the main process decides it."""

    def __repr__(self) -> str:
        return "IN_MAIN"


IN_MAIN = InMain()
Outcome = Decided | InMain


@dataclass(frozen=True)
class ChildSetup:
    """What the child needs to decide as the main process would (sent once, pickled)."""

    sources: Mapping[str, Callable[[], Source]]  # reader factories, by source name
    rules_dir: Path
    reference_dirs: Mapping[str, Path] = field(default_factory=dict)
    limits: LimitsConfig | None = None
    any_source: bool = False
    log_level: int = logging.INFO
    listing_max_age: float = MAX_AGE_S  # daemon.intake.listing: how long a listing serves


@dataclass(frozen=True)
class Chunk:
    """Arrivals to decide, with the rules when they changed since the last chunk, and the
    folders whose listings are stale: a sidecar or mask arrived there and was decided in the
    main process (each decider drops its listing when it decides one; the other must too)."""

    arrivals: list[Arrival]
    rules: RuleSet | None = None
    # (source, key of the sidecar); None: every listing (more were decided here than kept)
    stale_listings: tuple[tuple[str, str], ...] | None = ()


READY = "ready"


class DecideProcess:
    """The main process's handle on the child; used by the intake thread alone."""

    def __init__(
        self,
        setup: ChildSetup,
        *,
        start_backlog: int = START_BACKLOG,
        elsewhere_backlog: int = ELSEWHERE_BACKLOG,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.setup = setup
        self.start_backlog = start_backlog
        self.elsewhere_backlog = elsewhere_backlog
        self._clock = clock
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._ready = False
        self._started_at = 0.0
        self._died_at: float | None = None
        self._rules_sent: object | None = None
        self.decided = 0  # arrivals it decided (not sent back), since the daemon started
        self._stale: list[tuple[str, str]] | None = []  # None: all of them

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def usable(self, backlog: int) -> bool:
        """Whether the next arrivals go to the child: it is ready. ``backlog`` (arrivals
        waiting) starts it when it is a burst's."""
        if self._ready:
            return True
        if self._conn is None:
            if backlog >= self.start_backlog and self._may_start():
                self._start()
            return False
        try:
            if not self._conn.poll(0):
                if self._clock() - self._started_at > READY_TIMEOUT_S:
                    self._died(f"not ready after {READY_TIMEOUT_S:.0f} s")
                return False
            message = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._died(f"it exited while starting ({exc.__class__.__name__})")
            return False
        if message != READY:
            self._died(f"it said {message!r} instead of ready")
            return False
        self._ready = True
        log.info("a second process decides this burst's arrivals", pid=self.pid)
        return True

    def listing_stale(self, source: str, key: str) -> None:
        """The main process decided the sidecar or mask ``key``: the child's listing of its
        folder goes before the next chunk is decided there."""
        if self._conn is None or self._stale is None:
            return
        self._stale.append((source, key))
        if len(self._stale) > STALE_KEPT:  # months of sidecars between two bursts
            self._stale = None

    def send(self, arrivals: list[Arrival], rules: RuleSet) -> bool:
        """Send a chunk (and the rules, when they changed); False when the child is gone."""
        assert self._conn is not None and self._ready
        changed = rules is not self._rules_sent
        stale = None if self._stale is None else tuple(self._stale)
        chunk = Chunk(arrivals, rules if changed else None, stale)
        try:
            self._conn.send(chunk)
        except (OSError, ValueError) as exc:
            self._died(f"sending failed ({exc.__class__.__name__}: {exc})")
            return False
        self._stale = []
        self._rules_sent = rules
        return True

    def receive(self) -> list[Outcome] | None:
        """The oldest chunk's outcomes, in order; None when the child died before sending
        them (then every chunk in flight is the caller's to decide)."""
        assert self._conn is not None
        try:
            outcomes: list[Outcome] = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._died(f"it exited ({exc.__class__.__name__})")
            return None
        self.decided += sum(isinstance(outcome, Decided) for outcome in outcomes)
        return outcomes

    def close(self, timeout: float = 5.0) -> None:
        """Tell the child to exit and wait for it (killed when it does not, in time)."""
        conn, process = self._conn, self._process
        self._conn, self._process, self._ready = None, None, False
        # A new child has no rules yet and lists every folder afresh.
        self._rules_sent, self._stale = None, []
        if conn is not None:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
            conn.close()
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- starting and losing the child --------------------------------------------------

    def _may_start(self) -> bool:
        if _usable_cores() < 2:
            return False  # one core: a second process only adds its own cost
        return self._died_at is None or self._clock() - self._died_at >= RESTART_AFTER_S

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        # The child imports this very package, wherever it was imported from here.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "daemon.intake.decide_child", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            ours.close()
            self._died(f"it could not be started ({exc})")
            return
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._started_at = self._clock()
        try:
            self._conn.send(self.setup)
        except (OSError, ValueError) as exc:
            self._died(f"its setup could not be sent ({exc.__class__.__name__}: {exc})")

    def _died(self, why: str) -> None:
        process = self._process
        self.close(timeout=1.0)
        self._died_at = self._clock()
        log.warning(
            "the second intake process is gone; the main process decides arrivals"
            f" (another starts with a burst after {RESTART_AFTER_S:.0f} s)",
            why=why,
            pid=process.pid if process is not None else None,
            returncode=process.poll() if process is not None else None,
        )


def _usable_cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)  # Linux: the cores we may run on
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def replay(lines: tuple[LogLine, ...]) -> None:
    """Log in this process the lines the child logged while deciding."""
    for line in lines:
        logger = structlog.get_logger(line.logger)
        fields = dict(line.fields)
        event = fields.pop("event", "")
        method = getattr(logger, line.method, None) or logger.info
        method(event, **fields)
