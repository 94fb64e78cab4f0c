"""The runner in one thread: the in-process pool (no worker process), the stub backend and
in-memory source and sink, fed through the real intake. Faults that need a worker process
(crashes, segfaults, time limits) are in tests/pool."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from daemon.config.profiles import Profile
from daemon.config.yamlfile import Positions
from daemon.execution.inline_pool import InlinePool
from daemon.execution.runner import Runner
from daemon.hooks import Hooks
from daemon.intake.intake import Intake
from daemon.queue.ledger import Ledger
from daemon.rules.load import LoadedRule
from daemon.rules.match import RuleSet
from daemon.rules.schema import Rule
from daemon.sinks.memory import MemorySink
from daemon.sources.memory import MemorySource
from daemon.types import JobState, PlanState

PROFILES = {"stub": Profile(name="stub", task="stub", model="stub", max_side=64)}


def png(size=(64, 64), color=(10, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def ruleset(steps: list[dict[str, Any]] | None = None, **step: Any) -> RuleSet:
    rule = Rule.model_validate(
        {
            "name": "r",
            "match": {"source": "mem"},
            "prompt": "{stem}",
            "steps": steps or [{"name": "one", "model": "stub", "variants": 2, "seed": 3, **step}],
            "output": {"sink": "out"},
        }
    )
    return RuleSet([LoadedRule(rule, None, Positions("r.yaml"))])


class CountingSource(MemorySource):
    """Counts reads of each key: on S3 each one is a GetObject."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reads: dict[str, int] = {}

    def read(self, key: str, etag: str | None = None) -> bytes:
        self.reads[key] = self.reads.get(key, 0) + 1
        return super().read(key, etag)


class Recorder(Hooks):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def job_ended(self, rule, state, profile, model_seconds):
        self.events.append(("job_ended", rule, state, profile))

    def plan_committed(self, sink, manifest, manifest_path):
        self.events.append(("plan_committed", manifest.status, manifest_path))

    def plan_finished(self, plan_id, status):
        self.events.append(("plan_finished", status))

    def model_loaded(self, profile, device, seconds):
        self.events.append(("model_loaded", profile, device))


def build(tmp_path, rules, hooks: Hooks | None = None):
    ledger = Ledger(tmp_path / "ledger.sqlite", max_attempts=3, retry_backoff=0)
    source, sink = CountingSource("mem"), MemorySink("out")
    pool = InlinePool(tmp_path / "models", hooks=hooks)
    runner = Runner(ledger, {"mem": source}, {"out": sink}, pool, PROFILES, "cpu", hooks=hooks)
    intake = Intake(ledger, lambda: rules, {"mem": source}, runner.wake.set)
    source.start(intake.emit, intake.known_for("mem"))
    return ledger, source, sink, runner, intake


def drain(intake, runner, limit=20):
    while not intake.queue.empty():
        intake.handle(intake.queue.get())
    for _ in range(limit):
        if not runner.step():
            return


def test_outputs_then_sheet_then_page_then_manifest_then_index(tmp_path):
    ledger, source, sink, runner, intake = build(tmp_path, ruleset())
    source.put("cat.png", png())
    drain(intake, runner)
    # The manifest is the commit marker: everything it names (its page too) is written first;
    # the root index lists committed rounds only, so it comes after.
    assert sink.writes[:8] == [
        "r/cat.png/one-0.png",
        "r/cat.png/one-1.png",
        "r/cat.png/sheet.png",
        "r/cat.png/thumbs/one-0.webp",  # the board's pictures, from the sheet's tiles
        "r/cat.png/thumbs/one-1.webp",
        "r/cat.png/source-preview.jpg",
        "r/cat.png/index.html",
        "r/cat.png/manifest.json",
    ]
    # After the commit: the root index, then the rule's board.
    assert set(sink.writes[8:]) == {
        "index.json",
        "index.html",
        "boards/r/chunks/000000.js",
        "boards/r/slots.json",
        "boards/r/board.js",
        "boards/r/index.html",
    }
    manifest = json.loads(sink.objects["r/cat.png/manifest.json"])
    assert manifest["status"] == "done"
    assert [o["seed"] for o in manifest["steps"][0]["outputs"]] == [3, 4]
    # Same bytes again: nothing new runs.
    writes = len(sink.writes)
    source.put("cat.png", png())
    drain(intake, runner)
    assert len(sink.writes) == writes


