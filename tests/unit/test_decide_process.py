"""Issue 16: a burst is decided in a second process, with the same outcome as in the main one.

The second process (``daemon.intake.decide_child``) is real here: started with the same
command the daemon uses, fed by the intake thread over its socket. What it cannot do alone
(a write: an oversized input's quarantine) comes back and is done once, in the main process;
if it is killed, nothing it held is lost.
"""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import textwrap
import threading
from pathlib import Path

import pytest
from PIL import Image
from structlog.testing import capture_logs

from daemon.config.settings import LimitsConfig
from daemon.intake import decide_process
from daemon.intake.decide_process import (
    RESTART_AFTER_S,
    STALE_KEPT,
    ChildSetup,
    DecideProcess,
)
from daemon.intake.intake import Intake
from daemon.queue.ledger import Ledger
from daemon.rules.load import load_rules
from daemon.rules.match import RuleSet
from daemon.sources.folder import FolderSource
from daemon.sources.memory import MemorySource
from daemon.types import Arrival
from tests.waiting import wait_for

RULE = """\
name: r
match: {{sources: [drop, mem], include: ["*.png"]}}
prompt: "{{stem}}"
steps: [{{name: one, model: stub, seeds: [1, 2]}}]
output: {{sink: out}}
{extra}"""

READY_LIMIT = 40  # s to start a Python process (tests/waiting.py multiplies it for CI)


