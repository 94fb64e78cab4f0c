"""The ``check`` and ``doctor`` commands: is this configuration going to work?

    darkroom check  [--json] [--live]      offline: config and every rule file, every problem
                                           at once (file:line:col, key path, fix); exit 1 on
                                           any error; warnings do not change the status
    darkroom doctor [--json] [--ping-webhooks]
                                           live: GPU and torch build, disk, tools, credentials,
                                           buckets, queues, webhook endpoints; one line per
                                           check with ok/warn/fail and the fix; exit 0 all ok,
                                           1 a warning at worst, 2 a failure

``check --live`` is ``check`` followed by ``doctor`` (exit 1 if check found errors, else
doctor's status). The checks themselves live in :mod:`daemon.diagnose`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from daemon.diagnose.findings import CheckReport, Finding, exit_status


def register(sub: Any) -> None:
    for name, func, text in (
        ("check", cmd_check, "validate the config and rules"),
        ("doctor", cmd_doctor, "check the environment: GPU, disk, tools, S3, SQS, webhooks"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--config", "-c", help="config file (default: $DARKROOM_CONFIG or ./darkroom.yaml)"
        )
        p.set_defaults(func=func)
        if name == "check":
            p.add_argument("--json", action="store_true", help="the problems as a JSON list")
            p.add_argument(
                "--live", action="store_true", help="also run the live checks of 'doctor'"
            )
        else:
            p.add_argument("--json", action="store_true", help="the checks as a JSON list")
        p.add_argument(
            "--ping-webhooks",
            action="store_true",
            help="(live checks) POST a signed doctor.ping event to each webhook URL"
            " instead of only checking that it answers",
        )


def _report(args: argparse.Namespace) -> CheckReport:
    from daemon.cli.main import _config_path
    from daemon.diagnose.offline import check_configuration
    from daemon.service import logs

    logs.configure("warning", "console", stream=sys.stderr)
    return check_configuration(_config_path(args.config))


def cmd_check(args: argparse.Namespace) -> int:
    report = _report(args)
    status = 1 if report.errors else 0
    live: list[Finding] = []
    if args.live and report.settings is not None:
        live = _live(args, report)
    if args.json:
        from daemon.cli.output import print_json, problem_record

        records: list[dict[str, Any]] = [
            {**problem_record(p), "severity": "error"} for p in report.errors
        ]
        records += [{**problem_record(w), "severity": "warning"} for w in report.warnings]
        records += [{**f.record(), "severity": f.status.value} for f in live]
        print_json(records)
    else:
        for problem in report.errors:
            print(problem, file=sys.stderr)
        for warning in report.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if report.errors:
            count = len(report.errors)
            print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        else:
            assert report.settings is not None and report.rules is not None  # else errors
            settings = report.settings
            warned = f", {len(report.warnings)} warning(s)" if report.warnings else ""
            print(
                f"ok: {len(report.rules)} rule(s) in {settings.rules_dir}, "
                f"{len(settings.sources)} source(s), {len(settings.sinks)} sink(s){warned}"
            )
        for finding in live:
            print(finding)
    if args.live and not report.errors:
        return exit_status(live)
    return status


def cmd_doctor(args: argparse.Namespace) -> int:
    report = _report(args)
    findings = _config_findings(report)
    if report.settings is not None:
        findings += _live(args, report)
    if args.json:
        from daemon.cli.output import print_json

        print_json([f.record() for f in findings])
    else:
        for finding in findings:
            print(finding)
    return exit_status(findings)


def _config_findings(report: CheckReport) -> list[Finding]:
    from daemon.diagnose.findings import fail, ok, warn

    if report.errors:
        first = report.errors[0]
        return [
            fail(
                "config",
                f"{len(report.errors)} problem(s) in the config or rules, first: {first}",
                "run 'darkroom check' for the list and fix each",
            )
        ]
    assert report.rules is not None
    if report.warnings:
        return [
            warn(
                "config",
                f"{len(report.rules)} rule(s) valid, {len(report.warnings)} warning(s):"
                f" {report.warnings[0]}",
                "run 'darkroom check' for the list",
            )
        ]
    return [ok("config", f"{len(report.rules)} rule(s) valid")]


def _live(args: argparse.Namespace, report: CheckReport) -> list[Finding]:
    from daemon.diagnose.doctor import live_findings

    assert report.settings is not None
    return live_findings(
        report.settings, report.rules, report.profiles, ping_webhooks=args.ping_webhooks
    )
