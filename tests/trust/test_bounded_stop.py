"""Issue 14, "Bounded stop": SIGTERM ends the daemon within ``worker.stop_timeout`` plus a
few seconds whatever its S3 sources are doing.

The daemon runs an S3 poll source and an S3 events source whose endpoint is a loopback proxy
in front of the moto server. Once both have worked through the proxy, the proxy stops
answering (connections stay open, requests are swallowed): the poll listing on the
scheduler and the SQS long poll are then stuck in network calls, as on a loaded machine
with a dead S3 endpoint. Before the fix the stuck listing held the interpreter's exit for
botocore's read timeout times its retries (minutes) and the receiver's join took 15 s.
"""

from __future__ import annotations

import io
import socket
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.e2e.conftest import Daemon, wait_for
from tests.s3.conftest import bucket, make_queue, moto_endpoint, notify, s3, sqs  # noqa: F401

pytestmark = pytest.mark.slow

STOP_TIMEOUT = 5
MARGIN = 10  # seconds: process start-up noise on a loaded 2-core machine, not a target


class HangingProxy:
    """A TCP proxy on 127.0.0.1 that forwards to ``upstream`` until :meth:`hang` is
    called; from then on it accepts and reads but never answers."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.hanging = threading.Event()
        self.closed = threading.Event()
        self.swallowed = 0  # requests (chunks) received and never answered
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def hang(self) -> None:
        self.hanging.set()

    def close(self) -> None:
        self.closed.set()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.hanging.is_set():
            self._swallow(client)
            return
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets.append(upstream)
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.hanging.is_set():
                    with self._lock:
                        self.swallowed += 1
                    self.closed.wait()
                    return
                dst.sendall(data)
        except OSError:
            pass

    def _swallow(self, client: socket.socket) -> None:
        try:
            while client.recv(65536):
                with self._lock:
                    self.swallowed += 1
                self.closed.wait()
                return
        except OSError:
            pass


def png(seed: int) -> bytes:
    image = Image.new("RGB", (32, 32), (seed * 40 % 256, 90, 200))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def rule(name: str) -> str:
    return textwrap.dedent(f"""\
        name: {name}
        match: {{source: {name}, include: ["**/*.png"]}}
        prompt: "{{stem}}"
        steps:
          - {{name: one, model: stub, variants: 1, seed: 1}}
        output: {{sink: out}}
        """)


@pytest.fixture
def proxy(moto_endpoint: str) -> Any:  # noqa: F811
    made = HangingProxy(moto_endpoint)
    yield made
    made.close()


def test_sigterm_ends_the_daemon_while_s3_hangs(
    tmp_path: Path,
    s3: Any,  # noqa: F811
    sqs: Any,  # noqa: F811
    bucket: str,  # noqa: F811
    proxy: HangingProxy,
    model_cache: Path,
) -> None:
    queue = make_queue(sqs, visibility=30)
    notify(s3, sqs, bucket, queue, prefix="ev/")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "polled.yaml").write_text(rule("polled"))
    (tmp_path / "rules" / "evented.yaml").write_text(rule("evented"))
    endpoint = f'endpoint_url: "{proxy.url}", region: us-east-1'
    config = tmp_path / "darkroom.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        state_dir: state
        rules_dir: rules
        model_cache: {model_cache}
        sources:
          polled: {{type: s3, mode: poll, bucket: {bucket}, prefix: poll, poll_interval: 1, {endpoint}}}
          evented: {{type: s3, mode: events, bucket: {bucket}, prefix: ev, queue_url: "{queue}", wait_time: 5, visibility_timeout: 30, {endpoint}}}
        sinks:
          out: {{type: folder, path: out}}
        worker: {{device: cpu, threads: 1, stop_timeout: {STOP_TIMEOUT}}}
        digest: {{enabled: false}}
        log: {{format: json}}
        """)
    )
    daemon = Daemon(tmp_path, config, tmp_path / "daemon.log")
    try:
        daemon.start()
        s3.put_object(Bucket=bucket, Key="poll/a.png", Body=png(1))
        s3.put_object(Bucket=bucket, Key="ev/b.png", Body=png(2))
        # Both sources work through the proxy before it goes dark.
        wait_for(
            lambda: len(list((tmp_path / "out").rglob("manifest.json"))) >= 2,
            120,
            "both objects processed through the proxy",
        )
        proxy.hang()
        # Wait until the S3 listing (every second) and the SQS receive are stuck on it.
        wait_for(lambda: proxy.swallowed >= 2, 60, "S3 and SQS calls stuck on the dead endpoint")
        started = time.monotonic()
        assert daemon.proc is not None
        daemon.proc.terminate()
        try:
            code = daemon.proc.wait(STOP_TIMEOUT + MARGIN)
        except Exception:
            raise AssertionError(
                f"the daemon was still running {STOP_TIMEOUT + MARGIN} s after SIGTERM "
                f"(stop_timeout {STOP_TIMEOUT} s):\n{daemon.text()[-3000:]}"
            ) from None
        took = time.monotonic() - started
        print(f"\nSIGTERM -> exit with S3 hanging: {took:.1f} s (stop_timeout {STOP_TIMEOUT} s)")
        assert code == 0, daemon.text()[-3000:]
        assert daemon.events("stopped"), "the daemon did not log that it stopped"
    finally:
        daemon.kill()


_LEFT_RUNNING = """\
import multiprocessing, os, sys, time

from daemon.cli.main import _exit_without_stragglers


def outlive(parent):
    while os.getppid() == parent:  # ends with its parent: nothing leaks from the test
        time.sleep(0.1)


if __name__ == "__main__":
    child = multiprocessing.get_context("spawn").Process(target=outlive, args=(os.getpid(),))
    child.start()  # not a daemon process: multiprocessing joins it at exit, for ever
    _exit_without_stragglers(sys.argv[1:])
    print("returned")
"""


@pytest.mark.parametrize("left_behind", [[], ["darkroom-runner"]])
def test_what_stop_left_running_does_not_keep_the_process_alive(
    tmp_path: Path, left_behind: list[str]
) -> None:
    """A child process still alive after stop (here one that would outlive any wait), or a
    thread of ours that did not stop in time: the process ends at once, saying what it left,
    instead of in the interpreter's exit handlers, which join children for as long as they
    run (the S3 test above saw this when the runner was stuck deleting an SQS message)."""
    import subprocess
    import sys

    script = tmp_path / "left_running.py"
    script.write_text(_LEFT_RUNNING)
    done = subprocess.run(
        [sys.executable, str(script), *left_behind],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "returned" not in done.stdout
    output = done.stdout + done.stderr
    assert "still running after stop" in output and "process" in output, output[-3000:]
    assert all(name in output for name in left_behind), output[-3000:]
