"""The ``darkroom`` command line: its parser, and the run, check, process and models commands.

    darkroom run      [--config PATH]             the daemon, in the foreground
    darkroom check    [--config PATH]             validate config and rules; every error at once
    darkroom process  FILE... [--rule NAME]        one-shot through the same pipeline
    darkroom models   [--all] [--json]            the model profiles: licence, gating, price
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
from typing import TYPE_CHECKING, TextIO

from daemon import __version__
from daemon.errors import ConfigError, DarkroomError

if TYPE_CHECKING:
    from daemon.config.profiles import Profile
    from daemon.config.settings import Settings
    from daemon.errors import Problem
    from daemon.rules.match import RuleSet


def _config_path(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    if os.environ.get("DARKROOM_CONFIG"):
        return Path(os.environ["DARKROOM_CONFIG"])
    default = Path("darkroom.yaml")
    return default if default.exists() else None


def _settings(args: argparse.Namespace, log_stream: TextIO | None = None) -> Settings:
    """The settings, with logging set up: the daemon (``run``) logs to stdout, as its unit
    expects; every other command to stderr (or ``log_stream``), its results going to stdout."""
    from daemon.config.settings import load_settings
    from daemon.service import logs

    settings = load_settings(_config_path(args.config))
    if log_stream is None and getattr(args, "command", None) != "run":
        log_stream = sys.stderr
    logs.configure(settings.log.level, settings.log.format, stream=log_stream)
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
    _exit_without_stragglers()
    return 0


def _exit_without_stragglers() -> None:
    """End the process now if a non-daemon thread (a library's pool stuck on a network call)
    would otherwise keep it alive past the bounded stop: the interpreter joins such threads
    at exit, for as long as they take. Everything of ours is already stopped and closed."""
    stragglers = [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    if not stragglers:
        return
    import logging

    import structlog

    structlog.get_logger("darkroom.cli").warning(
        "threads still running after stop; exiting without waiting for them", threads=stragglers
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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
    if getattr(args, "json", False):
        return _print_check_json(problems, rules)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found", file=sys.stderr)
        return 1
    assert settings is not None and rules is not None  # else there were problems
    from daemon.rules.load import output_collisions

    for warning in output_collisions(rules):
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"ok: {len(rules)} rule(s) in {settings.rules_dir}, "
        f"{len(settings.sources)} source(s), {len(settings.sinks)} sink(s)"
    )
    return 0


def _print_check_json(problems: list[Problem], rules: RuleSet | None) -> int:
    """``check --json``: every problem (and, when there is none, every warning) as a list."""
    from daemon.cli.output import print_json, problem_record

    records = [{**problem_record(p), "severity": "error"} for p in problems]
    if not problems and rules is not None:
        from daemon.rules.load import output_collisions

        records += [{**problem_record(w), "severity": "warning"} for w in output_collisions(rules)]
    print_json(records)
    return 1 if problems else 0


def cmd_process(args: argparse.Namespace) -> int:
    from daemon.cli.progress import Progress
    from daemon.service.app import App
    from daemon.sources.files import FilesSource
    from daemon.types import JobState, PlanState

    # Logs and progress share stderr without breaking each other; results go to stdout.
    progress = Progress(sys.stderr)
    settings = _settings(args, log_stream=progress.log_stream())
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
            progress.update(ended, len(jobs))
            if all(s != PlanState.ACTIVE for s in states):
                break
            time.sleep(0.2)
        progress.close()
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


# Roles whose profiles are for tests and benchmarks: listed only with --all.
HIDDEN_ROLES = ("benchmark", "test")


def hidden_profile(profile: Profile) -> bool:
    """Tiny random-weight twins, benchmarks and the stub: not for a user's rules."""
    return profile.role in HIDDEN_ROLES or profile.model.startswith("random:")


def model_row(profile: Profile, models_dir: Path) -> dict[str, object]:
    """What ``darkroom models`` says about one profile (``--json`` prints these)."""
    from backends import cards

    card = cards.card(profile.name)
    price = profile.price_per_image
    return {
        "profile": profile.name,
        "role": profile.role,
        "task": profile.task,
        "model": profile.model,
        "vram_gb": profile.vram_gb,
        "licence": card.licence if card else None,
        "licence_url": card.licence_url if card else None,
        "commercial": card.commercial if card else None,
        "gated": card.gated if card else None,
        "provider": profile.provider,
        "price_per_image": price,
        "weights": weights_status(profile, models_dir),
    }


def cmd_models(args: argparse.Namespace) -> int:
    from daemon.config.profiles import resolve_profiles

    settings = _settings(args)
    profiles = resolve_profiles(settings)
    shown = [p for p in profiles.values() if args.all or not hidden_profile(p)]
    shown.sort(key=lambda p: (p.role, p.name))
    rows = [model_row(p, settings.models_dir) for p in shown]
    if args.json:
        from daemon.cli.output import print_json

        print_json(rows)
        return 0
    header = ("PROFILE", "TASK", "MODEL", "VRAM GB", "LICENCE", "GATED", "PRICE", "WEIGHTS")
    table: list[tuple[str, ...] | str] = []
    role = None
    for row in rows:
        if row["role"] != role:
            role = row["role"]
            table.append(f"{role}:")
        vram, price, gated = row["vram_gb"], row["price_per_image"], row["gated"]
        table.append(
            (
                f"  {row['profile']}",
                str(row["task"]),
                str(row["model"]),
                "" if not vram else f"{vram:g}",
                str(row["licence"] or ("provider terms" if row["provider"] else "")),
                "" if gated is None else ("yes: HF_TOKEN" if gated else "no"),
                "" if price is None else f"${price:.3f}/image",
                str(row["weights"]),
            )
        )
    lines = [header] + [r for r in table if isinstance(r, tuple)]
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    for item in [header, *table]:
        if isinstance(item, str):
            print(item)
            continue
        print("  ".join(c.ljust(w) for c, w in zip(item, widths, strict=True)).rstrip())
    if not args.all:
        hidden = len(profiles) - len(shown)
        print(f"({hidden} test and benchmark profiles hidden: --all shows them)")
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
        if name == "models":
            p.add_argument(
                "--all", action="store_true", help="also the tiny, benchmark and test profiles"
            )
            p.add_argument("--json", action="store_true", help="one JSON object per profile")
        if name == "check":
            p.add_argument("--json", action="store_true", help="the problems as a JSON list")
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
    from daemon.cli.help import describe

    describe(parser)  # a description and an example for every subcommand
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # --help and usage errors print too
        status: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here when the output fit in the buffer
        return status
    except BrokenPipeError:
        return _reader_went_away()
    except SystemExit:  # argparse's --help and usage errors: their output may meet EPIPE too
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            return _reader_went_away()
        raise
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except DarkroomError as exc:
        print(f"darkroom: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


CLOSED_PIPE_STATUS = 141
"""Exit status when the reader of stdout went away (``darkroom inspect x | head``): 128 +
SIGPIPE, what a tool killed by the signal reports, so ``set -o pipefail`` treats us alike."""


def _reader_went_away() -> int:
    """End quietly after EPIPE: no traceback, and none from the interpreter's last flush of
    stdout at exit either (both streams point at /dev/null from here on)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):
            pass
    os.close(devnull)
    return CLOSED_PIPE_STATUS