@pytest.mark.parametrize(
    "steps, units",
    [
        ([{"name": "one", "model": "stub", "variants": 2, "seed": 3}], 1),
        (
            [
                {"name": "one", "model": "stub", "variants": 2, "seed": 3},
                {"name": "two", "model": "stub", "input": "one", "pick": "first", "seed": 5},
                {"name": "three", "model": "stub", "input": "two", "seed": 7, "mask": "alpha"},
            ],
            3,
        ),
    ],
    ids=["one-step", "three-step-chain"],
)
def test_the_source_is_read_once_per_plan(tmp_path, steps, units):
    ledger, source, sink, runner, intake = build(tmp_path, ruleset(steps))
    transparent = io.BytesIO()
    Image.new("RGBA", (64, 64), (10, 120, 200, 0)).save(transparent, "PNG")
    source.put("cat.png", transparent.getvalue())
    while not intake.queue.empty():
        intake.handle(intake.queue.get())
    intake_reads = source.reads["cat.png"]  # intake reads (and hashes) every arrival once
    drain(intake, runner)
    assert [j.state for j in ledger.jobs_of(ledger.plans()[0].id)] == [JobState.DONE] * units
    manifest = json.loads(sink.objects["r/cat.png/manifest.json"])
    assert manifest["status"] == "done" and manifest["source"]["width"] == 64
    # Every unit, the alpha mask, the sheet, the preview and the manifest share one read
    # (before: one per unit plus one for the sheet and manifest).
    assert source.reads["cat.png"] - intake_reads == 1
    assert len(runner.source_cache) == 0  # dropped once the plan was finalized


@pytest.mark.parametrize("mode", ["sticky", "error"])
def test_a_failure_once_is_retried_and_the_job_completes_exactly_once(tmp_path, mode):
    marker = tmp_path / "failed-once"
    ledger, source, sink, runner, intake = build(
        tmp_path, ruleset(params={"stub_fail": mode, "stub_fail_once": str(marker)})
    )
    source.put("dog.png", png())
    drain(intake, runner)
    assert marker.exists()
    job = ledger.jobs()[0]
    assert job.state is JobState.DONE and job.attempts == 2
    assert sink.writes.count("r/dog.png/one-0.png") == 1
    assert json.loads(sink.objects["r/dog.png/manifest.json"])["status"] == "done"


def test_invalid_request_fails_at_once_with_the_reason(tmp_path):
    ledger, source, sink, runner, intake = build(tmp_path, ruleset(params={"stub_fail": "invalid"}))
    source.put("x.png", png())
    drain(intake, runner)
    job = ledger.jobs()[0]
    assert job.state is JobState.FAILED and job.attempts == 1
    assert "can never succeed" in job.error
    manifest = json.loads(sink.objects["r/x.png/manifest.json"])
    assert manifest["status"] == "failed" and "can never succeed" in manifest["steps"][0]["error"]
    assert source.quarantined["x.png"]["reason"] == job.error


def test_repeated_failures_end_failed_after_max_attempts(tmp_path):
    ledger, source, sink, runner, intake = build(tmp_path, ruleset(params={"stub_fail": "error"}))
    source.put("x.png", png())
    drain(intake, runner)
    job = ledger.jobs()[0]
    assert job.state is JobState.FAILED and job.attempts == 3
    assert "stub_fail=error" in job.error and "gave up after 3 attempts" in job.error


def test_a_corrupt_input_fails_without_retry(tmp_path):
    ledger, source, sink, runner, intake = build(tmp_path, ruleset())
    source.put("bad.png", png()[:40])
    drain(intake, runner)
    job = ledger.jobs()[0]
    assert job.state is JobState.FAILED and job.attempts == 1
    assert "bad.png" in job.error


def test_hooks_hear_each_job_end_the_commit_and_the_plan_end(tmp_path):
    hooks = Recorder()
    ledger, source, sink, runner, intake = build(tmp_path, ruleset(), hooks=hooks)
    source.put("cat.png", png())
    source.put("bad.png", png()[:40])
    drain(intake, runner)
    assert hooks.events == [
        ("model_loaded", "stub", "cpu"),
        ("job_ended", "r", JobState.DONE, "stub"),
        ("plan_committed", "done", "r/cat.png/manifest.json"),
        ("plan_finished", PlanState.DONE),
        ("job_ended", "r", JobState.FAILED, None),
        ("plan_committed", "failed", "r/bad.png/manifest.json"),
        ("plan_finished", PlanState.FAILED),
    ]


def test_a_hook_that_raises_costs_nothing(tmp_path):
    class Broken(Hooks):
        def plan_committed(self, sink, manifest, manifest_path):
            raise RuntimeError("a broken observer")

    ledger, source, sink, runner, intake = build(tmp_path, ruleset(), hooks=Broken())
    source.put("cat.png", png())
    drain(intake, runner)
    assert ledger.plans()[0].state is PlanState.DONE
