"""Model affinity: a job goes where its model is loaded, so interleaved profiles do not
make a worker swap models back and forth."""

from __future__ import annotations

from PIL import Image

from backends.base import ModelSpec, Request
from daemon.execution.pool import WorkerPool
from daemon.execution.worker_handle import Worker
from daemon.hooks import Hooks
from daemon.types import JobState
from tests.pool.conftest import PROFILES, png, rule


class ModelEvents(Hooks):
    def __init__(self) -> None:
        self.loaded: list[tuple[str, str]] = []
        self.evicted: list[tuple[str, str]] = []

    def model_loaded(self, profile, device, seconds):
        assert seconds >= 0
        self.loaded.append((profile, device))

    def model_evicted(self, profile, device):
        self.evicted.append((profile, device))


def interleave(h, n):
    for i in range(n):
        h.put(f"ra/{i}.png", png((i, 1, 1)))
        h.put(f"rb/{i}.png", png((i, 2, 2)))


def test_two_profiles_interleaved_load_each_model_once(harness):
    h = harness(
        [rule("ra", model="a", prompt="{stem}"), rule("rb", model="b", prompt="{stem}")],
        max_batch=1,
    )
    interleave(h, 10)
    h.drain()
    assert all(j.state is JobState.DONE for j in h.ledger.jobs())
    assert h.runner.pool.loads == 2


def test_with_room_for_one_model_the_dispatcher_keeps_it_busy_before_swapping(harness, tmp_path):
    events = ModelEvents()
    pool = WorkerPool(
        "cpu",
        0,
        tmp_path / "m",
        job_timeout=20,
        memory_budget_gb=1.5,  # one stub model fits
        hooks=events,
        profile_of=lambda spec: {"stub-a": "a", "stub-b": "b"}[spec.model],
    )
    pool.start()
    try:
        h = harness(
            [rule("ra", model="a", prompt="{stem}"), rule("rb", model="b", prompt="{stem}")],
            pool=pool,
            max_batch=1,
        )
        interleave(h, 12)
        h.drain()
        assert all(j.state is JobState.DONE for j in h.ledger.jobs())
        # 24 interleaved jobs: job-by-job dispatch would load 24 times; bursts of the
        # affinity slack (4 jobs) bound it to about 24 / 4.
        assert pool.loads <= 7, pool.loads
        assert all(len(w.loaded) == 1 for w in pool.workers)  # the budget evicted the other
        # The worker reports every load and eviction; the hooks (metrics) hear each one.
        assert len(events.loaded) == pool.loads and len(events.evicted) == pool.loads - 1
        assert {p for p, _ in events.loaded} == {"a", "b"}
        assert {d for _, d in events.loaded + events.evicted} == {"cpu"}
    finally:
        pool.stop()


def test_an_idle_worker_with_the_model_is_chosen_over_an_empty_one(tmp_path):
    pool = WorkerPool(["cpu", "cpu"], 0, tmp_path, job_timeout=20)
    spec_a, spec_b = PROFILES["a"].spec("cpu"), PROFILES["b"].spec("cpu")
    w0, w1 = pool.workers
    w0.loaded, w1.loaded = {spec_a}, {spec_b}
    assert pool._choose(spec_b, 0) is w1
    assert pool._choose(spec_a, 0) is w0
    w0.busy = True
    assert pool._choose(spec_a, 0) is None  # wait a moment for the device that has it ...
    assert pool._choose(spec_a, 10) is w1  # ... but not for ever
    new = ModelSpec("stub", "other")
    w0.busy, w1.loaded = False, {spec_b, spec_a}
    assert pool._choose(new, 0) is w0  # the worker holding fewer models takes a new one


def test_two_cpu_workers_run_two_jobs_at_once(tmp_path):
    import threading

    from tests.e2e.conftest import wait_for

    pool = WorkerPool(["cpu", "cpu"], 0, tmp_path, job_timeout=60)
    pool.start()
    try:
        spec = ModelSpec("stub", "stub")
        pool.load(spec)
        assert pool.loads == 2  # preloaded on each device
        markers = [tmp_path / f"running-{i}" for i in range(2)]
        threads = [
            threading.Thread(
                target=pool.run,
                args=(
                    spec,
                    Request(
                        [Image.new("RGB", (8, 8))],
                        "p",
                        [1],
                        params={"stub_sleep": 8.0, "stub_running": str(marker)},
                    ),
                ),
            )
            for marker in markers
        ]
        for t in threads:
            t.start()
        # Both calls under way at once: run one after the other, the second would only
        # begin once the first (8 s) had ended.
        wait_for(lambda: all(m.exists() for m in markers), 60, "both jobs to be on a worker")
        assert all(t.is_alive() for t in threads)
        for t in threads:
            t.join()
        assert pool.calls == 2 and pool.loads == 2
        assert len({w.info["pid"] for w in pool.workers}) == 2
    finally:
        pool.stop()


def test_worker_state_reports_loaded_models_and_each_load_and_eviction(tmp_path):
    events = []
    w = Worker(
        "cpu",
        0,
        tmp_path,
        memory_budget_gb=1.5,
        on_model_event=lambda worker, event: events.append((event.kind, event.spec.model)),
    )
    w.start()
    try:
        w.call(("load", PROFILES["a"].spec("cpu")), 10)
        assert w.loaded == {PROFILES["a"].spec("cpu")}
        assert events == [("loaded", "stub-a")]
        w.call(("load", PROFILES["b"].spec("cpu")), 10)
        assert w.loaded == {PROFILES["b"].spec("cpu")}  # a was evicted
        assert events[1:] == [("loaded", "stub-b"), ("evicted", "stub-a")]
        w.call(("ping",), 10)
        assert len(events) == 3  # each event is reported once
    finally:
        w.stop()
