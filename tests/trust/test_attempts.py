"""Issue 14, item 7: a crash charges an attempt only to the jobs a worker was running, not to
every job claimed ahead of it."""

from __future__ import annotations

from typing import Any

from daemon.queue.ledger import Ledger
from tests.unit.test_runner import build, png, ruleset


def eight_claimed(tmp_path) -> tuple[Ledger, list[str]]:
    ledger, source, _, _, intake = build(tmp_path, ruleset())
    for i in range(8):
        source.put(f"cat{i}.png", png(color=(i, 0, 0)))
    while not intake.queue.empty():
        intake.handle(intake.queue.get())
    ids = [j.id for j in ledger.jobs()]
    assert len(ledger.claim_ids("runner", ids)) == 8
    return ledger, ids


def test_a_crash_charges_only_the_job_on_the_worker(tmp_path):
    ledger, ids = eight_claimed(tmp_path)
    ledger.on_worker(ids[:1])  # one worker: one job was running, seven waited for it
    ledger.close()  # the daemon is killed here

    after = Ledger(tmp_path / "ledger.sqlite", max_attempts=3)
    assert after.recover() == 8
    attempts = {j.id: j.attempts for j in after.jobs()}
    assert attempts[ids[0]] == 1
    assert [attempts[i] for i in ids[1:]] == [0] * 7


def test_three_crashes_do_not_fail_jobs_that_never_ran(tmp_path):
    ledger, ids = eight_claimed(tmp_path)
    ledger.close()
    for _ in range(4):
        crashed = Ledger(tmp_path / "ledger.sqlite", max_attempts=3)
        crashed.recover()
        crashed.claim_ids("runner", ids)  # claimed again, killed before a worker took them
        crashed.close()
    final = Ledger(tmp_path / "ledger.sqlite", max_attempts=3)
    final.recover()
    assert {j.state.value for j in final.jobs()} == {"queued"}
    assert {j.attempts for j in final.jobs()} == {0}


def test_the_runner_marks_a_job_once_its_processing_starts(tmp_path):
    # Claimed ahead of time: not charged. Being decoded or on a worker: charged (a decoder
    # that kills the main process must not crash-loop it forever either).
    ledger, source, _, runner, intake = build(tmp_path, ruleset())
    seen: list[Any] = []
    real_run = runner.pool.run

    def run(spec: Any, request: Any, **kwargs: Any) -> Any:
        seen.append(ledger._db.execute("SELECT on_worker_at FROM jobs").fetchone()[0])
        return real_run(spec, request, **kwargs)

    runner.pool.run = run  # type: ignore[method-assign]
    source.put("cat.png", png())
    while not intake.queue.empty():
        intake.handle(intake.queue.get())
    (claimed,) = ledger.claim_ids(runner.owner, [j.id for j in ledger.jobs()])
    assert ledger._db.execute("SELECT on_worker_at FROM jobs").fetchone()[0] is None
    ledger.release(claimed.id)
    assert runner.step()
    assert seen and seen[0] is not None  # marked before the model ran
