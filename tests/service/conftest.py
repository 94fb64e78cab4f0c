"""Fixtures for the service layer: a fake systemd notify socket and a scripted webhook
receiver. Everything binds to loopback or to unix sockets; nothing leaves the machine."""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import waiting


class NotifySocket:
    """What systemd listens on: a unix datagram socket. ``address`` is NOTIFY_SOCKET's value."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(2.0)

    def recv(self, timeout: float = 2.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines())

    def drain(self) -> list[dict[str, str]]:
        """Every message waiting now, without blocking."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096).decode()
                out.append(dict(line.split("=", 1) for line in data.splitlines()))
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="dr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, short_dir: Path) -> Iterator[NotifySocket]:
    address = (
        str(short_dir / "notify")
        if request.param == "path"
        else f"@darkroom-test-{uuid.uuid4().hex}"
    )
    sock = NotifySocket(address)
    yield sock
    sock.close()


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1. ``script`` holds the answers to give, in order
    (the last one repeats): ``(status, headers)`` or ``"hang"`` (block until released)."""

    url: str = ""
    script: list = field(default_factory=lambda: [(200, {})])
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    timeout: float = 5.0  # wait_for's default

    def wait_for(self, n: int, timeout: float | None = None) -> list[Received]:
        timeout = self.timeout if timeout is None else timeout

        def arrived() -> list[Received] | None:
            with self.lock:
                return list(self.received) if len(self.received) >= n else None

        got = waiting.eventually(arrived, timeout, interval=0.01)
        if not got:
            raise AssertionError(f"expected {n} requests, got {len(self.received)}")
        return got  # type: ignore[return-value]


@contextlib.contextmanager
def serve_receiver(timeout: float = 5.0) -> Iterator[Receiver]:
    """A :class:`Receiver` listening on 127.0.0.1 until the block ends."""
    state = Receiver(timeout=timeout)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                state.received.append(Received(time.monotonic(), dict(self.headers.items()), body))
                n = len(state.received)
                answer = state.script[min(n, len(state.script)) - 1]
            if answer == "hang":
                state.release.wait(30)
                answer = (200, {})
            status, headers = answer
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve_receiver() as state:
        yield state


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "darkroom.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
