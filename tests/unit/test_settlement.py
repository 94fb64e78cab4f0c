from daemon.hooks import HookChain
from daemon.intake.settlement import Settlement
from daemon.sources.memory import MemorySource
from daemon.types import Arrival, PlanState


def setup(states):
    source = MemorySource("mem")
    return source, Settlement({"mem": source}, lambda pid: states[pid])


def arrival(key="a.jpg", etag="e1"):
    return Arrival("mem", key, f"memory://mem/{key}", 3, 1, etag)


def test_ignored_and_duplicates_settle_at_once():
    states = {"p1": PlanState.DONE}
    source, settlement = setup(states)
    settlement.track(arrival("none.jpg"), [])
    settlement.track(arrival("dup.jpg"), ["p1"])
    assert source.settled == [("none.jpg", "ignored"), ("dup.jpg", "duplicate")]


def test_settles_once_when_every_plan_of_the_arrival_ended():
    states = {"p1": PlanState.ACTIVE, "p2": PlanState.ACTIVE}
    source, settlement = setup(states)
    first, redelivered = arrival(), arrival()  # the same event delivered twice while running
    settlement.track(first, ["p1", "p2"])
    settlement.track(redelivered, ["p1", "p2"])
    settlement.plan_finished("p1", PlanState.DONE)
    assert source.settled == []
    settlement.plan_finished("p2", PlanState.FAILED)
    assert source.settled == [("a.jpg", "failed")]  # equal arrivals settle once; worst outcome wins
    assert settlement.pending() == 0


def test_settlement_hears_plan_ends_through_a_hook_chain():
    states = {"p1": PlanState.ACTIVE}
    source, settlement = setup(states)
    settlement.track(arrival(), ["p1"])
    HookChain([settlement]).plan_finished("p1", PlanState.PARTIAL)
    assert source.settled == [("a.jpg", "partial")]
    assert all(type(outcome) is str for _, outcome in source.settled)
