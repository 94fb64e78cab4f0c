import threading

from daemon.hooks import HookChain
from daemon.intake.settlement import Settlement, SettleThread
from daemon.sources.memory import MemorySource
from daemon.types import Arrival, PlanState
from tests.waiting import wait_for


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


class HangingSource(MemorySource):
    """A source whose acknowledgement hangs until released, as an SQS delete does on a dead
    endpoint."""

    def __init__(self) -> None:
        super().__init__("mem")
        self.release = threading.Event()

    def settle(self, arrival: Arrival, outcome: str) -> None:
        self.release.wait(120)
        super().settle(arrival, outcome)


def test_a_hanging_acknowledgement_does_not_hold_the_runner():
    """plan_finished is the runner's hook: with the daemon's settle thread it returns while
    the source's settle call hangs, and the arrivals settle in order once it answers."""
    source = HangingSource()
    settle_thread = SettleThread()
    states = {"p1": PlanState.ACTIVE, "p2": PlanState.ACTIVE}
    settlement = Settlement({"mem": source}, lambda pid: states[pid], run=settle_thread)
    settlement.track(arrival("a.jpg"), ["p1"])
    settlement.track(arrival("b.jpg"), ["p2"])
    settlement.plan_finished("p1", PlanState.DONE)  # returns: the call waits on its thread
    settlement.plan_finished("p2", PlanState.FAILED)
    assert source.settled == []
    assert not settle_thread.stop(timeout=0.1)  # still hanging: left behind, says so
    source.release.set()
    wait_for(lambda: len(source.settled) == 2, 60, "both arrivals settled")
    assert source.settled == [("a.jpg", "done"), ("b.jpg", "failed")]


def test_stopping_the_settle_thread_runs_what_is_queued_first():
    source = MemorySource("mem")
    settle_thread = SettleThread()
    settlement = Settlement({"mem": source}, lambda pid: PlanState.DONE, run=settle_thread)
    for key in ("a.jpg", "b.jpg", "c.jpg"):
        settlement.track(arrival(key), ["p1"])
    assert settle_thread.stop(timeout=60)
    assert [key for key, _ in source.settled] == ["a.jpg", "b.jpg", "c.jpg"]
