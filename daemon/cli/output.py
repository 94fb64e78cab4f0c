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
- Names come from uploaders: on stdout, control characters (an escape sequence that clears
  the screen or retitles the terminal, a newline that breaks a table row) and bidi overrides
  are printed escaped (``\x1b``, ``\u202e``) - :class:`Printable`.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
from typing import Any

from daemon.errors import Problem

__all__ = ["Printable", "iso_time", "print_json", "problem_record", "say_truncated"]

# C0 controls but newline and tab, DEL, C1 controls, and the bidi embeddings, overrides and
# isolates that make a name read differently from what it is.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class Printable:
    """A text stream that writes control characters escaped (see the module docstring)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_UNPRINTABLE.sub(_escape, text))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding ...
        return getattr(self._stream, name)


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
