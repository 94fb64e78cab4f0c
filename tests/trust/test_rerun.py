"""Issue 14, item 4 (re-run paths) and the operator view: `retry` after a committed failed
manifest runs a new round; a quarantined input moved back (by hand or `requeue`) is processed;
`status` counts every state and says when it shows only part of a list."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.cli import ops
from daemon.errors import JobError
from daemon.types import JobState, PlanState
from tests.trust.test_failure_classes import FaultyPool, manifests
from tests.unit.test_runner import build, drain, png, ruleset


def failed_once(tmp_path):
    ledger, source, sink, runner, intake = build(tmp_path, ruleset())
    pool = FaultyPool(tmp_path / "models")
    pool.fault = JobError("model refused the request", retryable=False)
    runner.pool = pool
    source.put("cat.png", png())
    drain(intake, runner)
    assert [m["status"] for m in manifests(sink)] == ["failed"]
    return ledger, source, sink, runner, intake, pool


def test_retry_after_a_failed_manifest_runs_a_new_round(tmp_path):
    ledger, source, sink, runner, intake, pool = failed_once(tmp_path)
    pool.fault = None  # fixed
    assert len(ledger.retry(None)) == 1  # `darkroom retry --failed`, beside the daemon
    drain(intake, runner)
    (job,) = ledger.jobs()
    assert job.state is JobState.DONE and job.error is None  # ran; not "adopted"
    assert ledger.plan_counts() == {"done": 1}
    (manifest,) = manifests(sink)
    assert manifest["status"] == "done"
    assert len(manifest["rounds"]) == 1  # the failed round is kept as round 1


def test_a_quarantined_file_moved_back_is_processed_again(tmp_path):
    ledger, source, sink, runner, intake, pool = failed_once(tmp_path)
    plan = ledger.plans()[0]
    assert plan.state is PlanState.FAILED
    # What a folder source records: the file now lives at a local path in .quarantine/.
    ledger.record_quarantine("mem", "cat.png", plan.sha256, "failed", "/in/.quarantine/cat.png")
    pool.fault = None
    source.put("cat.png", png())  # moved back out of .quarantine/ (same bytes, same mtime)
    drain(intake, runner)
    assert ledger.jobs()[0].state is JobState.DONE
    assert ledger.quarantined() == []
    assert [m["status"] for m in manifests(sink)] == ["done"]


def test_requeue_re_admits_a_quarantined_input(tmp_path):
    ledger, source, sink, runner, intake, pool = failed_once(tmp_path)
    assert "cat.png" in source.quarantined and ledger.quarantined_count() == 1
    pool.fault = None
    assert len(ledger.requeue_quarantined("mem", "cat.png")) == 1  # `darkroom requeue`
    drain(intake, runner)
    assert ledger.jobs()[0].state is JobState.DONE
    assert ledger.quarantined() == []


def test_status_counts_every_state_and_says_when_it_truncates(tmp_path, monkeypatch, capsys):
    ledger, source, sink, runner, intake = build(tmp_path, ruleset())
    for i in range(60):
        source.put(f"cat{i}.png", png(color=(i, 0, 0)))
    while not intake.queue.empty():
        intake.handle(intake.queue.get())
    ids = [j.id for j in ledger.jobs()]
    ledger.claim_ids("runner", ids)
    for jid in ids[:55]:
        ledger.fail(jid, "bad bytes", retryable=False)
    for jid in ids[55:57]:
        ledger.hold(jid, "no API key for 'flash'")
    ledger.release(ids[57])
    monkeypatch.setattr(ops, "_ledger", lambda args, state_dir=None: ledger)
    monkeypatch.chdir(tmp_path)  # no darkroom.yaml here: the default settings

    assert ops.cmd_status(argparse.Namespace(config=None)) == 0
    out = capsys.readouterr().out
    for word in ("queued 1", "running 2", "held 2", "failed 55", "done 0", "waiting 0"):
        assert word in out
    assert "plans: active 60" in out  # none finalized yet
    assert "no API key for 'flash'" in out
    assert "failed (showing 50 of 55; --limit 55 shows all):" in out

    args: Any = argparse.Namespace(state=None, rule=None, limit=10)
    assert ops.cmd_jobs_ls(args) == 0
    assert "showing 10 of 60 jobs (use --limit)" in capsys.readouterr().err
