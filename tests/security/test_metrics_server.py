"""The metrics/health server is a quiet network surface (issue 15).

- It binds loopback unless ``metrics.allow_remote: true``: ``0.0.0.0`` without it is a config
  error naming the key and the fix (``darkroom check`` exits 1).
- An idle connection is closed after ``metrics.timeout`` seconds.
- Hundreds of idle connections hold no thread (never more than ``max_connections``) and
  /healthz is answered while they are open; the server closes every one of them.
- Beyond ``max_connections`` requests at once, a connection is answered 503 at once.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.config.settings import MetricsConfig
from daemon.errors import ConfigError
from daemon.service.metrics import Metrics, MetricsServer
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


def test_a_non_loopback_host_needs_allow_remote() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.5"):
        assert MetricsConfig(host=host).host == host
    for host in ("0.0.0.0", "::", "10.0.0.5", "metrics.example.com"):
        with pytest.raises(ValueError, match="allow_remote"):
            MetricsConfig(host=host)
        assert MetricsConfig(host=host, allow_remote=True).allow_remote


def test_check_rejects_0000_without_allow_remote_and_says_how_to_fix(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "drop").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        textwrap.dedent("""\
        name: r
        match: {source: drop}
        prompt: "{stem}"
        steps: [{name: explore, model: stub}]
        output: {sink: out}
        """)
    )
    config = tmp_path / "darkroom.yaml"
    body = textwrap.dedent("""\
        rules_dir: rules
        sources: {drop: {type: folder, path: drop}}
        sinks: {out: {type: folder, path: out}}
        metrics: {enabled: true, host: 0.0.0.0}
        """)
    config.write_text(body)

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "daemon.cli", "check", "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )

    refused = check()
    assert refused.returncode == 1
    said = refused.stdout + refused.stderr
    assert "metrics" in said and "0.0.0.0" in said and "allow_remote: true" in said
    assert "darkroom.yaml" in said  # where: the file (and line) of the offending key
    config.write_text(body.replace("host: 0.0.0.0", "host: 0.0.0.0, allow_remote: true"))
    allowed = check()
    assert "allow_remote" not in allowed.stdout + allowed.stderr, allowed.stdout


def test_the_config_loader_reports_it_as_a_config_error(tmp_path: Path) -> None:
    from daemon.config.settings import load_settings

    config = tmp_path / "darkroom.yaml"
    config.write_text("metrics:\n  host: 0.0.0.0\n")
    with pytest.raises(ConfigError, match=r"darkroom.yaml:2.*allow_remote"):
        load_settings(config)


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    served = MetricsServer("127.0.0.1", 0, Metrics(), timeout=1.0, max_connections=4)
    served.start()
    yield served
    served.stop()


def _connection_threads() -> int:
    """Threads serving a connection (socketserver names them after their target)."""
    return sum(1 for t in threading.enumerate() if "process_request_thread" in t.name)


def _healthz(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def test_an_idle_connection_is_closed_after_the_timeout(server: MetricsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as idle:
        # The server closes it (recv returns b""), long before the client would give up.
        assert idle.recv(1024) == b""


def test_hundreds_of_idle_connections_hold_at_most_the_cap_and_healthz_answers(
    server: MetricsServer,
) -> None:
    peak = 0
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampling.is_set():
            peak = max(peak, _connection_threads())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(300)]
    try:
        # While they are all open, a health probe is answered: idle connections hold no thread.
        wait_for(lambda: _healthz(server.url) == 200, 30, "/healthz to answer 200")
        # Every idle connection is closed by the server: evicted, or timed out.
        assert all(conn.recv(1024) == b"" for conn in idle)
        # And the server still answers afterwards.
        assert _healthz(server.url) == 200
    finally:
        sampling.set()
        sampler.join(5)
        for conn in idle:
            conn.close()
    assert peak <= 4, f"{peak} connection threads for a cap of 4"


def test_beyond_max_connections_busy_requests_are_answered_503_at_once(
    server: MetricsServer,
) -> None:
    # Four clients that started a request and stall hold the four serving threads...
    slow = []
    for _ in range(4):
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        conn.sendall(b"GET /healthz HTTP/1.1\r\n")
        slow.append(conn)
    try:
        wait_for(lambda: _connection_threads() >= 4, 30, "four serving threads")
        # ...so a fifth is told at once that the server is busy, instead of queueing.
        assert _healthz(server.url) == 503
        # The stalled ones time out; then requests are served again.
        wait_for(lambda: _healthz(server.url) == 200, 30, "/healthz to answer 200 again")
    finally:
        for conn in slow:
            conn.close()
