"""What ``darkroom status`` shows beyond the queue: sources and sinks, and the --json document.

The running daemon checks every source and sink and writes the verdicts to
``<state_dir>/health.json`` (daemon.service.health); this module reads that report and the
ledger, and renders them for a person (:func:`print_parts`, :func:`print_ignored`) or a
script (:func:`status_document`, one JSON object).

Ignored inputs are the files intake saw and no rule took (``seen`` rows with an
``ignored: <reason>`` outcome); names that are never inputs at all (dot-files, ``*.part``
and other temp names, ``~$`` lock files, a source's ``ignore`` globs) never reach the ledger.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from daemon.cli.output import iso_time
from daemon.queue.ledger import Ledger
from daemon.queue.queries import IgnoredInput
from daemon.service.health import HealthReport, PartState, read_report
from daemon.types import JobState

__all__ = ["ignored_record", "part_record", "print_ignored", "print_parts", "status_document"]

SPEND_DAYS = 7


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _clock(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _part_line(state: PartState, now: float) -> str:
    if state.ok is None:
        return f"  {state.part:24}  not checked yet"
    if state.ok:
        checked = f"checked {_ago(now - (state.checked_at or now))} ago"
        return f"  {state.part:24}  ok ({checked})"
    since = state.since or now
    return f"  {state.part:24}  FAILING since {_clock(since)} ({_ago(now - since)}): {state.error}"


def print_parts(state_dir: Path) -> None:
    """A line per source and sink: its state, its last error and since when."""
    report = read_report(state_dir)
    if report is None:
        print(
            "sources and sinks: no report yet (a running daemon writes one into "
            f"{state_dir} within its first check)"
        )
        return
    now = time.time()
    if report.daemon_running:
        print(
            f"sources and sinks (daemon pid {report.pid}, checks every {report.interval:g} s, "
            f"last {_ago(now - report.written_at)} ago):"
        )
    else:
        print(
            f"sources and sinks, as the daemon saw them before it stopped (pid {report.pid}, "
            f"{_clock(report.written_at)}); start it to check again:"
        )
    for state in report.parts:
        print(_part_line(state, now))


def part_record(state: PartState) -> dict[str, Any]:
    """One source or sink in ``status --json``."""
    return {
        "part": state.part,
        "kind": state.kind,
        "name": state.name,
        "state": state.state,
        "error": state.error,
        "since": iso_time(state.since),
        "checked_at": iso_time(state.checked_at),
        "last_ok_at": iso_time(state.last_ok_at),
        "failed_checks": state.failures,
    }


def ignored_record(item: IgnoredInput) -> dict[str, Any]:
    """One ignored input in ``status --json``."""
    return {
        "source": item.source,
        "key": item.key,
        "size": item.size,
        "reason": item.reason,
        "at": iso_time(item.at),
    }


def print_ignored(ledger: Ledger, limit: int) -> None:
    """How many inputs no rule took, and the latest ones with intake's reason."""
    items, total = ledger.ignored(limit=limit)
    if not total:
        return
    cut = (
        f"; showing {len(items)} of {total}, --limit {total} shows all"
        if total > len(items)
        else ""
    )
    print(f"ignored {total} (no rule took them; 'darkroom match FILE' says why{cut}):")
    for item in items:
        print(f"  {item.source}:{item.key} ({_clock(item.at)}): {item.reason}")


def _daemon_record(report: HealthReport | None) -> dict[str, Any]:
    if report is None:
        return {"running": None, "pid": None, "reported_at": None, "check_interval": None}
    return {
        "running": report.daemon_running,
        "pid": report.pid,
        "reported_at": iso_time(report.written_at),
        "check_interval": report.interval,
    }


def _job_record(ledger: Ledger, job: Any) -> dict[str, Any]:
    plan = ledger.plan(job.plan_id)
    return {
        "id": job.id,
        "plan_id": job.plan_id,
        "state": job.state.value,
        "rule": job.rule,
        "step": job.unit_id,
        "attempts": job.attempts,
        "source": plan.source,
        "key": plan.key,
        "error": job.error,
        "updated_at": iso_time(job.updated_at),
    }


def status_document(state_dir: Path, limit: int) -> dict[str, Any]:
    """Everything ``darkroom status`` prints, as one JSON-ready object. Lists hold at most
    ``limit`` items; each says its ``total`` so a reader knows when it was cut."""
    report = read_report(state_dir)
    document: dict[str, Any] = {
        "state_dir": str(state_dir),
        "daemon": _daemon_record(report),
        "parts": [part_record(p) for p in report.parts] if report else [],
        "ledger": None,
        "jobs": {},
        "plans": {},
        "rules": {},
        "spend": [],
        "held": {"total": 0, "items": []},
        "quarantined": {"total": 0, "items": []},
        "failed": {"total": 0, "items": []},
        "ignored": {"total": 0, "items": []},
    }
    path = state_dir / "ledger.sqlite"
    if not path.exists():
        return document
    ledger = Ledger(path)
    try:
        counts = ledger.counts()
        document["ledger"] = str(path)
        document["jobs"] = {state.value: counts.get(state.value, 0) for state in JobState}
        document["plans"] = ledger.plan_counts()
        document["rules"] = ledger.counts_by_rule()
        spend = ledger.spend(time.time() - SPEND_DAYS * 86400)
        document["spend"] = [
            {"rule": rule, "day": day, "usd": round(usd, 4)}
            for (rule, day), usd in sorted(spend.items(), key=lambda i: (i[0][1], i[0][0]))
        ]
        held, held_total = ledger.held(limit=limit)
        document["held"] = {
            "total": held_total,
            "items": [_job_record(ledger, job) for job in held],
        }
        quarantined = ledger.quarantined(limit=limit)
        document["quarantined"] = {
            "total": ledger.quarantined_count(),
            "items": [
                {
                    "source": q["source"],
                    "key": q["key"],
                    "sha256": q["sha256"],
                    "reason": q["reason"],
                    "location": q["location"],
                    "at": iso_time(q["at"]),
                }
                for q in quarantined
            ],
        }
        failed = ledger.jobs(state="failed", limit=limit)
        document["failed"] = {
            "total": counts.get("failed", 0),
            "items": [_job_record(ledger, job) for job in failed],
        }
        ignored, ignored_total = ledger.ignored(limit=limit)
        document["ignored"] = {
            "total": ignored_total,
            "items": [ignored_record(item) for item in ignored],
        }
    finally:
        ledger.close()
    return document
