"""The daemon's one-line status (systemd's STATUS, the log) and the held-jobs report of /readyz."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from daemon.queue.ledger import Ledger
from daemon.service.health import PartState

__all__ = ["held_report", "status_line"]


def held_report(ledger: Ledger | None) -> dict[str, Any]:
    """Held jobs for /readyz: how many, and the distinct reasons of the latest ones."""
    if ledger is None:
        return {"jobs": 0, "reasons": []}
    rows, total = ledger.held(limit=50)
    reasons = sorted({r.error or "" for r in rows})
    report: dict[str, Any] = {"jobs": total, "reasons": reasons[:10]}
    if len(reasons) > 10 or total > len(rows):  # never cut silently
        report["more"] = "the latest 50 held jobs' reasons, at most 10: see darkroom status"
    return report


def status_line(
    counts: dict[str, int],
    *,
    worker_step: str | None,
    failing: list[PartState],
    last_error: str | None,
    waiting_rules: Sequence[str] = (),
) -> str:
    """Queue, running, failed and held counts; what the worker is doing while it gets ready;
    the first failing source or sink; the rules set aside until files they name exist; the
    last error."""
    depth = counts.get("queued", 0) + counts.get("waiting", 0)
    text = f"queue {depth}, running {counts.get('running', 0)}, failed {counts.get('failed', 0)}"
    if held := counts.get("held", 0):
        text += f", held {held} (see darkroom status)"
    if worker_step is not None:
        text = f"{worker_step}; {text}"
    if failing:
        first = failing[0]
        since = time.strftime("%H:%M:%S", time.localtime(first.since or time.time()))
        more = f"{len(failing) - 1} more failing; " if len(failing) > 1 else ""
        text += (
            f"; FAILING {first.part} since {since}: {(first.error or '')[:200]}"
            f" ({more}see darkroom status)"
        )
    if waiting_rules:
        text += f"; WAITING rules {', '.join(waiting_rules)[:200]} (accepted once they exist)"
    return f"{text}; last error: {last_error[:200]}" if last_error else text
