"""How commands print for people and for scripts, in one place.

The conventions every command follows (``--json`` included):

- Results go to stdout; logs, progress and notes go to stderr, so ``cmd | jq`` and
  ``cmd > file`` get results only.
- ``--json`` prints exactly one JSON document on stdout: a list of objects for a listing,
  an object for one thing. Keys are snake_case, ids are whole (not the 12-character prefix a
  table shows), states are their ledger names, times are ISO 8601 UTC (``...Z``), absent
  values are ``null``. The exit status is the same as without ``--json``.
- A list cut short says so, on stderr, in text and JSON mode alike:
  ``showing N of M (use --limit)``. Nothing is ever dropped silently.
- A closed pipe (``darkroom inspect x | head``) ends the command quietly with status 141
  (128 + SIGPIPE, as a C tool killed by the signal reports): see ``daemon.cli.main.main``.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
from typing import Any

from daemon.errors import Problem

__all__ = ["iso_time", "print_json", "problem_record", "say_truncated"]


def print_json(value: Any) -> None:
    """``value`` as the command's one JSON document on stdout."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def say_truncated(shown: int, total: int, what: str = "rows", hint: str = "use --limit") -> None:
    """Tell the reader (on stderr) that a list holds ``shown`` of ``total`` ``what``."""
    if total > shown:
        print(f"showing {shown} of {total} {what} ({hint})", file=sys.stderr)


def iso_time(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC, the form every ``--json`` time takes."""
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


_LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+)(?::(?P<column>\d+))?$")


def problem_record(problem: Problem) -> dict[str, Any]:
    """One problem of ``darkroom check --json``: file, line and column where the problem
    names them (``file:line:col``), else the file and the key path (``file: key.path``)."""
    where = problem.where.strip()
    record: dict[str, Any] = {"file": where, "line": None, "column": None, "key": None}
    located = _LOCATED.match(where)
    if located:
        record["file"] = located["file"]
        record["line"] = int(located["line"])
        record["column"] = int(located["column"]) if located["column"] else None
    elif ": " in where:
        record["file"], _, record["key"] = where.partition(": ")
    record["message"] = problem.message
    record["hint"] = problem.hint
    record["text"] = str(problem)
    return record
