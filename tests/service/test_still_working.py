"""Issue 20: a person watching the daemon start is never left more than ~10 s without a
line while the worker starts or a model loads (imports and loads take tens of seconds)."""

from __future__ import annotations

import threading

import pytest
from structlog.testing import capture_logs

from daemon.service import worker_start
from tests.waiting import wait_for


def test_a_long_step_says_it_is_still_working(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_start, "TICK_S", 0.02)
    with capture_logs() as logs:
        with worker_start._still("loading model tiny"):
            wait_for(
                lambda: sum(e["event"] == "still loading model tiny" for e in logs) >= 2,
                10,
                "two 'still' lines",
            )
        count = sum(e["event"] == "still loading model tiny" for e in logs)
        # Once the step is over, the lines stop: at most one tick was under way, and once
        # the ticker thread has ended (still capturing) nothing is left that could log.
        wait_for(
            lambda: not any(t.name == "darkroom-still" for t in threading.enumerate()),
            10,
            "the ticker thread to end",
        )
    assert all("seconds" in e for e in logs if e["event"] == "still loading model tiny")
    assert sum(e["event"] == "still loading model tiny" for e in logs) <= count + 1
