"""Issue 16: the daemon is READY, and takes files in, before its worker has started and loaded
its models (a worker that imports torch and diffusers takes tens of seconds). A job whose
worker or model is not ready yet waits for it; systemd's STATUS line says what is loading."""

from __future__ import annotations

import threading

from daemon.config.settings import load_settings
from daemon.service.app import App
from daemon.types import PlanState
from tests.conftest import STUB_RULE, make_image


def test_ready_and_intake_do_not_wait_for_the_worker_and_its_models(harness):
    harness.rule("r.yaml", STUB_RULE)
    app = App(load_settings(harness.config()))
    harness.app = app
    worker_may_start = threading.Event()
    real_start = app.pool.start

    def slow_start() -> None:  # the worker importing torch and diffusers, for as long as we like
        worker_may_start.wait(120)
        real_start()

    app.pool.start = slow_start  # type: ignore[method-assign]
    statuses: list[str] = []
    ready: list[str] = []
    app.notifier.status = lambda text: statuses.append(text) or True  # type: ignore[method-assign]
    app.notifier.ready = lambda status=None: ready.append(status or "") or True  # type: ignore[method-assign]
    make_image(harness.drop / "a.png")
    starting = threading.Thread(target=app.start, daemon=True)
    starting.start()
    harness.wait(lambda: ready, 60, "READY while the worker is still starting")
    assert app.readiness.check()[0]  # /readyz agrees with READY=1: files are taken
    # Intake runs: the file is planned, and its job waits for the worker.
    ledger = app.ledger
    assert ledger is not None
    harness.wait(lambda: ledger.plan_count() == 1, 60, "the file planned before the worker is up")
    assert ledger.counts().get("done", 0) == 0
    assert any("starting the worker" in s for s in statuses)
    worker_may_start.set()
    harness.wait(lambda: [p.state for p in ledger.plans()] == [PlanState.DONE], 120, "the job done")
    assert any("loading model stub (1 of 1)" in s for s in statuses), statuses
    assert "starting" not in statuses[-1] and "loading" not in statuses[-1]


def test_the_review_sheet_does_not_read_back_outputs_this_daemon_just_wrote(harness, monkeypatch):
    """Issue 16 (sheet speed): the sheet's tiles come from the pixels the runner wrote, not
    from reading every output back from the sink and decoding it (an S3 GET per output)."""
    from daemon.sinks.folder import FolderSink

    reads: list[str] = []
    real_read = FolderSink.read

    def recording_read(self: FolderSink, path: str) -> bytes:
        reads.append(path)
        return real_read(self, path)

    monkeypatch.setattr(FolderSink, "read", recording_read)
    harness.rule("r.yaml", STUB_RULE.replace("seeds: [1]", "seeds: [1, 2, 3]"))
    app = harness.start()
    make_image(harness.drop / "b.png")
    ledger = app.ledger
    assert ledger is not None
    harness.wait(
        lambda: [p.state for p in ledger.plans()] == [PlanState.DONE], 120, "the plan done"
    )
    [row] = ledger.plans()
    outputs = {o.path for job in ledger.jobs_of(row.id) for o in job.outputs if o.path}
    assert len(outputs) == 3
    sheets = [p for p in harness.out.rglob("*.png") if "sheet" in p.name]
    assert sheets, "no review sheet written"
    assert not outputs & set(reads), f"outputs read back for the sheet: {outputs & set(reads)}"
