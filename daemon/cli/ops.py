"""Operator commands against the ledger of a running or stopped daemon.

    darkroom status [--json] [--limit N]
                                        every state: queued, running, held and failed with
                                        reasons, quarantined, active and adopted plans; each
                                        source and sink as the running daemon last saw it
    darkroom jobs ls [--state S] [--rule R] [--limit N]
    darkroom retry JOB... | --failed | --held | --quarantined
                                        run failed or held jobs again (a new round when a
                                        failed manifest was committed), re-admit quarantined
    darkroom requeue [KEY...]           re-admit quarantined inputs (moved back first)
    darkroom cancel JOB...              end queued, waiting or held jobs

The ledger is SQLite in WAL mode, so these work while the daemon runs; it picks up
retried jobs within a second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from daemon.cli.output import say_truncated
from daemon.queue.ledger import Ledger
from daemon.types import JobState


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status", help="show the queue: depth, running, failed with reasons, per rule"
    )
    p.add_argument("--config", "-c")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument(
        "--limit", type=int, default=50, help="rows per list (held, quarantined, failed)"
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("jobs", help="list jobs")
    jobs_sub = p.add_subparsers(dest="jobs_command", required=True)
    ls = jobs_sub.add_parser("ls", help="list jobs, newest first")
    ls.add_argument("--state", choices=[s.value for s in JobState])
    ls.add_argument("--rule")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true", help="a JSON list of jobs on stdout")
    ls.add_argument("--config", "-c")
    ls.set_defaults(func=cmd_jobs_ls)

    p = sub.add_parser("retry", help="run failed or held jobs again")
    p.add_argument("jobs", nargs="*", metavar="JOB", help="job ids (or unique prefixes)")
    p.add_argument("--failed", action="store_true", help="every failed job")
    p.add_argument("--held", action="store_true", help="every held job, now")
    p.add_argument(
        "--quarantined", action="store_true", help="every quarantined input (as requeue)"
    )
    p.add_argument("--config", "-c")
    p.set_defaults(func=cmd_retry)

    p = sub.add_parser(
        "requeue", help="re-admit quarantined inputs: move them back and process them again"
    )
    p.add_argument("keys", nargs="*", metavar="KEY", help="source keys (default: all)")
    p.add_argument("--config", "-c")
    p.set_defaults(func=cmd_requeue)

    p = sub.add_parser("cancel", help="end queued, waiting or held jobs")
    p.add_argument("jobs", nargs="+", metavar="JOB")
    p.add_argument("--config", "-c")
    p.set_defaults(func=cmd_cancel)


def _ledger(args: argparse.Namespace, state_dir: Path | None = None) -> Ledger | None:
    from daemon.cli.main import _settings

    path = (state_dir or _settings(args).state_dir) / "ledger.sqlite"
    if not path.exists():
        print(f"no ledger at {path}: the daemon has not run with this config yet")
        return None
    return Ledger(path)


def cmd_status(args: argparse.Namespace) -> int:
    from daemon.cli.main import _settings
    from daemon.cli.status import print_ignored, print_parts, status_document

    settings = _settings(args)
    if getattr(args, "json", False):
        from daemon.cli.output import print_json

        document = status_document(settings.state_dir, args_limit(args))
        print_json(document)
        for name in ("held", "quarantined", "failed", "ignored"):
            listing = document[name]
            total = listing["total"]
            say_truncated(len(listing["items"]), total, name)
        return 0
    print_parts(settings.state_dir)
    ledger = _ledger(args, settings.state_dir)
    if ledger is None:
        return 0
    counts = ledger.counts()
    print(
        "jobs: " + " · ".join(f"{state.value} {counts.get(state.value, 0)}" for state in JobState)
    )
    plans = ledger.plan_counts()
    print("plans: " + (" · ".join(f"{state} {n}" for state, n in sorted(plans.items())) or "none"))
    for rule, states in sorted(ledger.counts_by_rule().items()):
        print(f"  {rule}: " + ", ".join(f"{state} {n}" for state, n in sorted(states.items())))
    spend = ledger.spend(time.time() - 7 * 86400)
    if spend:
        print("hosted model spend (estimated, USD), last 7 days:")
    for (rule, day), usd in sorted(
        spend.items(), key=lambda item: (item[0][1], item[0][0]), reverse=True
    ):
        print(f"  {day}  {rule}: ${usd:.2f}")
    held, held_total = ledger.held(limit=args_limit(args))
    if held:
        print(
            f"held (the input stays; fix the cause, then reload or 'darkroom retry --held')"
            f"{_showing(len(held), held_total)}:"
        )
    for job in held:
        plan = ledger.plan(job.plan_id)
        print(f"  {job.id[:12]}  {plan.key} [{job.rule}/{job.unit_id}]: {job.error}")
    quarantined = ledger.quarantined(limit=args_limit(args))
    if quarantined:
        shown = _showing(len(quarantined), ledger.quarantined_count())
        print(f"quarantined{shown}: ('darkroom requeue' processes them again)")
    for item in quarantined:
        where = f" -> {item['location']}" if item["location"] else ""
        print(f"  {item['source']}:{item['key']}{where}: {item['reason']}")
    failed = ledger.jobs(state="failed", limit=args_limit(args))
    if failed:
        print(f"failed{_showing(len(failed), counts.get('failed', 0))}:")
    for job in failed:
        plan = ledger.plan(job.plan_id)
        print(
            f"  {job.id[:12]}  {plan.key} [{job.rule}/{job.unit_id}] after {job.attempts} attempt(s): {job.error}"
        )
    print_ignored(ledger, args_limit(args))
    return 0


def args_limit(args: argparse.Namespace) -> int:
    return int(getattr(args, "limit", 50) or 50)


def _showing(shown: int, total: int) -> str:
    """' (showing N of M; --limit M shows all)' when a list was cut short, else ''."""
    return f" (showing {shown} of {total}; --limit {total} shows all)" if total > shown else ""


def cmd_jobs_ls(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    if ledger is None:
        return 0
    from daemon.cli.output import iso_time, print_json

    as_json = bool(getattr(args, "json", False))
    rows = ledger.jobs(state=args.state, rule=args.rule, limit=args.limit + 1)
    records = []
    if not as_json:
        print(f"{'JOB':12}  {'STATE':8}  {'RULE/STEP':28}  {'TRIES':5}  {'UPDATED':19}  SOURCE")
    for job in rows[: args.limit]:
        plan = ledger.plan(job.plan_id)
        # another daemon committed it; this one did not run it
        adopted = job.state is JobState.DONE and job.error == Ledger.ADOPTED_NOTE
        state = "adopted" if adopted else job.state.value
        if as_json:
            records.append(
                {
                    "id": job.id,
                    "plan_id": job.plan_id,
                    "state": state,
                    "rule": job.rule,
                    "step": job.unit_id,
                    "attempts": job.attempts,
                    "updated_at": iso_time(job.updated_at),
                    "source": plan.source,
                    "key": plan.key,
                    "error": job.error,
                }
            )
            continue
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.updated_at))
        line = f"{job.id[:12]}  {state:8}  {job.rule + '/' + job.unit_id:28}  {job.attempts:5}  {updated}  {plan.source}:{plan.key}"
        if job.error and job.state in (JobState.FAILED, JobState.HELD):
            line += f"  — {job.error}"
        print(line)
    if as_json:
        print_json(records)
    if len(rows) > args.limit:
        say_truncated(args.limit, _job_total(ledger, args.state, args.rule), "jobs")
    return 0


def _job_total(ledger: Ledger, state: str | None, rule: str | None) -> int:
    """How many jobs ``jobs ls`` would list without --limit."""
    return sum(
        n
        for rule_name, states in ledger.counts_by_rule().items()
        if rule is None or rule_name == rule
        for state_name, n in states.items()
        if state is None or state_name == state
    )


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
    if not (args.jobs or args.failed or args.held or args.quarantined):
        print(
            "name jobs to retry, or --failed, --held or --quarantined for all of them",
            file=sys.stderr,
        )
        return 2
    ledger = _ledger(args)
    if ledger is None:
        return 1
    queued: list[str] = []
    if args.jobs:
        ids = _resolve(ledger, args.jobs)
        if ids is None:
            return 2
        queued += ledger.retry(ids)
    if args.failed:
        queued += ledger.retry(None)
    if args.held:
        queued += ledger.resume_held(everything=True)
    print(
        f"{len(queued)} job(s) queued again"
        + ("" if queued or args.quarantined else " (only failed or held jobs can be retried)")
    )
    if args.quarantined:
        return requeue_inputs(args, ledger, [])
    return 0


def cmd_requeue(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    if ledger is None:
        return 1
    return requeue_inputs(args, ledger, args.keys)


def requeue_inputs(args: argparse.Namespace, ledger: Ledger, keys: list[str]) -> int:
    """Move quarantined files back to where they arrived (folder sources) and re-admit them;
    the running daemon picks them up within a second."""
    from daemon.cli.main import _settings
    from daemon.config.settings import FolderSourceConfig

    sources = _settings(args).sources
    items = [q for q in ledger.quarantined(limit=1_000_000) if not keys or q["key"] in keys]
    code = 0
    plans = 0
    for item in items:
        config = sources.get(item["source"])
        location = item["location"]
        if location and isinstance(config, FolderSourceConfig) and Path(location).is_file():
            home = Path(config.path) / item["key"]
            if home.exists():
                print(f"{home} exists already; leaving {location} where it is", file=sys.stderr)
                code = 1
                continue
            home.parent.mkdir(parents=True, exist_ok=True)
            Path(location).rename(home)
            Path(f"{location}.reason.json").unlink(missing_ok=True)
            print(f"moved {location} back to {home}")
        plans += len(
            ledger.requeue_quarantined(item["source"], item["key"], item["sha256"] or None)
        )
        print(f"{item['source']}:{item['key']} re-admitted")
    print(f"{len(items)} input(s) re-admitted, {plans} plan(s) queued again")
    return code


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
        if before in (JobState.QUEUED, JobState.WAITING, JobState.HELD):
            print(f"{job_id[:12]} cancelled")
        else:
            print(
                f"{job_id[:12]} is {before}: only queued or waiting jobs can be cancelled",
                file=sys.stderr,
            )
            code = 1
    return code
