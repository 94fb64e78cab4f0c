"""The daemon's periodic work on its scheduler: maintenance, source and sink checks, the
source-lag gauge, announcing decisions, the daily digest, resuming jobs held for a file that
has come, and the sources' own tasks.

One scheduler per daemon, never a shared job store (APScheduler 3). Jobs read the settings
through a getter when they run: a reload may change ``maintenance.retention_days``, and the
next run uses the new value.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Any

import structlog

from daemon.config.settings import Settings
from daemon.execution.missing_files import MissingFiles, newer_plan_exists
from daemon.queue.ledger import Ledger
from daemon.service.health import PartHealth, write_report
from daemon.service.metrics import Metrics
from daemon.sinks.base import Sink
from daemon.sources.base import Source
from daemon.types import JobState

__all__ = [
    "check_parts",
    "daily_digest",
    "resume_found_files",
    "run_maintenance",
    "start_scheduler",
    "update_source_lag",
]

# Seconds between looks for the files held jobs wait for (a stat each: cheap).
FOUND_FILES_INTERVAL = 2.0

log = structlog.get_logger("darkroom.app")  # the composition root's logger, as before the split


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def run_maintenance(
    settings: Callable[[], Settings], ledger: Ledger, sinks: dict[str, Sink]
) -> None:
    """Prune old ledger rows and temp files an earlier crash left in the sinks."""
    days = settings().maintenance.retention_days
    removed = ledger.prune(time.time() - days * 86400)
    orphans = sum(sink.cleanup_temp(older_than=3600) for sink in sinks.values())
    log.info(
        "maintenance",
        ledger_rows_pruned=removed,
        temp_files_removed=orphans,
        retention_days=days,
    )


def check_parts(settings: Callable[[], Settings], health: PartHealth) -> None:
    """Check every source and sink, then publish the verdicts for `darkroom status`."""
    health.check_all()
    current = settings()
    write_report(current.state_dir, health.states(), interval=current.metrics.check_interval)


def update_source_lag(ledger: Ledger, sources: dict[str, Source], metrics: Metrics) -> None:
    """The age of each source's oldest unfinished work, for darkroom_source_lag_seconds."""
    oldest = ledger.oldest_active_by_source()
    now = time.time()
    for name in sources:
        metrics.set_source_lag(name, now - oldest[name] if name in oldest else 0.0)


def resume_found_files(ledger: Ledger, missing: MissingFiles, wake: Callable[[], None]) -> None:
    """Queue again, at once, the held jobs whose missing file (a mask) is there now, or
    whose plan the file's arrival replaced; the rest keep waiting (and their backoff)."""
    if not len(missing):
        return
    missing.forget_unless(lambda job_id: _is_held(ledger, job_id))
    found = missing.found(lambda m: newer_plan_exists(ledger, m))
    if not found:
        return
    queued = ledger.retry(found)  # held jobs named here are queued at once
    if queued:
        log.info("held jobs resume: the file they waited for is there now", jobs=len(queued))
        wake()


def _is_held(ledger: Ledger, job_id: str) -> bool:
    try:
        return ledger.job(job_id).state == JobState.HELD
    except KeyError:  # pruned
        return False


def daily_digest(sinks: dict[str, Sink], day: datetime.date | None = None) -> list[str]:
    """Yesterday's (or ``day``'s) index sheets, one per rule, in every sink."""
    from daemon.outputs.digest import build_digest

    day = day or datetime.date.today() - datetime.timedelta(days=1)
    written = []
    for sink in sinks.values():
        try:
            written += build_digest(sink, day)
        except Exception:  # a digest is a view: log and carry on
            log.exception("daily digest failed", sink=sink.name, day=str(day))
    log.info("daily digest written", day=str(day), files=len(written))
    return written


def start_scheduler(
    settings: Callable[[], Settings],
    *,
    ledger: Ledger,
    sources: dict[str, Source],
    sinks: dict[str, Sink],
    metrics: Metrics,
    health: PartHealth,
    announce_decisions: Callable[[], None],
    any_source: bool,
    missing_files: MissingFiles | None = None,
    wake: Callable[[], None] = lambda: None,
) -> Any:
    """One scheduler per daemon (never a shared job store): sources' periodic work,
    maintenance, the daily digest, the source-lag gauge and, with ``missing_files``, the
    look for files held jobs wait for (``wake`` wakes the runner). Returns it started."""
    from daemon.service.scheduling import build_scheduler

    current = settings()
    scheduler = build_scheduler()
    if not any_source:
        scheduler.add_job(
            run_maintenance,
            "interval",
            args=(settings, ledger, sinks),
            seconds=current.maintenance.prune_interval,
            id="maintenance",
            max_instances=1,
            coalesce=True,
        )
        scheduler.add_job(
            check_parts,
            "interval",
            args=(settings, health),
            seconds=current.metrics.check_interval,
            id="health-checks",
            max_instances=1,
            coalesce=True,
            next_run_time=_now(),
        )
        scheduler.add_job(
            update_source_lag,
            "interval",
            args=(ledger, sources, metrics),
            seconds=15,
            id="source-lag",
            max_instances=1,
            coalesce=True,
            next_run_time=_now(),
        )
        scheduler.add_job(
            announce_decisions,
            "interval",
            seconds=2,
            id="decisions",
            max_instances=1,
            coalesce=True,
            next_run_time=_now(),
        )
    if missing_files is not None:
        scheduler.add_job(
            resume_found_files,
            "interval",
            args=(ledger, missing_files, wake),
            seconds=FOUND_FILES_INTERVAL,
            id="found-files",
            max_instances=1,
            coalesce=True,
        )
    if current.digest.enabled and not any_source:
        hour, minute = map(int, current.digest.at.split(":"))
        scheduler.add_job(
            daily_digest,
            "cron",
            args=(sinks,),
            hour=hour,
            minute=minute,
            id="digest",
            max_instances=1,
            coalesce=True,
        )
    for source in sources.values():
        for task in source.periodic():
            scheduler.add_job(
                task.function,
                "interval",
                seconds=task.interval_s,
                id=f"{source.name}:{task.name}",
                max_instances=1,
                coalesce=True,
                next_run_time=_now(),
            )
    scheduler.start()
    return scheduler
