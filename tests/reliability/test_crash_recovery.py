"""Scenarios 1, 12, 13: kill -9 at every stage, a second daemon on the same state
directory, SIGTERM during a long job. The real daemon, as a subprocess."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import make_image
from tests.reliability.conftest import LedgerView, check_output_set, pid_alive, temp_files, wait_for

pytestmark = pytest.mark.slow


def running(rule: str, sleep: str, marker: Path) -> str:
    """``rule`` with its stub sleeping ``sleep`` s and creating ``marker`` when the model call
    begins (the stub's ``stub_running``): "the job is on the model" as a fact to wait for."""
    return rule.replace("stub_sleep: SLEEP", f"stub_sleep: {sleep}, stub_running: '{marker}'")


SLOW_RULE = """\
name: r
match: {source: drop}
prompt: "{stem}"
steps:
  - {name: one, model: stub, variants: 2, seeds: [1, 2], params: {stub_sleep: SLEEP}}
output: {sink: out}
"""


def manifest_done(out, stem: str) -> bool:
    return (out / "r" / f"{stem}.png" / "manifest.json").exists()


# Every crash point the daemon has (daemon/faults.py), in pipeline order.
FAULT_POINTS = ["after-read", "after-temp-write", "after-outputs", "after-page", "after-manifest"]


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_kill9_at_each_stage_then_restart_converges(tmp_path, darkroom, point):
    """Scenario 1: the daemon SIGKILLs itself at ``point``; a plain restart ends with exactly
    one complete output set, no temp files, and nothing marked done that is not."""
    daemon = darkroom()
    daemon.start(env={"DARKROOM_FAULT": point})
    make_image(tmp_path / "drop" / "photo.png")
    assert daemon.wait_exit(30) == -signal.SIGKILL, f"the fault point {point} was never reached"
    ledger = LedgerView(tmp_path / "state")
    # Whatever the crash left: nothing is done without its outputs.
    for job in ledger.jobs("photo.png"):
        assert job["state"] != "done" or point in ("after-page", "after-manifest"), dict(job)
    folder = tmp_path / "out" / "r" / "photo.png"
    # The page is written before the manifest: a committed manifest always has its page.
    assert not (folder / "manifest.json").exists() or (folder / "index.html").exists()
    if point == "after-temp-write":
        assert temp_files(tmp_path / "out"), "the crash should have left a temp file behind"

    daemon.start()  # no fault: converge without manual steps
    wait_for(lambda: ledger.outcome("photo.png") == "done", 30, "the plan to be done after restart")
    check_output_set(tmp_path / "out", tmp_path / "state", "r/photo.png", "photo.png")
    assert daemon.events("job done") or point in ("after-page", "after-manifest")
    if point == "after-temp-write":
        assert daemon.events("removed temp files left by an earlier crash")
    # Effectively once: the restart did not process it a second time after it was done.
    started = Counter(e["key"] for e in daemon.events("job started"))
    assert started["photo.png"] <= 1
    assert daemon.stop(30) == 0


def test_kill9_mid_inference_then_restart_converges(tmp_path, darkroom):
    """Scenario 1, mid-inference: SIGKILL the main process while the stub model sleeps."""
    marker = tmp_path / "running"
    daemon = darkroom(running(SLOW_RULE, "2", marker))
    daemon.start()
    make_image(tmp_path / "drop" / "photo.png")
    wait_for(marker.exists, 60, "the job to run on the model")
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    ledger = LedgerView(tmp_path / "state")
    jobs = ledger.jobs("photo.png")
    assert [j["state"] for j in jobs] == ["running"], [dict(j) for j in jobs]
    assert not (tmp_path / "out" / "r" / "photo.png" / "manifest.json").exists()

    daemon.start()
    assert daemon.events("work that was running when the daemon stopped is queued again")
    wait_for(lambda: ledger.outcome("photo.png") == "done", 30, "the plan to be done after restart")
    check_output_set(tmp_path / "out", tmp_path / "state", "r/photo.png", "photo.png")
    [job] = ledger.jobs("photo.png")
    assert job["attempts"] == 2  # the killed attempt counts: a poison input cannot loop forever
    assert daemon.stop(30) == 0


def test_worker_exits_soon_after_the_main_process_is_killed(tmp_path, darkroom):
    """Scenario 1, mid-inference: the worker must not outlive a SIGKILLed main process by
    more than a few seconds (it would keep a GPU busy and beside the next daemon's worker)."""
    marker = tmp_path / "running"
    daemon = darkroom(running(SLOW_RULE, "300", marker))
    daemon.start()
    # The daemon is ready before its worker has started (models load after READY).
    wait_for(lambda: daemon.worker_pids(), 60, "the worker to start")
    [worker] = daemon.worker_pids()
    make_image(tmp_path / "drop" / "photo.png")
    wait_for(marker.exists, 60, "the job to run on the model")
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    # Generous for a busy machine, and far short of the job's 300 s: the worker noticed.
    wait_for(
        lambda: not pid_alive(worker),
        60,
        f"worker {worker} to exit (it runs a 300 s job; its main process was SIGKILLed)",
    )


def test_repeated_crashes_on_one_input_end_failed_not_forever(tmp_path, darkroom):
    """A job that is running every time the daemon dies is given up after max_attempts
    (ledger.recover), so a poison input cannot crash-loop the daemon forever."""
    daemon = darkroom(max_attempts=2)
    daemon.start(env={"DARKROOM_FAULT": "after-read"})
    make_image(tmp_path / "drop" / "photo.png")
    assert daemon.wait_exit(30) == -signal.SIGKILL
    # The recovered job runs (and crashes) again before the daemon even says it is running.
    daemon.start(env={"DARKROOM_FAULT": "after-read"}, wait_ready=False)
    assert daemon.wait_exit(30) == -signal.SIGKILL
    daemon.start()
    ledger = LedgerView(tmp_path / "state")
    wait_for(lambda: ledger.outcome("photo.png") == "failed", 20, "the plan to fail")
    [job] = ledger.jobs("photo.png")
    assert "the daemon stopped during each of 2 attempts" in job["error"]
    assert daemon.stop(30) == 0


def test_second_daemon_on_the_same_state_dir_refuses_to_start(tmp_path, darkroom):
    """Scenario 12: a lock on the state directory; the second daemon exits 1 with a clear
    message naming the holder, and the first keeps working on an intact ledger."""
    first = darkroom()
    first.start()
    second = type(first)(tmp_path, first.config, tmp_path / "second.log")
    second.workers = []
    second.start(wait_ready=False)
    try:
        code = second.wait_exit(30)
    finally:
        second.kill()
    text = second.text()
    assert code == 1, text
    assert f"(pid {first.pid})" in text and "in use by darkroom" in text, text
    assert "stop it first" in text
    make_image(tmp_path / "drop" / "after.png")
    ledger = LedgerView(tmp_path / "state")
    wait_for(lambda: ledger.outcome("after.png") == "done", 20, "the first daemon to keep working")
    check_output_set(tmp_path / "out", tmp_path / "state", "r/after.png", "after.png")
    assert first.stop(30) == 0


def test_sigterm_during_a_long_job_lets_it_finish_and_exits_0(tmp_path, darkroom):
    """Scenario 13a: the job fits in stop_timeout: it finishes, is committed, exit 0."""
    marker = tmp_path / "running"
    daemon = darkroom(running(SLOW_RULE, "2", marker), stop_timeout=10)
    daemon.start()
    make_image(tmp_path / "drop" / "photo.png")
    make_image(tmp_path / "drop" / "next.png")
    # On the model, not only prepared: a prepared job not yet on a worker is put back.
    wait_for(marker.exists, 60, "the job to run on the model")
    assert daemon.stop(60) == 0
    ledger = LedgerView(tmp_path / "state")
    first = daemon.events("job started")[0]["key"]
    assert ledger.outcome(first) == "done"
    check_output_set(tmp_path / "out", tmp_path / "state", f"r/{first}", first)
    other = "next.png" if first == "photo.png" else "photo.png"
    assert {j["state"] for j in ledger.jobs(other)} <= {"queued"}  # left queued (or not yet seen)
    assert not temp_files(tmp_path / "out")


def test_sigterm_when_the_job_outlasts_stop_timeout_requeues_it(tmp_path, darkroom):
    """Scenario 13b: the job does not fit in stop_timeout: the daemon still stops promptly
    (stop_timeout plus a small margin), exits 0, and the job is queued again without its
    attempt counted (a restart completes it)."""
    stop_timeout = 1
    marker = tmp_path / "running"
    # A job far longer than any stop: stop() returning within its limit (well under the
    # job's 300 s) shows the daemon did not wait for it.
    daemon = darkroom(running(SLOW_RULE, "300", marker), stop_timeout=stop_timeout)
    daemon.start()
    make_image(tmp_path / "drop" / "photo.png")
    wait_for(marker.exists, 60, "the job to run on the model")
    assert daemon.stop(120) == 0
    ledger = LedgerView(tmp_path / "state")
    [job] = ledger.jobs("photo.png")
    assert job["state"] == "queued" and job["attempts"] == 0, dict(job)
    assert not (tmp_path / "out" / "r" / "photo.png" / "manifest.json").exists()
    assert not temp_files(tmp_path / "out")
