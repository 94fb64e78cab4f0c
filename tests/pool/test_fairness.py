"""Fairness between rules: a rule with a long backlog never blocks one with a single file;
weights share the devices in proportion."""

from __future__ import annotations

from daemon.queue.dispatch import FairShare
from daemon.queue.rows import Candidate
from daemon.types import JobState
from tests.pool.conftest import png, rule


def head(rule_name, profile="p"):
    return Candidate(f"{rule_name}-1", rule_name, "one", 0, profile)


def test_a_small_rule_is_served_right_after_the_current_batch(harness):
    h = harness([rule("big", prompt="{stem}"), rule("small", prompt="{stem}")], max_batch=1)
    for i in range(40):
        h.put(f"big/{i}.png", png((i, 0, 0)))
    h.put("small/only.png")
    order = []
    while h.runner.step():
        order += [j.rule for j in h.ledger.jobs(state=JobState.DONE, limit=1)]
    assert len(order) == 41
    assert order.index("small") <= 1, order[:5]


def test_weights_share_the_devices_in_proportion():
    fair = FairShare({"gold": 2.0}, slack=0)
    picks = []
    for _ in range(30):
        rule_name = fair.pick({"gold": head("gold"), "tin": head("tin")}, lambda p: True)
        fair.charge(rule_name, 1)
        picks.append(rule_name)
    assert picks.count("gold") == 20 and picks.count("tin") == 10


def test_an_idle_rule_does_not_save_up_credit():
    fair = FairShare(slack=0)
    for _ in range(100):
        fair.charge(fair.pick({"busy": head("busy")}, lambda p: True), 1)
    picks = []
    for _ in range(10):
        r = fair.pick({"busy": head("busy"), "late": head("late")}, lambda p: True)
        fair.charge(r, 1)
        picks.append(r)
    assert picks.count("late") == 5  # alternates; not 10 in a row to "catch up"


def test_affinity_prefers_a_loaded_model_only_within_the_slack():
    fair = FairShare(slack=4)
    loaded = lambda p: p == "x"  # noqa: E731
    picks = []
    for _ in range(20):
        r = fair.pick({"rx": head("rx", "x"), "ry": head("ry", "y")}, loaded)
        fair.charge(r, 1)
        picks.append(r)
    # Bursts on the loaded model, but the other rule is never more than the slack behind.
    assert picks[:5] == ["rx"] * 5
    assert picks.count("ry") >= 7
