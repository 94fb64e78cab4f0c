"""sd_notify against a socket we bind ourselves (a path and the abstract '@' form)."""

from __future__ import annotations

import os
import time

from daemon.service.notify import Heartbeats, Notifier, Watchdog
from tests.waiting import wait_for


def test_without_systemd_every_call_is_a_no_op():
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    for call in (notifier.ready, notifier.watchdog, notifier.stopping, notifier.reloading):
        assert call() is False
    assert notifier.status("x") is False
    assert notifier.extend_timeout(10) is False
    assert notifier.errno(5) is False
    watchdog = Watchdog(notifier, notifier.watchdog_interval, lambda: True)
    watchdog.start()
    assert not watchdog.active
    watchdog.stop()


def _send_and_read(notify_socket, call):
    assert call() is True
    return notify_socket.recv()


def test_protocol(notify_socket):
    n = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.address})
    assert _send_and_read(notify_socket, n.ready) == {"READY": "1"}
    assert _send_and_read(notify_socket, lambda: n.ready("3 queued")) == {
        "READY": "1",
        "STATUS": "3 queued",
    }
    assert _send_and_read(notify_socket, lambda: n.status("two\nlines")) == {"STATUS": "two lines"}
    assert _send_and_read(notify_socket, n.watchdog) == {"WATCHDOG": "1"}
    assert _send_and_read(notify_socket, n.stopping) == {"STOPPING": "1"}
    assert _send_and_read(notify_socket, lambda: n.extend_timeout(1.5)) == {
        "EXTEND_TIMEOUT_USEC": "1500000"
    }
    assert _send_and_read(notify_socket, lambda: n.errno(5)) == {"ERRNO": "5"}
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    message = _send_and_read(notify_socket, n.reloading)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= after
    n.close()


def test_watchdog_env():
    pid = str(os.getpid())
    assert (
        Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "200000"}).watchdog_interval
        == 0.2
    )
    assert (
        Notifier.from_env(
            {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "200000", "WATCHDOG_PID": pid}
        ).watchdog_interval
        == 0.2
    )
    # Meant for another process (we are a child that inherited the environment).
    assert (
        Notifier.from_env(
            {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
        ).watchdog_interval
        is None
    )
    assert (
        Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "nope"}).watchdog_interval
        is None
    )
    assert not Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_unset_removes_the_variables(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/x")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    notifier = Notifier.from_env(unset=True)
    assert notifier.enabled and notifier.watchdog_interval == 1.0
    assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ


def test_a_missing_socket_never_raises(short_dir):
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(short_dir / "gone")})
    assert notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False  # the second failure is quiet, and still no exception


def test_watchdog_pings_only_while_healthy(notify_socket):
    notifier = Notifier.from_env(
        {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "200000"}
    )
    healthy = [True]
    unhealthy_ticks = [0]  # health checks that said no: each one is a tick that sent nothing

    def is_healthy() -> bool:
        if not healthy[0]:
            unhealthy_ticks[0] += 1
        return healthy[0]

    def pings(n: int) -> list[dict[str, str]]:
        got: list[dict[str, str]] = []
        wait_for(lambda: got.extend(notify_socket.drain()) or len(got) >= n, 10, f"{n} pings")
        return got

    watchdog = Watchdog(notifier, notifier.watchdog_interval, is_healthy)
    watchdog.start()
    try:
        assert watchdog.active
        assert all(p == {"WATCHDOG": "1"} for p in pings(4))  # a ping every 0.1 s

        healthy[0] = False
        # The first tick that saw it unhealthy began after every earlier tick had pinged.
        wait_for(lambda: unhealthy_ticks[0] >= 1, 10, "a tick to see it unhealthy")
        notify_socket.drain()
        wait_for(lambda: unhealthy_ticks[0] >= 4, 10, "three more unhealthy ticks")
        assert notify_socket.drain() == []

        healthy[0] = True
        assert len(pings(3)) >= 3
    finally:
        watchdog.stop()
    assert not watchdog.active
    # stop() joined the thread (not active): nothing is left that could ping.
    notify_socket.drain()
    assert notify_socket.drain() == []


def test_watchdog_counts_an_exception_or_a_false_tuple_as_unhealthy(notify_socket):
    notifier = Notifier.from_env(
        {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "200000"}
    )

    def broken() -> bool:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    assert Watchdog(notifier, 0.2, broken).tick() is False
    assert Watchdog(notifier, 0.2, lambda: (False, {"worker": "stale"})).tick() is False
    assert Watchdog(notifier, 0.2, lambda: (True, {})).tick() is True
    assert notify_socket.drain() == [{"WATCHDOG": "1"}]


def test_heartbeats():
    now = [100.0]
    beats = Heartbeats(clock=lambda: now[0])
    assert beats.check() == (True, {})
    beats.expect("loop", 5)
    beats.expect("worker", 60)
    now[0] += 4
    ok, details = beats.check()
    assert ok and details["loop"] == {"age": 4.0, "max_age": 5, "ok": True}
    now[0] += 2  # the loop is stale; the worker is not
    ok, details = beats.check()
    assert not ok and not details["loop"]["ok"] and details["worker"]["ok"]
    beats.beat("loop")
    assert beats.healthy()
    assert beats.age("loop") == 0.0 and beats.age("nothing") is None
    now[0] += 61
    beats.beat("loop")
    assert beats.check()[1]["worker"]["ok"] is False
    beats.forget("worker")
    assert beats.healthy()
