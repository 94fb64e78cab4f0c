"""Operator commands against the ledger of a running or stopped daemon.

    darkroom status                     queue depth, running, failed with reasons, per rule
    darkroom jobs ls [--state S] [--rule R] [--limit N]
    darkroom retry JOB... | --failed    queue failed jobs again with a fresh attempt budget
    darkroom cancel JOB...              end queued or waiting jobs

The ledger is SQLite in WAL mode, so these work while the daemon runs; it picks up
retried jobs within a second.
"""

from __future__ import annotations

import argparse
import sys
import time

from daemon.queue.ledger import Ledger
from daemon.types import JobState


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status", help="show the queue: depth, running, failed with reasons, per rule"
    )
    p.add_argument("--config", "-c")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("jobs", help="list jobs")
    jobs_sub = p.add_subparsers(dest="jobs_command", required=True)
    ls = jobs_sub.add_parser("ls", help="list jobs, newest first")
    ls.add_argument("--state", choices=["waiting", "queued", "running", "done", "failed"])
    ls.add_argument("--rule")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--config", "-c")
    ls.set_defaults(func=cmd_jobs_ls)

    p = sub.add_parser("retry", help="queue failed jobs again")
    p.add_argument("jobs", nargs="*", metavar="JOB", help="job ids (or unique prefixes)")
    p.add_argument("--failed", action="store_true", help="every failed job")
    p.add_argument("--config", "-c")
    p.set_defaults(func=cmd_retry)

    p = sub.add_parser("cancel", help="end queued or waiting jobs")
    p.add_argument("jobs", nargs="+", metavar="JOB")
    p.add_argument("--config", "-c")
    p.set_defaults(func=cmd_cancel)


def _ledger(args: argparse.Namespace) -> Ledger | None:
    from daemon.cli.main import _settings

    settings = _settings(args)
    path = settings.state_dir / "ledger.sqlite"
    if not path.exists():
        print(f"no ledger at {path}: the daemon has not run with this config yet")
        return None
    return Ledger(path)


def cmd_status(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    if ledger is None:
        return 0
    counts = ledger.counts()
    depth = counts.get("queued", 0) + counts.get("waiting", 0)
    print(
        f"queue depth {depth} · running {counts.get('running', 0)} · done {counts.get('done', 0)}"
        f" · failed {counts.get('failed', 0)}"
    )
    print(
        "jobs: " + ", ".join(f"{state} {n}" for state, n in sorted(counts.items()))
        if counts
        else "jobs: none"
    )
    for rule, states in sorted(ledger.counts_by_rule().items()):
        print(f"  {rule}: " + ", ".join(f"{state} {n}" for state, n in sorted(states.items())))
    spend = ledger.spend(time.time() - 7 * 86400)
    if spend:
        print("hosted model spend (estimated, USD), last 7 days:")
    for (rule, day), usd in sorted(
        spend.items(), key=lambda item: (item[0][1], item[0][0]), reverse=True
    ):
        print(f"  {day}  {rule}: ${usd:.2f}")
    quarantined = ledger.quarantined()
    if quarantined:
        print("quarantined:")
    for item in quarantined:
        where = f" -> {item['location']}" if item["location"] else ""
        print(f"  {item['source']}:{item['key']}{where}: {item['reason']}")
    failed = ledger.jobs(state="failed", limit=50)
    if failed:
        print("failed:")
    for job in failed:
        plan = ledger.plan(job.plan_id)
        print(
            f"  {job.id[:12]}  {plan.key} [{job.rule}/{job.unit_id}] after {job.attempts} attempt(s): {job.error}"
        )
    return 0


def cmd_jobs_ls(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    if ledger is None:
        return 0
    print(f"{'JOB':12}  {'STATE':8}  {'RULE/STEP':28}  {'TRIES':5}  {'UPDATED':19}  SOURCE")
    for job in ledger.jobs(state=args.state, rule=args.rule, limit=args.limit):
        plan = ledger.plan(job.plan_id)
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.updated_at))
        line = f"{job.id[:12]}  {job.state.value:8}  {job.rule + '/' + job.unit_id:28}  {job.attempts:5}  {updated}  {plan.source}:{plan.key}"
        if job.error and job.state is JobState.FAILED:
            line += f"  — {job.error}"
        print(line)
    return 0


def _resolve(ledger: Ledger, ids: list[str]) -> list[str] | None:
    out = []
    for prefix in ids:
        job = ledger.find_job(prefix)
        if job is None:
            print(
                f"no job (or more than one) starts with {prefix!r}; see 'darkroom jobs ls'",
                file=sys.stderr,
            )
            return None
        out.append(job.id)
    return out


def cmd_retry(args: argparse.Namespace) -> int:
    if not args.jobs and not args.failed:
        print("name jobs to retry, or --failed for all failed jobs", file=sys.stderr)
        return 2
    ledger = _ledger(args)
    if ledger is None:
        return 1
    ids = None if args.failed else _resolve(ledger, args.jobs)
    if ids is None and not args.failed:
        return 2
    queued = ledger.retry(ids)
    print(
        f"{len(queued)} job(s) queued again"
        + ("" if queued else " (only failed jobs can be retried)")
    )
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    if ledger is None:
        return 1
    ids = _resolve(ledger, args.jobs)
    if ids is None:
        return 2
    code = 0
    for job_id in ids:
        before = ledger.cancel(job_id)
        if before in (JobState.QUEUED, JobState.WAITING):
            print(f"{job_id[:12]} cancelled")
        else:
            print(
                f"{job_id[:12]} is {before}: only queued or waiting jobs can be cancelled",
                file=sys.stderr,
            )
            code = 1
    return code
