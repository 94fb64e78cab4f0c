"""The real daemon process as systemd, Prometheus and a webhook receiver see it."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import threading
import time
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from daemon.service.webhooks import verify
from tests.conftest import make_image
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.slow

RULE = """\
name: r
match: {source: drop}
prompt: "{stem}"
steps: [{name: one, model: stub, seeds: [1], params: {stub_sleep: SLEEP}}]
output: {sink: out}
"""
UNHEALTHY = "unhealthy; watchdog pings paused, systemd restarts the service if this lasts"


class NotifySocket:
    """What systemd would receive on $NOTIFY_SOCKET, each line with its arrival time on the
    wall clock (comparable with the daemon's log timestamps)."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            select.select([self.sock], [], [], 0.2)
            self.sync()

    def sync(self) -> int:
        """Record every datagram waiting now; returns how many lines are recorded. Whatever
        was sent before this call is recorded when it returns, in the order it was sent."""
        with self._lock:
            while True:
                try:
                    data = self.sock.recv(4096)
                except BlockingIOError:
                    return len(self.messages)
                at = time.time()
                for line in data.decode().splitlines():
                    self.messages.append((at, line))

    def lines(self, prefix: str, start: int = 0) -> list[tuple[float, str]]:
        """Recorded lines starting with ``prefix``, from the ``start``-th line on."""
        with self._lock:
            return [(t, m) for t, m in self.messages[start:] if m.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_notify_ready_status_watchdog_reload_stopping(daemon_factory, tmp_path, monkeypatch):
    notify = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    daemon = daemon_factory(
        RULE.replace("SLEEP", "5"),
        extra="""\
        metrics: {enabled: false}
        """,
    )
    config = daemon.config
    config.write_text(
        config.read_text().replace(
            "stop_timeout: 20}", "stop_timeout: 20, health_timeout: 1.5, ping_interval: 0.5}"
        )
    )
    try:
        daemon.start()
        wait_for(lambda: notify.lines("READY=1"), 30, "READY=1")
        assert notify.lines("STATUS=")
        t0 = time.time()
        wait_for(
            lambda: len([t for t, _ in notify.lines("WATCHDOG=1") if t > t0]) >= 4,
            10,
            "WATCHDOG=1 pings while healthy (one every ~0.2 s)",
        )

        # A wedged worker (here: a 5 s job with a 1.5 s health timeout) stops the pings.
        make_image(tmp_path / "drop" / "slow.png")
        wait_for(lambda: daemon.events(UNHEALTHY), 20, "the wedged worker to make it unhealthy")
        wedged_from = notify.sync()  # every ping sent before it said so is recorded by now
        wait_for(lambda: daemon.events("job done"), 20, "the job to finish")
        (healthy_again, *_) = wait_for(
            lambda: daemon.events("healthy again; watchdog pings resume"), 20, "health back"
        )
        # Pings sent once health is back arrive after the line saying so was stamped.
        resumed = datetime.fromisoformat(healthy_again["timestamp"]).timestamp()
        wedged = [t for t, _ in notify.lines("WATCHDOG=1", wedged_from) if t < resumed]
        assert not wedged, "WATCHDOG=1 sent while the worker was wedged"
        t2 = time.time()
        wait_for(
            lambda: [t for t, _ in notify.lines("WATCHDOG=1") if t > t2], 5, "WATCHDOG=1 to resume"
        )

        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: notify.lines("RELOADING=1"), 10, "RELOADING=1")
        wait_for(lambda: len(notify.lines("READY=1")) >= 2, 10, "READY=1 after the reload")
        assert any("MONOTONIC_USEC=" in m for _, m in notify.messages)
        assert daemon.stop() == 0
        assert notify.lines("STOPPING=1")
    finally:
        notify.close()


def running_rule(sleep: str, marker: Path) -> str:
    """RULE whose stub model creates ``marker`` when its call begins: "the job runs on the
    model" as a fact to wait for, not a guess from log timing (a job is logged as started
    when its preparation begins, before it reaches a worker)."""
    return RULE.replace("SLEEP", sleep).replace("}}]", f", stub_running: '{marker}'}}}}]")


def test_sigterm_lets_the_running_job_finish(daemon_factory, tmp_path):
    marker = tmp_path / "running"
    daemon = daemon_factory(running_rule("2", marker))
    daemon.start()
    make_image(tmp_path / "drop" / "a.png")
    wait_for(marker.exists, 60, "the job to run on the model")
    assert daemon.stop() == 0  # within stop() 's own generous limit
    assert (
        daemon.events("job done") and (tmp_path / "out" / "r" / "a.png" / "manifest.json").exists()
    )


def test_sigterm_past_the_deadline_queues_the_job_again(daemon_factory, tmp_path):
    marker = tmp_path / "running"
    daemon = daemon_factory(running_rule("30", marker))
    config = daemon.config
    config.write_text(config.read_text().replace("stop_timeout: 20", "stop_timeout: 1"))
    daemon.start()
    make_image(tmp_path / "drop" / "a.png")
    wait_for(marker.exists, 60, "the job to run on the model")
    # A 30 s job and a 1 s stop_timeout: stop() (60 s limit) returning at all shows the
    # deadline held; the job is put back, not finished.
    assert daemon.stop() == 0
    assert daemon.events("job put back for the next start")
    assert not (tmp_path / "out" / "r" / "a.png" / "manifest.json").exists()
    (tmp_path / "rules" / "rule.yaml").write_text(
        RULE.replace("SLEEP", "0")
    )  # the same job, quick now
    # The edited rule is a new digest: the queued job of the old version still runs on start.
    daemon.start()
    wait_for(lambda: daemon.events("job done"), 60, "the requeued job to run after the restart")
    daemon.stop()


def test_sighup_reloads_a_valid_config_and_keeps_running_on_an_invalid_one(
    daemon_factory, tmp_path
):
    daemon = daemon_factory(RULE.replace("SLEEP", "0"))
    daemon.start()
    rules2 = tmp_path / "rules2"
    rules2.mkdir()
    (rules2 / "r.yaml").write_text(
        RULE.replace("SLEEP", "0").replace('prompt: "{stem}"', 'prompt: "second {stem}"')
    )
    config = daemon.config
    original = config.read_text()
    config.write_text(original.replace("rules_dir: rules", "rules_dir: rules2"))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.events("config and rules reloaded"), 15, "the reload")
    make_image(tmp_path / "drop" / "b.png")
    manifest = tmp_path / "out" / "r" / "b.png" / "manifest.json"
    wait_for(manifest.exists, 20, "b's manifest")
    assert json.loads(manifest.read_text())["rule"]["prompt"] == "second b"

    config.write_text(original.replace("rules_dir: rules", "rules_dir: rules2\nnot_a_key: 1"))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: daemon.events("reload refused; the running config and rules stay"),
        15,
        "the refusal",
    )
    refused = daemon.events("reload refused; the running config and rules stay")[0]["problem"]
    assert "not_a_key" in refused and "darkroom.yaml:" in refused
    make_image(tmp_path / "drop" / "c.png", color=(9, 9, 9))
    wait_for(
        (tmp_path / "out" / "r" / "c.png" / "manifest.json").exists,
        20,
        "c's manifest under the old config",
    )
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0


