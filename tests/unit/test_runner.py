"""The runner with the real worker process, the stub backend and in-memory source/sink."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from daemon.errors import JobError
from daemon.intake.intake import Intake
from daemon.types import JobState
from daemon.queue.ledger import Ledger
from daemon.execution.pool import WorkerPool
from daemon.config.profiles import Profile
from daemon.rules import Rule, RuleSet, LoadedRule
from daemon.execution.runner import Runner
from daemon.sinks.memory import MemorySink
from daemon.sources.memory import MemorySource
from daemon.config.yamlfile import Positions

PROFILES = {"stub": Profile(name="stub", task="stub", model="stub", max_side=64)}


def png(size=(64, 64), color=(10, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def ruleset(**step) -> RuleSet:
    rule = Rule.model_validate(
        {
            "name": "r",
            "match": {"source": "mem"},
            "prompt": "{stem}",
            "steps": [{"name": "one", "model": "stub", "variants": 2, "seed": 3, **step}],
            "output": {"sink": "out"},
        }
    )
    return RuleSet([LoadedRule(rule, None, Positions("r.yaml"))])


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    pool = WorkerPool("cpu", 0, tmp_path_factory.mktemp("models"), job_timeout=20)
    pool.start()
    yield pool
    pool.stop()


def build(tmp_path, pool, rules):
    ledger = Ledger(tmp_path / "ledger.sqlite", max_attempts=3, retry_backoff=0)
    source, sink = MemorySource("mem"), MemorySink("out")
    runner = Runner(ledger, {"mem": source}, {"out": sink}, pool, PROFILES, "cpu")
    intake = Intake(ledger, lambda: rules, {"mem": source}, runner.wake.set)
    source.start(intake.emit, intake.known_for("mem"))
    return ledger, source, sink, runner, intake


def drain(intake, runner, limit=20):
    while not intake.queue.empty():
        intake.handle(intake.queue.get())
    for _ in range(limit):
        if not runner.step():
            return


def test_outputs_then_sheet_then_manifest_last(tmp_path, pool):
    ledger, source, sink, runner, intake = build(tmp_path, pool, ruleset())
    source.put("cat.png", png())
    drain(intake, runner)
    assert sink.writes[:4] == [
        "r/cat/one-0.png",
        "r/cat/one-1.png",
        "r/cat/sheet.png",
        "r/cat/manifest.json",
    ]
    # The review page and the root index are views, written after the commit marker.
    assert {"r/cat/index.html", "index.json", "index.html"} <= set(sink.writes[4:])
    manifest = json.loads(sink.objects["r/cat/manifest.json"])
    assert manifest["status"] == "done"
    assert [o["seed"] for o in manifest["steps"][0]["outputs"]] == [3, 4]
    # Same bytes again: nothing new runs.
    writes = len(sink.writes)
    source.put("cat.png", png())
    drain(intake, runner)
    assert len(sink.writes) == writes


@pytest.mark.parametrize("mode", ["crash", "segfault", "sticky", "error"])
def test_a_failure_once_is_retried_and_the_job_completes_exactly_once(tmp_path, pool, mode):
    marker = tmp_path / "failed-once"
    ledger, source, sink, runner, intake = build(
        tmp_path, pool, ruleset(params={"stub_fail": mode, "stub_fail_once": str(marker)})
    )
    source.put("dog.png", png())
    drain(intake, runner)
    assert marker.exists()
    job = ledger.jobs()[0]
    assert job.state is JobState.DONE and job.attempts == 2
    assert sink.writes.count("r/dog/one-0.png") == 1
    assert json.loads(sink.objects["r/dog/manifest.json"])["status"] == "done"


def test_invalid_request_fails_at_once_with_the_reason(tmp_path, pool):
    ledger, source, sink, runner, intake = build(
        tmp_path, pool, ruleset(params={"stub_fail": "invalid"})
    )
    source.put("x.png", png())
    drain(intake, runner)
    job = ledger.jobs()[0]
    assert job.state is JobState.FAILED and job.attempts == 1
    assert "can never succeed" in job.error
    manifest = json.loads(sink.objects["r/x/manifest.json"])
    assert manifest["status"] == "failed" and "can never succeed" in manifest["steps"][0]["error"]


def test_repeated_crashes_end_failed_after_max_attempts(tmp_path, pool):
    ledger, source, sink, runner, intake = build(
        tmp_path, pool, ruleset(params={"stub_fail": "crash"})
    )
    source.put("x.png", png())
    drain(intake, runner)
    job = ledger.jobs()[0]
    assert job.state is JobState.FAILED and job.attempts == 3
    assert (
        "worker process exited with status 3" in job.error
        and "gave up after 3 attempts" in job.error
    )


def test_a_corrupt_input_fails_without_retry(tmp_path, pool):
    ledger, source, sink, runner, intake = build(tmp_path, pool, ruleset())
    source.put("bad.png", png()[:40])
    drain(intake, runner)
    job = ledger.jobs()[0]
    assert job.state is JobState.FAILED and job.attempts == 1
    assert "bad.png" in job.error


def test_worker_timeout_replaces_the_worker(tmp_path):
    pool = WorkerPool("cpu", 0, tmp_path, job_timeout=1)
    pool.start()
    try:
        from backends.base import ModelSpec, Request

        with pytest.raises(JobError, match="timed out"):
            pool.run(
                ModelSpec("stub", "stub"),
                Request([Image.new("RGB", (8, 8))], "p", [1], params={"stub_sleep": 5}),
            )
        out = pool.run(ModelSpec("stub", "stub"), Request([Image.new("RGB", (8, 8))], "p", [1]))
        assert len(out.images) == 1 and pool.restarts == 1
    finally:
        pool.stop()
