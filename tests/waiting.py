"""Waiting for a condition, the one way every test does it.

A test names how long a condition may reasonably take on a quiet machine; CI is a busy 2-core
box, so every limit is multiplied by PATIENCE (``DARKROOM_TEST_PATIENCE``, default 3). A
passing test never waits longer than its condition takes: only a failing one pays the margin.

A negative check ("nothing more happened") waits for a barrier that proves the code under test
has looked (a later file handled, a scan counter grown, the ``seen`` row written, a thread
ended), then asserts: a fixed sleep only proves that time passed (tests/sources/support.py's
``settle`` and ``rescans`` for a folder source).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

PATIENCE = float(os.environ.get("DARKROOM_TEST_PATIENCE", "3"))


def eventually(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> object:
    """``predicate()``'s first true value, or the last false one after ``timeout`` x PATIENCE."""
    deadline = time.monotonic() + timeout * PATIENCE
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str = "a condition",
    interval: float = 0.05,
) -> object:
    """``predicate()``'s first true value; AssertionError naming ``what`` when there is none
    within ``timeout`` x PATIENCE seconds."""
    value = eventually(predicate, timeout, interval)
    if not value:
        raise AssertionError(f"timed out after {timeout * PATIENCE:.0f} s waiting for {what}")
    return value
