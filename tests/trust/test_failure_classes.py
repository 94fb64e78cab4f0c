"""Issue 14, items 4 and 5: faults that are not the file's hold the job (the input stays and
resumes once fixed); a file a decoder chokes on is quarantined after its attempts and never
keeps the daemon down."""

from __future__ import annotations

import errno
import json
from typing import Any

import pytest
from PIL import Image

from backends.base import ModelSpec, Request, Result
from daemon import aws
from daemon.errors import EnvironmentFault, InputError, OutputError
from daemon.execution.inline_pool import InlinePool
from daemon.outputs import imaging
from daemon.queue.ledger import Ledger
from daemon.sinks.folder import FolderSink
from daemon.types import JobState, PlanState
from tests.unit.test_runner import build, drain, png, ruleset


class FaultyPool(InlinePool):
    """The in-process pool, raising ``fault`` (what the pool's seam makes of a backend's
    missing API key or weights) until it is cleared: the operator's fix."""

    fault: Exception | None = None

    def run(self, spec: ModelSpec, request: Request, **kwargs: Any) -> Result:
        if self.fault is not None:
            raise self.fault
        return super().run(spec, request, **kwargs)


def manifests(sink) -> list[dict[str, Any]]:
    """Every committed manifest (the output folder's name is the identity part's business)."""
    return [json.loads(v) for k, v in sink.objects.items() if k.endswith("/manifest.json")]


def with_pool(runner, pool):
    runner.pool = pool
    return runner


@pytest.mark.parametrize(
    "fault",
    [
        EnvironmentFault("hosted model 'flash': no API key (GEMINI_API_KEY is not set)"),
        EnvironmentFault("profile 'sdxl': weights not found under models/sdxl"),
    ],
    ids=["missing-api-key", "missing-weights"],
)
def test_environment_fault_holds_the_job_and_it_resumes_after_the_fix(tmp_path, fault):
    ledger, source, sink, runner, intake = build(tmp_path, ruleset())
    pool = FaultyPool(tmp_path / "models")
    pool.fault = fault
    with_pool(runner, pool)
    source.put("cat.png", png())
    drain(intake, runner)

    (job,) = ledger.jobs()
    assert job.state is JobState.HELD
    assert str(fault) in (job.error or "")
    assert job.attempts == 0  # holding costs no attempt
    assert source.quarantined == {}  # the input stays where it is
    assert manifests(sink) == []  # nothing failed was committed
    assert ledger.plans()[0].state is PlanState.ACTIVE

    pool.fault = None  # the operator sets the key / downloads the weights, then reloads
    ledger.resume_held(everything=True)  # what a reload and `retry --held` do
    drain(intake, runner)
    assert ledger.jobs()[0].state is JobState.DONE
    assert [m["status"] for m in manifests(sink)] == ["done"]


def test_held_jobs_back_off_capped_and_resume_by_themselves(tmp_path):
    now = [1000.0]
    ledger = Ledger(
        tmp_path / "l.sqlite", clock=lambda: now[0], hold_backoff=30, hold_backoff_max=100
    )
    _, source, _, runner, intake = build(tmp_path / "b", ruleset())
    runner.ledger = ledger  # unused: the ledger is driven directly below
    plan_ledger = intake.ledger
    source.put("cat.png", png())
    while not intake.queue.empty():
        intake.handle(intake.queue.get())
    plan = plan_ledger.plans()[0].plan
    ledger.submit(plan)
    (jid,) = [j.id for j in ledger.jobs()]
    delays = []
    for _ in range(4):
        now[0] += 1000
        ledger.resume_held(everything=True)
        (claimed,) = ledger.claim_ids("me", [jid])
        delays.append(ledger.hold(claimed.id, "bucket missing"))
        assert ledger.resume_held() == []  # not before its backoff
    assert delays == [30, 60, 100, 100]
    now[0] += 100
    assert ledger.resume_held() == [jid]  # by itself, once the backoff passed
    assert ledger.job(jid).attempts == 0


def test_disk_full_at_the_sink_holds_the_job(tmp_path, monkeypatch):
    sink = FolderSink("out", tmp_path / "out")

    def full(*_: Any, **__: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("daemon.sinks.folder.os.replace", full)
    with pytest.raises(EnvironmentFault, match="No space left"):
        sink.write("r/cat/one-0.png", b"x")

    ledger, source, _, runner, intake = build(tmp_path, ruleset())
    runner.sinks = {"out": sink}
    runner.preparer.sinks = runner.finalizer.sinks = runner.sinks
    source.put("cat.png", png())
    drain(intake, runner)
    (job,) = ledger.jobs()
    assert job.state is JobState.HELD and "No space left" in (job.error or "")
    assert source.quarantined == {}


def test_a_missing_sink_bucket_is_an_environment_fault():
    from botocore.exceptions import ClientError

    error = ClientError(
        {"Error": {"Code": "NoSuchBucket", "Message": "The specified bucket does not exist"}},
        "PutObject",
    )
    translated = aws.translate(
        error, "s3://wrong-bucket/r/cat/one-0.png", action="write", error=OutputError
    )
    assert isinstance(translated, EnvironmentFault)
    assert "no such bucket" in str(translated)
    # The same code on an input read is still about that input.
    missing_key = ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
    assert isinstance(aws.translate(missing_key, "s3://in/a.jpg", action="read"), InputError)


def test_missing_ghostscript_is_an_environment_fault(monkeypatch):
    def no_gs(*_: Any, **__: Any) -> Image.Image:
        raise OSError("Unable to locate Ghostscript on paths")

    monkeypatch.setattr(imaging.Image, "open", no_gs)
    with pytest.raises(EnvironmentFault, match="Ghostscript"):
        imaging.decode(b"%!PS-Adobe-3.0 EPSF-3.0", "logo.eps")


def test_a_decoder_crash_is_quarantined_after_the_attempts_and_closes(tmp_path, monkeypatch):
    ledger, source, sink, runner, intake = build(tmp_path, ruleset())

    def unimplemented(*_: Any, **__: Any) -> Image.Image:
        raise NotImplementedError("Unimplemented pixel format b'DX10'")

    source.put("texture.png", png())
    while not intake.queue.empty():
        intake.handle(intake.queue.get())
    # Pillow raising NotImplementedError on an unimplemented pixel format (a DDS variant)
    monkeypatch.setattr(imaging.Image, "open", unimplemented)
    drain(intake, runner)
    (job,) = ledger.jobs()
    assert job.state is JobState.FAILED and job.attempts == 3
    assert "NotImplementedError" in (job.error or "")
    assert ledger.plans()[0].state is PlanState.FAILED  # the plan closed
    assert "texture.png" in source.quarantined
    runner.finalize_ended()  # a restart's finalize has nothing left to trip on


def test_a_plan_that_cannot_close_never_stops_start_up(tmp_path, monkeypatch, capsys):
    ledger, source, sink, runner, intake = build(tmp_path, ruleset())
    source.put("cat.png", png())
    while not intake.queue.empty():
        intake.handle(intake.queue.get())
    jid = ledger.jobs()[0].id
    ledger.claim_ids("me", [jid])
    ledger.fail(jid, "bad", retryable=False)
    calls = []

    def broken(plan_id: str, jobs: Any) -> None:
        calls.append(plan_id)
        raise RuntimeError("finalize bug")

    monkeypatch.setattr(runner.finalizer, "finalize", broken)
    runner.finalize_ended()  # what start-up does: logs, does not raise
    runner.finalize_ended()  # backed off: not tried (nor logged) again at once
    assert len(calls) == 1
