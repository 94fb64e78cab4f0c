"""Crash points for the reliability suite: ``DARKROOM_FAULT=<point>`` makes the daemon
SIGKILL itself exactly there, as ``kill -9`` would at the worst moment.

Points: ``after-read`` (source read, before the model), ``after-temp-write`` (an output's
temp file is written, before its rename), ``after-outputs`` (outputs committed, before the
ledger marks the job done), ``after-page`` (sheet and page written, before the manifest),
``after-manifest`` (manifest written, before the root index and before the plan is closed),
``in-decoder`` (inside an image decoder child, which then dies: an environment fault).
Unset in production; checking it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "after-read",
    "after-temp-write",
    "after-outputs",
    "after-page",
    "after-manifest",
    "in-decoder",
)


def point(name: str) -> None:
    if os.environ.get("DARKROOM_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
