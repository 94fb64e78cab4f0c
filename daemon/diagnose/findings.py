"""The result types of checks: ``Finding`` (doctor: ok/warn/fail + fix) and ``CheckReport``.

Exit statuses of ``darkroom doctor``: 0 when every check is ok, 1 when the worst is a warning,
2 when any check fails (:func:`exit_status`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from daemon.errors import Problem

if TYPE_CHECKING:
    from daemon.config.profiles import Profile
    from daemon.config.settings import Settings
    from daemon.rules.match import RuleSet


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


_RANK = {Status.OK: 0, Status.WARN: 1, Status.FAIL: 2}


@dataclass(frozen=True)
class Finding:
    """One line of ``darkroom doctor``: what was checked, how it stands, and the fix."""

    check: str  # "s3 sink out", "gpu", "webhook https://hooks.example/x"
    status: Status
    message: str
    fix: str | None = None

    def __str__(self) -> str:
        text = f"{self.status.value:<4}  {self.check}: {self.message}"
        return f"{text} (fix: {self.fix})" if self.fix and self.status != Status.OK else text

    def record(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status.value,
            "message": self.message,
            "fix": self.fix,
        }


def ok(check: str, message: str) -> Finding:
    return Finding(check, Status.OK, message)


def warn(check: str, message: str, fix: str | None = None) -> Finding:
    return Finding(check, Status.WARN, message, fix)


def fail(check: str, message: str, fix: str | None = None) -> Finding:
    return Finding(check, Status.FAIL, message, fix)


def exit_status(findings: Iterable[Finding]) -> int:
    """0 all ok, 1 a warning at worst, 2 a failure."""
    return max((_RANK[f.status] for f in findings), default=0)


@dataclass
class CheckReport:
    """What ``darkroom check`` found: errors (exit 1) and warnings, and what loaded."""

    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    settings: Settings | None = None
    rules: RuleSet | None = None
    profiles: dict[str, Profile] | None = None

    def add_errors(self, problems: Iterable[Problem], *, unless_placed: bool = False) -> None:
        """Add problems; with ``unless_placed``, not those on a line (file:line) that already
        has one: two checks that see one mistake (a mask path refused by the rule schema and
        by ours) would only repeat it."""
        placed = {_line(p.where) for p in self.errors} - {None}
        for problem in problems:
            if unless_placed and _line(problem.where) in placed:
                continue
            self.errors.append(problem)


def in_file_order(problems: list[Problem]) -> list[Problem]:
    """Sorted by file, then line and column, so a user reads each file top to bottom."""

    def key(problem: Problem) -> tuple[str, int, int]:
        parts = problem.where.rsplit(":", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            return parts[0], int(parts[1]), int(parts[2])
        return problem.where.split(":", 1)[0], 0, 0

    return sorted(problems, key=key)


def _line(where: str) -> str | None:
    """``file:line`` of a ``file:line:col`` location, else None."""
    parts = where.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return f"{parts[0]}:{parts[1]}"
    return None
