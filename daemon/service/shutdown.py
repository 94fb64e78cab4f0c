"""Stopping the daemon within its bound: intake first, the running job until the deadline,
then every other part in what is left of the grace.

Bounded: the process ends within ``worker.stop_timeout`` + :data:`STOP_GRACE` s whatever its
sources, sinks and webhook receivers do. Sources stop on their own threads while the running
job drains (an S3 receiver stuck on a dead endpoint costs no extra time), and every later step
gets what is left of the grace. What did not run stays queued in the ledger for the next start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from daemon.service.app import App

__all__ = ["STOP_GRACE", "start_thread", "stop"]

log = structlog.get_logger("darkroom.app")  # the composition root's logger, as before the split

# Seconds beyond worker.stop_timeout that stopping may take: workers, sources, webhooks.
STOP_GRACE = 5.0


def _left(deadline: float, floor: float = 0.0) -> float:
    """Seconds until ``deadline`` (monotonic), at least ``floor``."""
    return max(floor, deadline - time.monotonic())


def start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """``target`` on a started daemon thread (it never keeps the process alive)."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def stop(app: App) -> None:
    """Stop ``app``'s intake, let its running job finish until the deadline, stop the rest."""
    log.info("stopping: no new work is taken")
    started = time.monotonic()
    job_deadline = started + app.settings.worker.stop_timeout
    final_deadline = job_deadline + STOP_GRACE
    app.notifier.stopping("draining: finishing the running job")
    app.readiness.set_phase("stopping")
    app.watchdog.stop()
    ledger, runner = app.started_parts()
    if app.scheduler is not None:
        app.scheduler.shutdown(wait=False)  # its jobs run on daemon threads
    source_stops = [
        start_thread(source.stop, f"darkroom-stop:{name}") for name, source in app.sources.items()
    ]
    app.intake.stop(timeout=_left(job_deadline, floor=0.5))
    runner.stopping.set()
    runner.wake.set()
    for thread in app.threads:
        thread.join(_left(job_deadline))
    if any(t.is_alive() for t in app.threads):
        log.warning(
            "running job did not finish in time; it stays queued",
            timeout=app.settings.worker.stop_timeout,
        )
    app.pool.stop(timeout=_left(final_deadline, floor=0.5))
    app.decoder.close()
    for thread in app.threads:
        thread.join(_left(final_deadline, floor=0.5))
    # Acknowledgements of what the runner finished (SQS deletes); what is left when the
    # grace ends comes back from the queue and settles as a duplicate.
    settled = app.settle_thread.stop(timeout=_left(final_deadline, floor=0.1))
    for name, thread in zip(app.sources, source_stops, strict=True):
        thread.join(_left(final_deadline, floor=0.1))
        if thread.is_alive():
            log.warning("source did not stop in time; left behind", source=name)
    app.left_behind = [t.name for t in [*app.threads, *source_stops] if t.is_alive()]
    if not settled:
        app.left_behind.append("darkroom-settle")
    if app.webhooks is not None:
        app.webhooks.stop(timeout=_left(final_deadline, floor=0.5))
    if app.review_server is not None:
        app.review_server.stop()
    if app.decisions is not None:
        app.decisions.close()
    ledger.close()
    if app.metrics_server is not None:
        app.metrics_server.stop()
    app.lock.release()
    app.stopped.set()
    app.notifier.close()
    log.info("stopped", seconds=round(time.monotonic() - started, 2))
