"""Issue 16: picking the next job costs the same with 10,000 jobs queued as with 10.

Before, every claim ran one query over every queued job (a window function and a JSON
extract each): ~100 ms per claim with a 10,000-file burst queued, under the lock intake
writes with. The cost is counted in SQLite virtual-machine steps (a progress handler),
not in seconds.
"""

from __future__ import annotations

from daemon.queue.ledger import Ledger
from daemon.types import Plan


def plan(i: int, rule: str = "r") -> Plan:
    sha = f"{i:064x}"
    return Plan.model_validate(
        {
            "sha256": sha,
            "content": sha,
            "rule": rule,
            "digest": "d1",
            "arrival": {"source": "drop", "key": f"d/{i}.jpg", "uri": f"/d/{i}.jpg", "size": 1},
            "prompt": "p",
            "sink": "out",
            "path": "{rule}/{stem}/{step}-{variant}.{ext}",
            "manifest": f"{rule}/{i}/manifest.json",
            "sheet": f"{rule}/{i}/sheet.png",
            "units": [
                {"id": "one", "name": "one", "model": f"m-{rule}", "input": "source",
                 "prompt": "p", "seeds": [1]}
            ],
        }
    )  # fmt: skip


def steps_of_heads(ledger: Ledger) -> int:
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    ledger._db.set_progress_handler(count, 10)
    try:
        ledger.due_heads(4)
    finally:
        ledger._db.set_progress_handler(None, 10)
    return steps[0]


def fill(ledger: Ledger, start: int, n: int) -> None:
    plans = [plan(i, rule=("a", "b", "c")[i % 3]) for i in range(start, start + n)]
    assert all(not isinstance(r, Exception) for r in ledger.submit_many(plans))


def test_due_heads_cost_does_not_grow_with_the_queue(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    fill(ledger, 0, 30)
    small = steps_of_heads(ledger)
    fill(ledger, 30, 3000)
    large = steps_of_heads(ledger)
    assert large <= 2 * small + 50, (small, large)


def test_due_heads_are_each_rules_first_due_jobs_in_queue_order(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    fill(ledger, 0, 30)
    first = ledger.claim("w")  # rule "a", plan 0
    assert first is not None
    # It fails and waits for its retry: not due, so not a head, until its time comes.
    ledger.fail(first.id, "boom", retryable=True)
    heads = ledger.due_heads(2)
    assert [(c.rule, c.profile) for c in heads] == [
        ("a", "m-a"),
        ("a", "m-a"),
        ("b", "m-b"),
        ("b", "m-b"),
        ("c", "m-c"),
        ("c", "m-c"),
    ]
    assert first.id not in {c.id for c in heads}
    # Once its retry is due it is a head again, behind the jobs that never failed.
    later = ledger.due_heads(100, now=ledger._clock() + 3600)
    assert [c.id for c in later if c.rule == "a"][-1] == first.id