def png(i: int) -> bytes:
    image = Image.new("RGB", (16, 16), (i % 256, (i // 256) % 256, 7))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def rules_in(folder: Path, extra: str = "") -> RuleSet:
    folder.mkdir(exist_ok=True)
    (folder / "r.yaml").write_text(textwrap.dedent(RULE.format(extra=extra)))
    return load_rules(folder)


def drop(root: Path, key: str, data: bytes) -> Arrival:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    stat = path.stat()
    return Arrival("drop", key, str(path), stat.st_size, stat.st_mtime_ns)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ready(helper: DecideProcess) -> DecideProcess:
    """``helper``, started and ready (the intake thread would start it with a burst)."""
    wait_for(lambda: helper.usable(backlog=10**9), READY_LIMIT, "the second process ready")
    return helper


class HeldRules:
    """The rules callable intake reads once per arrival, closable: while closed, the intake
    thread waits in it, and the test can queue a backlog behind that arrival."""

    def __init__(self, rules: RuleSet):
        self.rules = rules
        self.open = threading.Event()
        self.open.set()

    def __call__(self) -> RuleSet:
        self.open.wait()
        return self.rules


class Setup:
    def __init__(
        self,
        tmp_path: Path,
        *,
        helper: bool,
        limits: LimitsConfig | None = None,
        memory: MemorySource | None = None,
        elsewhere_backlog: int = 1,
        listing_max_age: float = 1.0,
    ):
        self.root = tmp_path / "drop"
        self.root.mkdir(exist_ok=True)
        self.rules_dir = tmp_path / "rules"
        self.held = HeldRules(rules_in(self.rules_dir))
        self.source = FolderSource("drop", self.root)
        self.memory = memory or MemorySource("mem")  # no reader elsewhere: decided here
        self.ledger = Ledger(tmp_path / f"ledger-{helper}.sqlite")
        self.clock = Clock()
        self.helper = (
            DecideProcess(
                ChildSetup(
                    {"drop": self.source.reader_factory()},
                    self.rules_dir,
                    limits=limits,
                    listing_max_age=listing_max_age,
                ),
                elsewhere_backlog=elsewhere_backlog,
                clock=self.clock,
            )
            if helper
            else None
        )
        self.intake = Intake(
            self.ledger,
            self.held,
            {"drop": self.source, "mem": self.memory},
            lambda: None,
            rules_dir=self.rules_dir,
            limits=limits,
            decide_process=self.helper,
        )

    def close(self) -> None:
        self.held.open.set()
        self.intake.stop(timeout=120)
        if self.helper is not None:
            self.helper.close()

    def planned(self, n: int) -> None:
        wait_for(lambda: self.count("plans") >= n, 60, f"{n} plans")
        assert self.count("plans") == n

    def count(self, table: str) -> int:
        [(n,)] = self.table(f"SELECT COUNT(*) FROM {table}")
        return int(n)  # type: ignore[call-overload]

    def table(self, sql: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.ledger.path) as db:
            return db.execute(sql).fetchall()


@pytest.fixture
def setups(tmp_path):
    made: list[Setup] = []

    def make(**kwargs: object) -> Setup:
        made.append(Setup(tmp_path, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for setup in made:
        setup.close()


def burst(setup: Setup, n: int, first: int = 0) -> list[Arrival]:
    """``n`` arrivals: PNGs over four folders, some with a sidecar prompt, a PDF, and one
    from the memory source."""
    arrivals = []
    for i in range(first, first + n):
        key = f"d{i % 4}/img{i:04d}.png"
        if i % 10 == 0:
            (setup.root / f"d{i % 4}").mkdir(exist_ok=True)
            (setup.root / f"d{i % 4}/img{i:04d}.txt").write_text(f"sidecar prompt {i}")
        arrivals.append(drop(setup.root, key, png(i)))
    arrivals.append(drop(setup.root, f"notes{first}.pdf", b"%PDF-1.4"))
    arrivals.append(setup.memory.put(f"mem{first}.png", png(first + 99_999)))
    return arrivals


def test_a_burst_decided_in_the_second_process_plans_exactly_what_the_main_process_would(
    tmp_path, setups
):
    here = setups(helper=False)
    elsewhere = setups(helper=True, memory=here.memory)
    arrivals = burst(here, 400)  # the same files for both: one drop folder
    odd = {  # names and bytes users drop
        "odd/cafe\u0301 NFD.png": png(7001),
        "odd/with  spaces & (1).png": png(7002),
        "odd/new\nline.png": png(7003),
        "odd/latin1-\udce9t\udce9.png": png(7004),  # not UTF-8: recorded by the main process
        "odd/truncated.png": png(7005)[:40],
        "odd/empty.png": b"",
        "odd/not-a-png.png": b"GIF89a" + bytes(64),
    }
    arrivals += [drop(here.root, key, data) for key, data in odd.items()]
    ready(elsewhere.helper)
    for setup in (here, elsewhere):
        for arrival in arrivals:
            setup.intake.emit(arrival)
        with capture_logs() as logs:
            setup.intake.start()
            setup.intake.stop(timeout=120)
        setup.logs = [(e["event"], e.get("key")) for e in logs]  # type: ignore[attr-defined]
    assert elsewhere.helper is not None and elsewhere.helper.decided >= 400
    query = "SELECT key, id FROM plans ORDER BY key"
    assert len(here.table(query)) >= 401  # the PNGs and the memory source's, and the odd
    assert elsewhere.table(query) == here.table(query)  # same plans, same identities
    seen = "SELECT key, sha256, outcome FROM seen ORDER BY key"
    assert elsewhere.table(seen) == here.table(seen)
    odd_seen = {k: o for k, _, o in here.table(seen) if str(k).startswith("odd/")}
    assert len(odd_seen) == len(odd), odd_seen  # each has its record
    assert "not valid UTF-8" in odd_seen["odd/latin1-\\xe9t\\xe9.png"]
    jobs = "SELECT COUNT(*) FROM jobs"
    assert elsewhere.table(jobs) == here.table(jobs)
    prompts = "SELECT plan FROM plans WHERE key = 'd2/img0010.png'"
    assert "sidecar prompt 10" in str(elsewhere.table(prompts))
    # The log lines made there are logged here, as if made here.
    assert ("no rule matches; ignored (darkroom match explains why)", "notes0.pdf") in (
        elsewhere.logs  # type: ignore[attr-defined]
    )
    assert sorted(elsewhere.logs) == sorted(here.logs)  # type: ignore[attr-defined]


def test_an_input_that_needs_a_write_is_decided_once_in_the_main_process(tmp_path, setups):
    limits = LimitsConfig(max_input_bytes=2000)
    setup = setups(helper=True, limits=limits)
    arrivals = burst(setup, 40)
    big = drop(setup.root, "big.png", png(1) + b"\0" * 5000)  # a PNG with trailing bytes
    ready(setup.helper)
    for arrival in [*arrivals[:20], big, *arrivals[20:]]:
        setup.intake.emit(arrival)
    with capture_logs() as logs:
        setup.intake.start()
        setup.intake.stop(timeout=120)
    over = [e for e in logs if e["event"] == "input over the size limit; quarantined unread"]
    assert len(over) == 1 and over[0]["key"] == "big.png"
    assert setup.table("SELECT key FROM quarantine") == [("big.png",)]
    assert not (setup.root / "big.png").exists()  # moved aside once, with its reason
    assert setup.helper is not None and setup.helper.decided >= 40
    assert setup.table("SELECT COUNT(*) FROM plans") == [(41,)]


def test_a_second_process_killed_mid_burst_loses_no_arrival_and_another_starts_later(
    tmp_path, setups
):
    setup = setups(helper=True)
    helper = ready(setup.helper)
    first_pid = helper.pid
    assert first_pid is not None
    setup.intake.start()
    for arrival in burst(setup, 300):
        setup.intake.emit(arrival)
    wait_for(lambda: helper.decided > 0, READY_LIMIT, "a chunk decided there")
    with capture_logs() as logs:
        os.kill(first_pid, signal.SIGKILL)
        for arrival in burst(setup, 300, first=300):
            setup.intake.emit(arrival)
        wait_for(
            lambda: setup.table("SELECT COUNT(*) FROM plans") == [(602,)],
            READY_LIMIT,
            "every arrival planned",
        )
    gone = [e for e in logs if e["event"].startswith("the second intake process is gone")]
    assert len(gone) == 1 and gone[0]["pid"] == first_pid
    assert setup.table("SELECT COUNT(DISTINCT key) FROM plans") == [(602,)]
    assert setup.table("SELECT COUNT(*) FROM seen") == [(604,)]  # with the two PDFs
    # Not at once (a process that dies at start must not be started in a loop), but with
    # a burst after RESTART_AFTER_S.
    assert helper.pid is None and not helper.usable(backlog=10**9)
    setup.clock.now += RESTART_AFTER_S
    assert not helper.usable(backlog=10**9)  # started: ready once it says so
    assert helper.pid is not None and helper.pid != first_pid
    ready(helper)


def test_a_rules_reload_reaches_the_second_process(tmp_path, setups):
    setup = setups(helper=True)
    helper = ready(setup.helper)
    for arrival in burst(setup, 20):
        setup.intake.emit(arrival)
    setup.intake.start()
    wait_for(lambda: setup.table("SELECT COUNT(*) FROM plans") == [(21,)], 60, "the burst")
    setup.held.rules = rules_in(setup.rules_dir, extra="priority: 5\nnegative_prompt: blurry\n")
    decided = helper.decided
    for arrival in burst(setup, 20, first=20):
        setup.intake.emit(arrival)
    wait_for(lambda: setup.table("SELECT COUNT(*) FROM plans") == [(42,)], 60, "the next one")
    assert helper.decided >= decided + 20
    rows = setup.table("SELECT key, plan FROM plans WHERE key LIKE 'd%' ORDER BY key")
    assert len(rows) == 40
    assert all(("blurry" in str(plan)) == (int(key[-8:-4]) >= 20) for key, plan in rows)


def test_one_core_never_starts_a_second_process(tmp_path, setups, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    setup = setups(helper=True)
    assert not setup.helper.usable(backlog=10**9)
    assert setup.helper.pid is None


def test_files_that_trickle_in_are_decided_here_and_a_backlog_there(tmp_path, setups):
    setup = setups(helper=True, elsewhere_backlog=16)  # the daemon's threshold
    helper = ready(setup.helper)
    setup.intake.start()
    for i in range(5):  # one at a time: a round trip each would cost more than it spares
        setup.intake.emit(drop(setup.root, f"one{i}.png", png(i)))
        setup.planned(i + 1)
    assert helper.decided == 0
    setup.held.open.clear()  # the next arrival waits in the intake thread...
    arrivals = burst(setup, 100, first=100)
    for arrival in arrivals:  # ...while a backlog forms behind it
        setup.intake.emit(arrival)
    setup.held.open.set()
    setup.planned(5 + 101)
    assert helper.decided >= 16


@pytest.mark.parametrize("kept", [STALE_KEPT, 0], ids=["named", "all"])
def test_a_sidecar_decided_here_drops_the_folder_listing_there(tmp_path, setups, monkeypatch, kept):
    """kept=0: more sidecars were decided here than are remembered; the child drops all."""
    monkeypatch.setattr(decide_process, "STALE_KEPT", kept)
    # A listing that would serve for an hour: only the notice can make the child list again.
    setup = setups(helper=True, elsewhere_backlog=2, listing_max_age=3600)
    helper = ready(setup.helper)
    setup.intake.start()

    def backlog(arrivals: list[Arrival]) -> None:
        setup.held.open.clear()  # the first waits in the intake thread, the rest queue
        setup.intake.emit(drop(setup.root, f"other/first{len(arrivals)}.png", png(1000)))
        for arrival in arrivals:
            setup.intake.emit(arrival)
        setup.held.open.set()

    backlog([drop(setup.root, f"d/img{i}.png", png(i)) for i in range(10)])  # lists d/ there
    setup.planned(11)
    decided = helper.decided
    assert decided >= 9
    (setup.root / "d/late.txt").write_text("the late sidecar's prompt")
    setup.intake.emit(drop(setup.root, "d/late.txt", b"the late sidecar's prompt"))
    wait_for(lambda: setup.count("seen") == 12, 60, "the sidecar decided here")
    assert helper.decided == decided
    backlog([drop(setup.root, "d/late.png", png(99)), drop(setup.root, "d/img99.png", png(98))])
    setup.planned(14)
    assert helper.decided >= decided + 2
    [(plan,)] = setup.table("SELECT plan FROM plans WHERE key = 'd/late.png'")
    assert "the late sidecar's prompt" in str(plan)
