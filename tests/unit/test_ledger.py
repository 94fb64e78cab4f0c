import json

from daemon.outputs.manifest import RoundSummary
from daemon.queue.ledger import Ledger
from daemon.types import JobState, OutputRecord, Plan, PlanState


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def plan(sha="a" * 64, rule="r", digest="d1", steps=(("one", "source"), ("two", "one"))) -> Plan:
    return Plan.model_validate(
        {
            "sha256": sha,
            "content": sha,
            "rule": rule,
            "digest": digest,
            "arrival": {"source": "drop", "key": "x.jpg", "uri": "/x.jpg", "size": 1},
            "prompt": "p",
            "sink": "out",
            "path": "{rule}/{stem}/{step}-{variant}.{ext}",
            "manifest": "r/x/manifest.json",
            "sheet": "r/x/sheet.png",
            "units": [
                {"id": n, "name": n, "model": "stub", "input": i, "prompt": "p", "seeds": [1]}
                for n, i in steps
            ],
        }
    )


def output(path: str, **fields) -> OutputRecord:
    return OutputRecord(path=path, step="one", model="stub", variant=0, seed=1, **fields)


def test_submit_is_idempotent_across_reopen(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    pid, created = ledger.submit(plan())
    assert created
    assert ledger.submit(plan()) == (pid, False)
    ledger.close()
    reopened = Ledger(tmp_path / "l.sqlite")
    assert reopened.submit(plan()) == (pid, False)
    assert len(reopened.jobs_of(pid)) == 2
    # A changed rule (new digest) or new content is new work.
    assert reopened.submit(plan(digest="d2"))[1]
    assert reopened.submit(plan(sha="b" * 64))[1]


def test_steps_wait_for_their_input_step(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    pid, _ = ledger.submit(plan())
    first = ledger.claim("w")
    assert (first.unit_id, first.unit_name, first.unit_index) == ("one", "one", 0)
    assert first.attempts == 1
    assert ledger.claim("w") is None  # "two" waits for "one"
    ledger.complete(first.id, [output("p.png")], 0.1)
    second = ledger.claim("w")
    assert second.unit_id == "two" and second.unit_index == 1
    ledger.complete(second.id, [], 0.1)
    assert ledger.unfinished_plans() == [pid]
    ledger.finish_plan(pid, PlanState.DONE)
    assert ledger.unfinished_plans() == []
    assert ledger.plan(pid).state is PlanState.DONE


def test_retry_with_backoff_then_fail_with_reason(tmp_path):
    clock = Clock()
    ledger = Ledger(tmp_path / "l.sqlite", max_attempts=3, retry_backoff=2.0, clock=clock)
    pid, _ = ledger.submit(plan())
    job = ledger.claim("w")
    assert ledger.fail(job.id, "boom", retryable=True) is JobState.QUEUED
    assert ledger.claim("w") is None  # backing off
    clock.now += 2.1
    job = ledger.claim("w")
    assert job.attempts == 2
    ledger.fail(job.id, "boom", retryable=True)
    clock.now += 3.9
    assert ledger.claim("w") is None  # second backoff is 4 s
    clock.now += 0.2
    job = ledger.claim("w")
    assert ledger.fail(job.id, "boom", retryable=True) is JobState.FAILED
    jobs = ledger.jobs_of(pid)
    assert jobs[0].state is JobState.FAILED and "gave up after 3 attempts" in jobs[0].error
    assert jobs[1].state is JobState.FAILED and "input step 'one' failed" in jobs[1].error


def test_permanent_failure_is_not_retried(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.submit(plan())
    job = ledger.claim("w")
    assert ledger.fail(job.id, "cannot decode image", retryable=False) is JobState.FAILED
    assert ledger.claim("w") is None


def test_recover_requeues_running_work_and_keeps_the_attempt(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite", max_attempts=2)
    ledger.submit(plan())
    job = ledger.claim("w")
    ledger.on_worker([job.id])  # a worker was running it (claimed-only jobs are not charged)
    ledger.close()  # the process dies here
    ledger = Ledger(tmp_path / "l.sqlite", max_attempts=2)
    assert ledger.recover() == 1
    again = ledger.claim("w")
    assert again.id == job.id and again.attempts == 2
    ledger.on_worker([again.id])
    ledger.close()
    ledger = Ledger(tmp_path / "l.sqlite", max_attempts=2)
    ledger.recover()  # died during every attempt: ends failed instead of looping forever
    assert ledger.job(job.id).state is JobState.FAILED
    assert "stopped during each of 2 attempts" in ledger.job(job.id).error


def test_release_does_not_count_the_attempt(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.submit(plan())
    job = ledger.claim("w")
    ledger.release(job.id)
    assert ledger.claim("w").attempts == 1


def test_seen_files_are_remembered(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    assert not ledger.is_seen("drop", "a.jpg", 10, 5)
    ledger.mark_seen("drop", "a.jpg", 10, 5, "s", "submitted")
    assert ledger.is_seen("drop", "a.jpg", 10, 5)
    assert not ledger.is_seen("drop", "a.jpg", 11, 5)  # modified since: new content


def test_prune_forgets_old_finished_plans_only(tmp_path):
    clock = Clock()
    ledger = Ledger(tmp_path / "l.sqlite", clock=clock)
    old, _ = ledger.submit(plan(sha="1" * 64, steps=(("one", "source"),)))
    ledger.complete(ledger.claim("w").id, [], 0.1)
    ledger.finish_plan(old, PlanState.DONE)
    clock.now += 100
    active, _ = ledger.submit(plan(sha="2" * 64, steps=(("one", "source"),)))
    assert ledger.oldest_active_by_source() == {"drop": clock.now}
    assert ledger.prune(before=clock.now - 50) == 1
    assert [p.id for p in ledger.plans()] == [active]


def test_plans_outputs_and_rounds_come_back_typed(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    submitted = plan()
    pid, _ = ledger.submit(submitted)
    row = ledger.plan(pid)
    assert row.plan == submitted and row.state is PlanState.ACTIVE and row.rounds == []
    refused = output(None, error="refused by the provider", cost=0.04)
    ledger.complete(ledger.claim("w").id, [output("p.png", width=8, height=8), refused], 0.1)
    done = ledger.jobs_of(pid)[0]
    assert done.outputs == [output("p.png", width=8, height=8), refused]
    # Only the fields a record was given are stored (the manifest writes exactly those).
    stored = json.loads(ledger._db.execute("SELECT outputs FROM jobs").fetchone()[0])
    assert "width" not in stored[1] and stored[1]["path"] is None
    assert ledger.spend() == {("r", __import__("time").strftime("%Y-%m-%d")): 0.04}
    earlier = RoundSummary(round=1, prompt="p", created_at=None, sheet=None, outputs=["a.png"])
    ledger.note_round(pid, [earlier])
    assert ledger.plan(pid).rounds == [earlier]


def test_plans_stored_by_earlier_versions_still_read_and_dispatch(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    pid, _ = ledger.submit(plan(steps=(("one", "source"),)))
    # An earlier daemon stored the units under "steps".
    data = json.loads(plan(steps=(("one", "source"),)).model_dump_json())
    data["steps"] = data.pop("units")
    ledger._db.execute("UPDATE plans SET plan=? WHERE id=?", (json.dumps(data), pid))
    assert [u.id for u in ledger.plan(pid).plan.units] == ["one"]
    assert [c.profile for c in ledger.due_heads(1)] == ["stub"]
