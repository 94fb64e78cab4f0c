"""The HTTP server of /metrics, /healthz and /readyz: small, bounded, loopback by default.

    server = MetricsServer("127.0.0.1", 9464, metrics, health=beats.check, ready=readiness.check,
                           timeout=5, max_connections=16)
    server.start()
    server.stop()

A small attack surface on purpose: the host is loopback unless ``metrics.allow_remote`` is
set (checked with the config), every connection has a read timeout (an idle or slow client
is closed), a connection holds a thread only while it sends a request, and at most
``max_connections`` are served at once — one beyond that is answered 503 and closed at once.
Idle connections wait in a selector, without a thread (see ``_Server``).
"""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from daemon import __version__

if TYPE_CHECKING:
    from daemon.service.metrics import Metrics

log = structlog.get_logger("darkroom.metrics")

__all__ = ["Check", "MetricsServer"]

Check = Callable[[], tuple[bool, Mapping[str, Any]]]


# A connection beyond max_connections gets this and is closed, without a thread.
_BUSY_BODY = b"too many connections; retry in a second\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
) % (len(_BUSY_BODY), _BUSY_BODY)


class _Server(ThreadingHTTPServer):
    """Connections wait without a thread until they send something; at most
    ``max_connections`` are served (a thread each) at once.

    An accepted connection is *parked* in a selector. When it becomes readable it gets a
    serving thread, or a 503 when every one is busy. Parked connections that stay silent for
    ``timeout`` seconds are closed, and when ``max_parked`` are waiting the oldest makes room
    for the newest, so a flood of idle connections costs file descriptors for a few seconds,
    never threads, and a health probe that arrives meanwhile is still answered at once.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    max_connections = 16  # set per server in MetricsServer.start
    timeout_s = 5.0
    max_parked = 256

    def server_activate(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._parked: dict[socket.socket, float] = {}  # in arrival order: oldest first
        self._parked_lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._closing = threading.Event()
        super().server_activate()
        self._waiter = threading.Thread(
            target=self._wait_for_requests, name="darkroom-metrics-parked", daemon=True
        )
        self._waiter.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        """On the accepting thread: park the connection until it speaks."""
        with self._parked_lock:
            if len(self._parked) >= self.max_parked:
                self._unpark(next(iter(self._parked)), close=True)
            self._parked[request] = time.monotonic()
            self._selector.register(request, selectors.EVENT_READ, client_address)

    def _unpark(self, request: socket.socket, *, close: bool) -> None:
        """With ``_parked_lock`` held."""
        self._parked.pop(request, None)
        try:
            self._selector.unregister(request)
        except (KeyError, ValueError):
            pass
        if close:
            self.shutdown_request(request)

    def _wait_for_requests(self) -> None:
        while not self._closing.is_set():
            try:
                ready = self._selector.select(timeout=0.1)
            except (OSError, ValueError):  # closed under us at shutdown, or nothing registered
                if self._closing.wait(0.1):
                    return
                continue
            for key, _ in ready:
                request = key.fileobj
                with self._parked_lock:
                    if request not in self._parked:
                        continue
                    self._unpark(request, close=False)
                self._serve(request, key.data)
            cutoff = time.monotonic() - self.timeout_s
            with self._parked_lock:
                for request in [r for r, at in self._parked.items() if at < cutoff]:
                    self._unpark(request, close=True)

    def _serve(self, request: socket.socket, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)  # a thread of its own
        except BaseException:
            self._slots.release()
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        try:
            request.setblocking(False)  # never wait on a client that does not read
            request.send(_BUSY)
        except OSError:
            pass
        log.debug("metrics connection refused: every slot is busy", slots=self.max_connections)
        self.shutdown_request(request)

    def server_close(self) -> None:
        self._closing.set()
        self._waiter.join(5)
        with self._parked_lock:
            for request in list(self._parked):
                self._unpark(request, close=True)
        self._selector.close()
        super().server_close()


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """/metrics, /healthz and /readyz on ``host:port`` in a daemon thread.

    ``host`` defaults to loopback: put a reverse proxy or an SSH tunnel in front rather than
    exposing it. ``port=0`` picks a free port; read it from :attr:`port` after
    :meth:`start`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        health: Check | None = None,
        ready: Check | None = None,
        *,
        timeout: float = 5.0,
        max_connections: int = 16,
    ):
        self.host, self.requested_port = host, port
        # Seconds a connection may wait for the client (each read of a request, and a
        # kept-alive connection between requests) before it is closed.
        self.timeout = timeout
        self.max_connections = max_connections
        self.metrics = metrics
        self.health = health or (lambda: (True, {}))
        self.ready = ready or (lambda: (True, {}))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the metrics server is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind and serve. An address in use raises OSError: the caller reports it."""
        if self._server is not None:
            return
        base = _Server6 if ":" in self.host else _Server
        limits = {"max_connections": self.max_connections, "timeout_s": self.timeout}
        server_cls = type(base.__name__, (base,), limits)
        self._server = server_cls((self.host, self.requested_port), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="darkroom-metrics",
            daemon=True,
        )
        self._thread.start()
        log.info(
            "metrics and health endpoints", url=self.url, paths=["/metrics", "/healthz", "/readyz"]
        )

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            server_version = f"darkroom/{__version__}"
            protocol_version = "HTTP/1.1"
            timeout = owner.timeout  # socket timeout: an idle client is closed, its thread freed

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    try:
                        body = owner.metrics.exposition()
                    except Exception as exc:
                        log.exception("metrics scrape failed")
                        self._send(
                            500, "text/plain; charset=utf-8", f"scrape failed: {exc}\n".encode()
                        )
                        return
                    self._send(200, CONTENT_TYPE_LATEST, body)
                elif path in ("/healthz", "/readyz"):
                    check = owner.health if path == "/healthz" else owner.ready
                    try:
                        ok, details = check()
                    except Exception as exc:  # noqa: BLE001
                        ok, details = False, {"error": f"{type(exc).__name__}: {exc}"}
                    body = json.dumps({"ok": bool(ok), "details": details}, default=str).encode()
                    self._send(200 if ok else 503, "application/json", body)
                elif path == "/":
                    self._send(
                        200, "text/plain; charset=utf-8", b"darkroom: /metrics /healthz /readyz\n"
                    )
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found\n")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http", request=format % args)

        return Handler
