"""Operator commands on a ledger with jobs in every state."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.queue.ledger import Ledger
from daemon.types import Plan
from tests.e2e.test_cli import darkroom, setup

pytestmark = pytest.mark.slow  # runs the darkroom CLI as a subprocess

RULE = """\
name: look
match: {source: drop}
steps: [{name: one, model: stub}, {name: two, model: stub}]
output: {sink: out}
"""


def seed_ledger(path: Path) -> dict[str, str]:
    """One plan per state; the failed one has a second step that fails with it."""
    ledger = Ledger(path, max_attempts=1)
    ids = {}
    for n, state in enumerate(["done", "failed", "running", "queued"]):
        steps = [{"name": "one", "input": "source"}]
        if state == "failed":
            steps.append({"name": "two", "input": "one"})
        ledger.submit(
            Plan.model_validate(
                {
                    "sha256": f"{n:064d}",
                    "content": f"{n:064d}",
                    "rule": "look",
                    "digest": "d",
                    "arrival": {"source": "drop", "key": f"{state}.png", "uri": "", "size": 1},
                    "prompt": "p",
                    "sink": "out",
                    "path": "{rule}/{stem}/{step}-{variant}.{ext}",
                    "manifest": f"look/{state}/manifest.json",
                    "sheet": f"look/{state}/sheet.png",
                    "units": [
                        {**s, "id": s["name"], "model": "stub", "prompt": "p", "seeds": [1]}
                        for s in steps
                    ],
                }
            )
        )
        if state == "queued":
            ids[state] = ledger.jobs(state="queued")[0].id
            continue
        job = ledger.claim("t")
        ids[state] = job.id
        if state == "done":
            ledger.complete(job.id, [], 0.1)
        elif state == "failed":
            ledger.fail(job.id, "the model said no", retryable=True)
    ledger.close()
    return ids


def test_status_jobs_retry_cancel(tmp_path):
    config = setup(tmp_path, RULE)
    ids = seed_ledger(tmp_path / "state" / "ledger.sqlite")

    status = darkroom("status", "--config", str(config), cwd=tmp_path)
    assert status.returncode == 0
    assert (
        "running 1" in status.stdout and "failed 2" in status.stdout
    )  # the failed job and its dependent
    assert "look:" in status.stdout
    assert (
        "failed.png [look/one] after 1 attempt(s): the model said no (gave up after 1 attempts)"
        in status.stdout
    )

    ls = darkroom("jobs", "ls", "--state", "failed", "--config", str(config), cwd=tmp_path)
    assert ids["failed"][:12] in ls.stdout and "the model said no" in ls.stdout
    assert ids["done"][:12] not in ls.stdout

    retry = darkroom("retry", ids["failed"][:8], "--config", str(config), cwd=tmp_path)
    assert retry.returncode == 0 and "1 job(s) queued again" in retry.stdout
    ledger = Ledger(tmp_path / "state" / "ledger.sqlite")
    job = ledger.job(ids["failed"])
    assert job.state.value == "queued" and job.attempts == 0
    dependent = [j for j in ledger.jobs_of(job.plan_id) if j.unit_id == "two"][0]
    assert dependent.state.value == "waiting"  # failed only because of its input: waits again

    cancel = darkroom("cancel", ids["queued"][:10], "--config", str(config), cwd=tmp_path)
    assert cancel.returncode == 0 and "cancelled" in cancel.stdout
    assert ledger.job(ids["queued"]).error == "cancelled by an operator"
    running = darkroom("cancel", ids["running"], "--config", str(config), cwd=tmp_path)
    assert running.returncode == 1 and "only queued or waiting jobs" in running.stderr
    unknown = darkroom("retry", "zzzz", "--config", str(config), cwd=tmp_path)
    assert unknown.returncode == 2 and "no job" in unknown.stderr
