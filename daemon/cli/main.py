"""The ``darkroom`` command line: its parser, and the run, check, process and models commands.

    darkroom run      [--config PATH]             the daemon, in the foreground
    darkroom check    [--config PATH]             validate config and rules; every error at once
    darkroom process  FILE... [--rule NAME]        one-shot through the same pipeline
    darkroom models   [--config PATH]             the model profiles
    (+ status, jobs ls, retry, cancel: daemon.cli.ops; match, rules schema, reprocess:
     daemon.cli.rules; inspect, review: daemon.cli.review)

The config file is ``--config``, else ``$DARKROOM_CONFIG``, else ``./darkroom.yaml`` if it
exists (otherwise defaults and environment only).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from daemon import __version__
from daemon.errors import ConfigError, DarkroomError

if TYPE_CHECKING:
    from daemon.config.profiles import Profile
    from daemon.config.settings import Settings


def _config_path(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    if os.environ.get("DARKROOM_CONFIG"):
        return Path(os.environ["DARKROOM_CONFIG"])
    default = Path("darkroom.yaml")
    return default if default.exists() else None


def _settings(args: argparse.Namespace) -> Settings:
    from daemon.config.settings import load_settings
    from daemon.service import logs

    settings = load_settings(_config_path(args.config))
    logs.configure(settings.log.level, settings.log.format)
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.service.app import App

    stop, reload = threading.Event(), threading.Event()
    # Before anything slow: SIGHUP's default action would kill the process.
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    settings = _settings(args)
    app = App(settings)
    app.config_path = _config_path(args.config)
    app.start()
    while not stop.wait(0.5):
        app.heartbeat()
        if reload.is_set():
            reload.clear()
            app.reload()
    app.stop()
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from daemon.config.profiles import resolve_profiles
    from daemon.config.settings import load_settings
    from daemon.rules.load import load_rules
    from daemon.service.app import config_problems

    problems = []
    try:
        settings = load_settings(_config_path(args.config))
    except ConfigError as exc:
        problems.extend(exc.problems)
        settings = None
    rules = None
    if settings is not None:
        try:
            rules = load_rules(settings.rules_dir)
        except ConfigError as exc:
            problems.extend(exc.problems)
        try:
            profiles = resolve_profiles(settings)
        except ConfigError as exc:
            problems.extend(exc.problems)
            profiles = None
        if rules is not None and profiles is not None:
            problems.extend(config_problems(settings, rules, profiles))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found", file=sys.stderr)
        return 1
    assert settings is not None and rules is not None  # else there were problems
    print(
        f"ok: {len(rules)} rule(s) in {settings.rules_dir}, "
        f"{len(settings.sources)} source(s), {len(settings.sinks)} sink(s)"
    )
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from daemon.service.app import App
    from daemon.sources.files import FilesSource
    from daemon.types import JobState, PlanState

    settings = _settings(args)
    paths = [Path(p).resolve() for p in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"not a file: {', '.join(missing)}", file=sys.stderr)
        return 2
    files = FilesSource(paths)
    app = App(settings, sources={files.name: files}, any_source=True)
    if args.rule and args.rule not in app.rules.by_name:
        print(
            f"unknown rule {args.rule!r}; rules: {', '.join(sorted(app.rules.by_name))}",
            file=sys.stderr,
        )
        return 2
    if args.rule:
        from daemon.rules.match import RuleSet

        app.rules = RuleSet([app.rules.by_name[args.rule]])
    app.start()
    ledger = app.ledger
    assert ledger is not None  # made by start()
    plan_ids: list[str] = []
    try:
        for arrival in files.arrivals():
            plan_ids += app.intake.handle(arrival) or []
        if not plan_ids:
            print("no rule matches these files (use --rule NAME to choose one)", file=sys.stderr)
            return 1
        while True:
            states = [ledger.plan(pid).state for pid in plan_ids]
            jobs = [j for pid in plan_ids for j in ledger.jobs_of(pid)]
            ended = sum(j.state.terminal for j in jobs)
            _progress(ended, len(jobs))
            if all(s != PlanState.ACTIVE for s in states):
                break
            time.sleep(0.2)
        print(file=sys.stderr)
        failed = 0
        for pid in plan_ids:
            row = ledger.plan(pid)
            sink = app.sinks[row.plan.sink]
            print(f"{row.state:8} {row.key} [{row.rule}] -> {sink.location(row.plan.manifest)}")
            for job in ledger.jobs_of(pid):
                if job.error and job.state == JobState.FAILED:
                    print(f"         {job.unit_id}: {job.error}")
            failed += row.state != PlanState.DONE
        return 1 if failed else 0
    finally:
        app.stop()


def _progress(done: int, total: int) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} jobs")
    sys.stderr.flush()


def weights_status(profile: Profile, models_dir: Path) -> str:
    """Where a profile's weights are, without loading them (and without torch)."""
    import os

    model = profile.model
    if profile.provider:
        env = profile.options.get("api_key_env")
        return (
            f"hosted ({env} {'set' if env and os.environ.get(env) else 'NOT set'})"
            if env
            else "hosted"
        )
    if profile.task in ("rendition", "stub"):
        return "no weights needed"
    if model.startswith("random:"):
        from backends import random_models

        name = model.split(":", 1)[1]
        try:
            built = models_dir / "random" / f"{name}-{random_models.config_digest(name)}"
        except Exception:
            return "unknown random config"
        return "built" if built.is_dir() else "built on first use (offline)"
    if Path(model).expanduser().is_dir():
        return "local directory"
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, "model_index.json", revision=profile.revision)
    return (
        "in HF cache"
        if isinstance(found, str)
        else "MISSING: download into HF_HOME or use a local path"
    )


def cmd_models(args: argparse.Namespace) -> int:
    from daemon.config.profiles import resolve_profiles

    settings = _settings(args)
    rows = [("PROFILE", "ROLE", "TASK", "MODEL", "VRAM GB", "WEIGHTS")]
    for name, p in sorted(
        resolve_profiles(settings).items(), key=lambda item: (item[1].role, item[0])
    ):
        vram = "" if p.vram_gb is None else f"{p.vram_gb:g}"
        rows.append((name, p.role, p.task, p.model, vram, weights_status(p, settings.models_dir)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="darkroom", description="Run image models on a stream of files."
    )
    parser.add_argument("--version", action="version", version=f"darkroom {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (
        ("run", cmd_run, "run the daemon in the foreground"),
        ("check", cmd_check, "validate the config and rules"),
        ("models", cmd_models, "list model profiles"),
        ("process", cmd_process, "process files once through the same pipeline"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--config", "-c", help="config file (default: $DARKROOM_CONFIG or ./darkroom.yaml)"
        )
        p.set_defaults(func=func)
        if name == "process":
            p.add_argument("files", nargs="+", metavar="FILE")
            p.add_argument("--rule", help="use this rule instead of matching")
    # Review commands (inspect, review approve|reject) live in their own module.
    from daemon.cli import ops as cli_ops
    from daemon.cli import review as cli_review
    from daemon.cli import rules as cli_rules

    cli_ops.register(sub)
    cli_review.register(sub)
    cli_rules.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
        return status
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except DarkroomError as exc:
        print(f"darkroom: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
