"""Opening the daemon's state at start: the ledger with the settings' retry policy, and what
a crash left behind (temp files in the sinks removed, work that was running queued again)."""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from daemon.config.settings import Settings
from daemon.queue.ledger import Ledger
from daemon.sinks.base import Sink

__all__ = ["open_ledger", "remove_temp_files", "requeue_interrupted"]

log = structlog.get_logger("darkroom.app")  # the composition root's logger, as before the split


def open_ledger(settings: Settings) -> Ledger:
    """The ledger in the state folder, retrying and holding jobs as ``jobs:`` says."""
    return Ledger(
        settings.state_dir / "ledger.sqlite",
        max_attempts=settings.jobs.max_attempts,
        retry_backoff=settings.jobs.retry_backoff,
        hold_backoff=settings.jobs.hold_backoff,
        hold_backoff_max=settings.jobs.hold_backoff_max,
    )


def remove_temp_files(sinks: Mapping[str, Sink]) -> None:
    """Remove the temp files a killed process left in each sink: outputs are renamed into
    place when complete, so a temp file is never a finished output."""
    for sink in sinks.values():
        if removed := sink.cleanup_temp():
            log.info("removed temp files left by an earlier crash", sink=sink.name, files=removed)


def requeue_interrupted(ledger: Ledger) -> None:
    """Queue again the work that was running when the daemon stopped (or crashed)."""
    requeued = ledger.recover()
    if requeued:
        log.warning("work that was running when the daemon stopped is queued again", jobs=requeued)
