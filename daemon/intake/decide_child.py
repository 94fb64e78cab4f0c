"""The second intake process: decides chunks of arrivals for the main process.

Run as ``python -m daemon.intake.decide_child FD`` by
:class:`~daemon.intake.decide_process.DecideProcess`, with ``FD`` its end of a socket pair.
It reads the :class:`ChildSetup`, says it is ready, then answers each :class:`Chunk` with one
outcome per arrival, in order, until it is told to stop or the socket closes.

It decides with the same :class:`~daemon.intake.decider.Decider` as the main process, but
can write nothing: its ledger and its sources' writing methods raise :class:`NeedsMain`, and
that arrival goes back as :data:`IN_MAIN`, before anything else of it happened that the main
process would do again (the refusals touch the ledger and the source before they log). So do
arrivals from sources it has no reader for, and any arrival it fails on. What it logs is
captured, not printed, and goes back with the decision.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import MutableMapping
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, cast

import structlog

from daemon.intake.decide_process import (
    IN_MAIN,
    READY,
    ChildSetup,
    Chunk,
    Decided,
    LogLine,
    Outcome,
)
from daemon.intake.decider import Decider
from daemon.intake.refusals import unnameable
from daemon.queue.ledger import Ledger
from daemon.rules.match import RuleSet
from daemon.types import Arrival

if TYPE_CHECKING:
    from daemon.sources.base import Source


class NeedsMain(Exception):
    """This arrival needs what only the main process may do (a write)."""


class _NoLedger:
    """The ledger, as the child sees it: any use means the main process must decide."""

    def __getattr__(self, name: str) -> Any:
        raise NeedsMain(f"ledger.{name}")


class _ReadingOnly:
    """A source that reads and lists; anything else means the main process must decide."""

    def __init__(self, source: Any):
        self.name = source.name
        self.read = source.read
        if callable(getattr(source, "folder_names", None)):
            self.folder_names = source.folder_names

    def __getattr__(self, name: str) -> Any:
        raise NeedsMain(f"source.{name}")


class _Captured:
    """The log lines of the arrival being decided (a structlog processor that keeps them)."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        name = getattr(logger, "name", None) or "darkroom"
        self.lines.append(LogLine(name, "error" if method == "exception" else method, dict(event)))
        raise structlog.DropEvent

    def take(self) -> tuple[LogLine, ...]:
        lines, self.lines = tuple(self.lines), []
        return lines


class _CapturedRecords(logging.Handler):
    """The standard library's records (a library's, a warning's), kept the same way."""

    def __init__(self, captured: _Captured):
        super().__init__()
        self.captured = captured

    def emit(self, record: logging.LogRecord) -> None:
        fields = {"event": record.getMessage()}
        self.captured.lines.append(LogLine(record.name, record.levelname.lower(), fields))


def _capture_logs(level: int) -> _Captured:
    captured = _Captured()
    structlog.configure(
        processors=[structlog.processors.format_exc_info, captured],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers = [_CapturedRecords(captured)]
    root.setLevel(max(level, logging.WARNING))  # libraries' info lines are not ours to show
    logging.captureWarnings(True)
    return captured


def decide_one(decider: Decider, arrival: Arrival, captured: _Captured) -> Outcome:
    """``arrival``'s outcome: its decision and log lines, or IN_MAIN."""
    if arrival.source not in decider.sources or unnameable(arrival.key):
        return IN_MAIN  # unnameable names are recorded once per run, by the main process
    try:
        decision = decider.decide(arrival)
    except Exception:  # NeedsMain, or a failure the main process logs when it meets it
        captured.take()
        return IN_MAIN
    return Decided(decision, captured.take())


def serve(conn: Connection) -> None:
    setup: ChildSetup = conn.recv()
    captured = _capture_logs(setup.log_level)
    rules: list[RuleSet] = [RuleSet([])]
    decider = Decider(
        cast(Ledger, _NoLedger()),
        lambda: rules[0],
        {name: cast("Source", _ReadingOnly(build())) for name, build in setup.sources.items()},
        any_source=setup.any_source,
        rules_dir=setup.rules_dir,
        reference_dirs=setup.reference_dirs,
        limits=setup.limits,
    )
    decider.listings.max_age = setup.listing_max_age
    conn.send(READY)
    while True:
        try:
            chunk: Chunk | None = conn.recv()
        except EOFError:  # the daemon is gone
            return
        if chunk is None:
            return
        if chunk.rules is not None:
            rules[0] = chunk.rules
        if chunk.stale_listings is None:
            decider.listings.forget_all()
        for source, key in chunk.stale_listings or ():
            decider.listings.forget(source, key)
        conn.send([decide_one(decider, arrival, captured) for arrival in chunk.arrivals])


def main(argv: list[str]) -> int:
    # Ctrl-C and systemd's stop reach the whole process group, or cgroup: the daemon
    # stops us once what we hold is decided, or we see it gone (the socket closes).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(int(argv[1]))
    try:
        serve(conn)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the daemon is gone, or closed us mid-answer
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