def test_metrics_health_and_a_signed_webhook(daemon_factory, tmp_path):
    received: list[tuple[dict, bytes]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(500 if len(received) == 1 else 200)  # the first delivery fails
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    daemon = daemon_factory(
        RULE.replace("SLEEP", "0"),
        extra=f"""\
        metrics: {{enabled: true, port: 0}}
        webhooks: {{urls: ["http://127.0.0.1:{server.server_port}/hook"], backoff: 0.2}}
        """,
    )
    os.environ["DARKROOM_WEBHOOKS__SECRET"] = "s3cret"
    try:
        daemon.start()
    finally:
        del os.environ["DARKROOM_WEBHOOKS__SECRET"]
    try:
        url = daemon.events("metrics listening")[0]["url"]
        assert urllib.request.urlopen(url + "/readyz").status == 200
        health = json.loads(urllib.request.urlopen(url + "/healthz").read())
        assert health
        make_image(tmp_path / "drop" / "a.png")
        wait_for(lambda: len(received) >= 2, 30, "the webhook to be retried and delivered")
        headers, body = received[-1]
        assert verify("s3cret", dict(headers), body)  # Standard Webhooks headers
        event = json.loads(body)
        assert event["type"] == "source.done" and event["rule"] == "r" and event["status"] == "done"
        metrics = urllib.request.urlopen(url + "/metrics").read().decode()
        assert 'darkroom_jobs_finished_total{rule="r",state="done"} 1.0' in metrics
        assert 'darkroom_jobs{rule="r",state="done"} 1.0' in metrics
        assert "darkroom_step_seconds_count" in metrics
        assert daemon.stop() == 0
    finally:
        server.shutdown()
