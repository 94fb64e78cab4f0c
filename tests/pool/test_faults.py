"""Crash injection through the stub backend: a worker that segfaults, one that raises a
CUDA-style sticky error, one that runs out of memory on its first call. Every job still
completes, exactly once, after recovery."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from backends.base import ModelSpec, Request
from backends.runtime import placement
from daemon.errors import JobError, OutOfMemory
from daemon.execution.pool import WorkerPool
from daemon.hooks import Hooks
from daemon.types import JobState
from tests.pool.conftest import png, rule


class Restarts(Hooks):
    def __init__(self) -> None:
        self.restarts: list[tuple[str, str]] = []

    def worker_restarted(self, device, reason):
        self.restarts.append((device, reason))


@pytest.mark.parametrize("mode", ["crash", "segfault"])
def test_a_worker_death_once_is_retried_and_the_job_completes_exactly_once(harness, tmp_path, mode):
    marker = tmp_path / "failed-once"
    h = harness([rule("r", params={"stub_fail": mode, "stub_fail_once": str(marker)})])
    h.put("r/dog.png")
    h.drain()
    assert marker.exists()
    job = h.ledger.jobs()[0]
    assert job.state is JobState.DONE and job.attempts == 2
    assert h.sink.writes.count("r/r/dog.png/one-0.png") == 1
    assert json.loads(h.sink.objects["r/r/dog.png/manifest.json"])["status"] == "done"


def test_repeated_crashes_end_failed_after_max_attempts(harness):
    h = harness([rule("r", params={"stub_fail": "crash"})])
    h.put("r/x.png")
    h.drain()
    job = h.ledger.jobs()[0]
    assert job.state is JobState.FAILED and job.attempts == 3
    assert (
        "worker process exited with status 3" in job.error
        and "gave up after 3 attempts" in job.error
    )


def test_worker_timeout_replaces_the_worker_and_says_why(tmp_path):
    hooks = Restarts()
    pool = WorkerPool("cpu", 0, tmp_path, job_timeout=1, hooks=hooks)
    pool.start()
    try:
        with pytest.raises(JobError, match="timed out"):
            pool.run(
                ModelSpec("stub", "stub"),
                Request([Image.new("RGB", (8, 8))], "p", [1], params={"stub_sleep": 5}),
            )
        out = pool.run(ModelSpec("stub", "stub"), Request([Image.new("RGB", (8, 8))], "p", [1]))
        assert len(out.images) == 1 and pool.restarts == 1
        assert hooks.restarts == [("cpu", "job timed out after 1 s; worker replaced")]
    finally:
        pool.stop()


@pytest.mark.parametrize("mode, attempts", [("segfault", 2), ("sticky", 2), ("oom", 1)])
def test_each_fault_once_still_completes_every_job_exactly_once(harness, tmp_path, mode, attempts):
    marker = tmp_path / "failed-once"
    h = harness(
        [rule("r", prompt="a photo", params={"stub_fail": mode, "stub_fail_once": str(marker)})],
        max_batch=4,
    )
    for i in range(3):
        h.put(f"r/{i}.png", png((i * 40, 10, 10)))
    h.drain()
    assert marker.exists()
    jobs = h.ledger.jobs()
    assert [j.state for j in jobs] == [JobState.DONE] * 3
    # The batch that met the fault: its jobs were retried (attempt raised) for a dead worker;
    # out-of-memory is retried inside the pool, without costing an attempt.
    assert max(j.attempts for j in jobs) == attempts
    for i in range(3):
        assert h.sink.writes.count(f"r/r/{i}.png/one-0.png") == 1
        assert json.loads(h.sink.objects[f"r/r/{i}.png/manifest.json"])["status"] == "done"
    restarts = h.runner.pool.restarts
    assert restarts == (0 if mode == "oom" else 1)


def test_a_job_that_always_crashes_fails_with_the_reason_and_spares_its_batch(harness):
    h = harness(
        [rule("good", prompt="p"), rule("bad", prompt="p", params={"stub_fail": "segfault"})],
        max_batch=4,
    )
    for i in range(2):
        h.put(f"good/{i}.png", png((i, 0, 0)))
    h.put("bad/x.png")
    h.drain()
    by_rule = {j.rule: j for j in h.ledger.jobs()}
    assert by_rule["good"].state is JobState.DONE
    bad = by_rule["bad"]
    assert bad.state is JobState.FAILED and bad.attempts == 3
    assert "SIGSEGV" in bad.error and "gave up after 3 attempts" in bad.error


def test_out_of_memory_halves_a_batch_then_each_job_completes(harness):
    # 4 jobs batched into one call of 4 outputs; the "device" holds only 2 at a time.
    h = harness([rule("r", prompt="p", params={"stub_oom_above": 2})], max_batch=4)
    for i in range(4):
        h.put(f"r/{i}.png", png((0, i * 50, 0)))
    h.drain()
    jobs = h.ledger.jobs()
    assert all(j.state is JobState.DONE and j.attempts == 1 for j in jobs)
    assert h.runner.pool.calls == 2  # two halves, after the failed call of four


def test_out_of_memory_on_a_single_job_walks_the_offload_ladder(tmp_path, monkeypatch):
    # The pool computes the ladder (placement.oom_ladder) in this process: let it offload on
    # this CPU-only machine, as it would on a GPU.
    monkeypatch.setattr(placement, "OFFLOAD_ON_CPU", True)
    pool = WorkerPool("cpu", 0, tmp_path, job_timeout=20)
    pool.start()
    try:
        request = Request(
            [Image.new("RGB", (8, 8))],
            "p",
            [1],
            params={"stub_fail": "oom", "stub_fail_offload": True},
        )
        result = pool.run(ModelSpec("stub", "stub"), request)
        assert len(result.images) == 1 and pool.restarts == 0
        # max_batch 1 did not help; model offload (the first rung, an accepted value) did.
        held = [s for w in pool.workers for s in w.loaded]
        assert [s.option("cpu_offload") for s in held] == ["model"]
        # The next job of that model starts where the last one succeeded: no new failure, so
        # nothing is unloaded and built again on the way down the ladder.
        loads, evictions = pool.loads, pool.evictions
        pool.run(ModelSpec("stub", "stub"), request)
        assert (pool.loads, pool.evictions) == (loads, evictions)
        with pytest.raises(OutOfMemory):
            pool.run(
                ModelSpec("stub", "stub-2"),
                Request([Image.new("RGB", (8, 8))], "p", [1], params={"stub_fail": "oom"}),
            )
    finally:
        pool.stop()


def test_job_time_limit_replaces_the_worker_and_the_job_is_retried(harness, tmp_path):
    pool = WorkerPool("cpu", 0, tmp_path / "m", job_timeout=1)
    pool.start()
    try:
        marker = tmp_path / "slow-once"
        h = harness(
            [
                rule(
                    "r",
                    params={"stub_sleep": 0, "stub_fail": "error", "stub_fail_once": str(marker)},
                )
            ],
            pool=pool,
        )
        h.put("r/a.png")
        h.drain()
        assert h.ledger.jobs()[0].state is JobState.DONE
        with pytest.raises(Exception, match="timed out"):
            pool.run(
                ModelSpec("stub", "stub"),
                Request([Image.new("RGB", (8, 8))], "p", [1], params={"stub_sleep": 5}),
            )
        assert pool.restarts == 0  # replaced on the next call
        pool.run(ModelSpec("stub", "stub"), Request([Image.new("RGB", (8, 8))], "p", [1]))
        assert pool.restarts == 1
    finally:
        pool.stop()


def test_workers_are_recycled_after_n_jobs(tmp_path):
    pool = WorkerPool("cpu", 0, tmp_path, job_timeout=20, recycle_after_jobs=2)
    pool.start()
    try:
        pids = []
        for _ in range(5):
            result = pool.run(
                ModelSpec("stub", "stub"), Request([Image.new("RGB", (8, 8))], "p", [1])
            )
            pids.append(result.info["pid"])
        assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
        assert pool.recycles == 2 and pool.restarts == 0
    finally:
        pool.stop()


def test_workers_are_recycled_when_their_memory_grows(tmp_path):
    pool = WorkerPool(
        "cpu", 0, tmp_path, job_timeout=20, recycle_rss_gb=0.001
    )  # any process is bigger
    pool.start()
    try:
        first = pool.run(
            ModelSpec("stub", "stub"), Request([Image.new("RGB", (8, 8))], "p", [1])
        ).info["pid"]
        second = pool.run(
            ModelSpec("stub", "stub"), Request([Image.new("RGB", (8, 8))], "p", [1])
        ).info["pid"]
        assert first != second and pool.recycles == 2
    finally:
        pool.stop()
