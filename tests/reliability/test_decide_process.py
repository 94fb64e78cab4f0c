"""Issue 16: bursts are decided in a second process; kill -9 of the daemon loses nothing.

The real daemon as a subprocess. Folders of files are moved into the drop folder at once
(what `mv`, `rsync --remove-source-files` into a staging folder, or an unzip then rename
does), until one is decided in the second process; then the daemon is killed mid-burst.
The second process must not outlive it, and a plain restart plans every file exactly once.
"""

from __future__ import annotations

import io
import os
import signal

import pytest
from PIL import Image

from tests.conftest import STUB_RULE
from tests.reliability.conftest import LedgerView, pid_alive, wait_for

ROUND = 400  # files per folder moved in: a burst (the second process starts at 200 waiting)
LIMIT = 60  # s on a quiet machine (tests/waiting.py multiplies it for CI)
STARTED = "a second process decides this burst's arrivals"


def pngs(n: int, first: int) -> list[bytes]:
    base = Image.new("RGB", (8, 8), (1, 2, 3))
    out = []
    for i in range(first, first + n):
        base.putpixel((i % 8, (i // 8) % 8), (i % 256, (i // 256) % 256, 77))
        buffer = io.BytesIO()
        base.save(buffer, "PNG", compress_level=0)
        out.append(buffer.getvalue())
    return out


@pytest.mark.slow
def test_kill_9_while_the_second_process_decides_a_burst_loses_and_doubles_nothing(
    tmp_path, darkroom
):
    daemon = darkroom(STUB_RULE, quiet_period=0.3, rescan_interval=2, stop_timeout=2)
    daemon.start()
    ledger = LedgerView(tmp_path / "state")
    staging = tmp_path / "staging"  # same filesystem: the move is one rename
    staging.mkdir()
    total = 0

    def move_in(n: int) -> None:
        nonlocal total
        folder = staging / f"b{total}"
        folder.mkdir()
        for i, data in enumerate(pngs(n, total)):
            (folder / f"img{total + i:05d}.png").write_bytes(data)
        os.rename(folder, tmp_path / "drop" / folder.name)
        total += n

    def planned() -> int:
        return ledger.count("SELECT COUNT(*) FROM plans")

    def decided_elsewhere() -> int:
        """Moves folders in until one is decided in a second process; its pid. A machine
        fast enough to plan a whole folder before the process is ready gets another; it
        stays up once started."""
        for _ in range(20):
            move_in(ROUND)
            wait_for(lambda: daemon.events(STARTED) or planned() >= total, LIMIT, "a folder")
            if daemon.events(STARTED):
                pid: int = daemon.events(STARTED)[-1]["pid"]
                daemon.workers.append(pid)  # killed at teardown, should this test fail
                return pid
        raise AssertionError("no burst was ever decided in a second process")

    def kill_9() -> None:
        daemon.proc.send_signal(signal.SIGKILL)
        assert daemon.wait_exit(60) == -signal.SIGKILL

    # Idle: it waits for the next chunk, and sees its socket close.
    helper = decided_elsewhere()
    wait_for(lambda: planned() >= total, LIMIT, "the folders so far")
    kill_9()
    wait_for(lambda: not pid_alive(helper), LIMIT, "the idle second process to exit")

    # Mid-burst: its answer cannot be sent.
    daemon.start()
    helper = decided_elsewhere()
    before = planned()
    move_in(5 * ROUND)
    wait_for(lambda: planned() > before, LIMIT, "the next burst begun")
    kill_9()
    wait_for(lambda: not pid_alive(helper), LIMIT, "the busy second process to exit")

    daemon.start()
    wait_for(lambda: planned() >= total, LIMIT, f"{total} plans after the restart")
    assert planned() == total
    assert ledger.count("SELECT COUNT(DISTINCT key) FROM plans") == total
    assert ledger.count("SELECT COUNT(*) FROM seen") == total
    assert daemon.stop(60) == 0
    for event in daemon.events(STARTED):  # a clean stop takes it down too
        wait_for(lambda pid=event["pid"]: not pid_alive(pid), LIMIT, "its exit at stop")
