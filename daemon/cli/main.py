"""The ``darkroom`` command line: its parser, and the run and process commands.

    darkroom run      [--config PATH]             the daemon, in the foreground
    darkroom process  FILE... [--rule NAME]        one-shot through the same pipeline
    (+ check, doctor: daemon.cli.check; models, models pull: daemon.cli.models; status, jobs ls, retry, cancel: daemon.cli.ops;
     match, rules schema, reprocess: daemon.cli.rules; inspect, review: daemon.cli.review)

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
    from daemon.config.settings import Settings


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
    _exit_without_stragglers(app.left_behind)
    return 0


def _exit_without_stragglers(left_behind: list[str]) -> None:
    """End the process now if anything could keep it alive past the bounded stop: a
    non-daemon thread (a library's pool stuck on a network call: the interpreter joins such
    threads at exit, for as long as they take), a thread of ours that did not stop in time
    (``left_behind``: what it holds may be waited for by an exit handler), or a child process
    (multiprocessing joins those at exit). Everything of ours is already stopped and closed."""
    import multiprocessing

    stragglers = [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    stragglers += [name for name in left_behind if name not in stragglers]
    stragglers += [f"process {child.name}" for child in multiprocessing.active_children()]
    if not stragglers:
        return
    import logging

    import structlog

    structlog.get_logger("darkroom.cli").warning(
        "still running after stop; exiting without waiting for them", left=stragglers
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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
    # A file inside a watched folder gets the key and source the daemon would give it, so
    # folder-based rules, {dir} and {folder} work as they do in `darkroom run`.
    watched = {
        name: Path(source.path).resolve()
        for name, source in settings.sources.items()
        if source.type == "folder"
    }
    files = FilesSource(paths, roots=watched)
    app = App(settings, sources=dict.fromkeys(files.source_names, files), any_source=True)
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
            for arrival in files.arrivals():
                for verdict in app.rules.verdicts(arrival, any_source=True, shallow=True):
                    if not verdict.matched:
                        why = "; ".join(verdict.reasons)
                        print(f"  {arrival.key} [{verdict.rule}]: {why}", file=sys.stderr)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="darkroom", description="Run image models on a stream of files."
    )
    parser.add_argument("--version", action="version", version=f"darkroom {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (
        ("run", cmd_run, "run the daemon in the foreground"),
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
    from daemon.cli import check as cli_check
    from daemon.cli import models as cli_models
    from daemon.cli import ops as cli_ops
    from daemon.cli import review as cli_review
    from daemon.cli import rules as cli_rules

    cli_check.register(sub)  # check, doctor
    cli_models.register(sub)  # models, models pull
    cli_ops.register(sub)
    cli_review.register(sub)
    cli_rules.register(sub)
    from daemon.cli.help import describe

    describe(parser)  # a description and an example for every subcommand
    return parser


def main(argv: list[str] | None = None) -> int:
    stdout = sys.stdout
    try:
        return _main(argv)
    finally:
        sys.stdout = stdout


def _main(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)  # --help and usage errors print too
        if args.command != "run":  # `run` logs to stdout; results elsewhere quote names
            from daemon.cli.output import Printable

            sys.stdout = Printable(sys.stdout)
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
