"""The review server: the sinks' review pages over HTTP, and decisions posted from them.

    GET  /                      the sinks, each linking to its root index
    GET  /<sink>/<path>         a file of that sink (pages, images, manifests, sheets)
    GET  /api/ping              {"ok": true, "by": NAME}: the page shows its buttons
    POST /api/decide            {"sink", "manifest", "variants": [...], "action", "note"}

Loopback by default; off loopback only with a token (HTTP basic auth, the token as password,
the user name recorded as who decided). Every API request must carry the
``X-Darkroom-Review`` header and a JSON body: a browser sends such a request from another
site only after a CORS preflight, which this server never grants, so a page elsewhere cannot
decide for a reviewer. Connections are capped and time out, like the metrics server's.
"""

from __future__ import annotations

import base64
import hmac
import html
import json
import mimetypes
import posixpath
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import structlog

from daemon.config.settings import ReviewConfig
from daemon.errors import ConfigError
from daemon.review.decisions import Action, Decided, ReviewError, decide
from daemon.sinks.base import Sink

__all__ = ["ReviewServer"]

log = structlog.get_logger("darkroom.review")

MAX_BODY_BYTES = 64 * 1024
HEADER = "X-Darkroom-Review"

OnDecided = Callable[[str, list[Decided]], object]  # (sink name, what was decided)


class ReviewServer:
    """Serves ``sinks`` and records decisions through :func:`decide`, then ``on_decided``."""

    def __init__(
        self, sinks: Mapping[str, Sink], config: ReviewConfig, on_decided: OnDecided
    ) -> None:
        self.sinks = dict(sinks)
        self.config = config
        self.on_decided = on_decided
        self._decide_lock = threading.Lock()  # one decision at a time: they rewrite manifests
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}/"

    def start(self) -> None:
        handler = _handler_for(self)
        try:
            server = _Server((self.config.host, self.config.port), handler, self._slots)
        except OSError as exc:
            raise ConfigError(
                f"review: cannot listen on {self.config.host}:{self.config.port}: "
                f"{exc.strerror}; choose another review.port"
            ) from None
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="review-server", daemon=True
        )
        self._thread.start()
        log.info("review server listening", url=self.url, sinks=sorted(self.sinks))

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- requests ------------------------------------------------------------------------

    def who(self, authorization: str | None) -> str | None:
        """The reviewer's name, or None when the request is not allowed."""
        token = self.config.token
        user, secret = _basic_auth(authorization)
        if token is None:
            return user or "local"
        if secret is not None and hmac.compare_digest(
            secret.encode(), token.get_secret_value().encode()
        ):
            return user or "reviewer"
        return None

    def handle_decide(self, body: dict[str, Any], by: str) -> list[Decided]:
        sink_name = body.get("sink")
        manifest = body.get("manifest")
        variants = body.get("variants")
        note = body.get("note")
        if sink_name not in self.sinks:
            raise ReviewError(f"no sink {sink_name!r}; sinks: {', '.join(sorted(self.sinks))}")
        if not isinstance(manifest, str) or not _safe_path(manifest):
            raise ReviewError("'manifest' must be the manifest's path inside the sink")
        if not (
            isinstance(variants, list) and variants and all(isinstance(v, str) for v in variants)
        ):
            raise ReviewError("'variants' must be a list of output paths or short names")
        if note is not None and not isinstance(note, str):
            raise ReviewError("'note' must be text")
        try:
            action = Action(str(body.get("action")))
        except ValueError:
            raise ReviewError(
                f"'action' must be one of {', '.join(a.value for a in Action)}"
            ) from None
        with self._decide_lock:
            decided = decide(
                self.sinks[sink_name],
                manifest,
                variants,
                action,
                note=note or None,
                by=by,
                label=f"{sink_name}:{manifest}",
            )
        self.on_decided(sink_name, decided)
        return decided


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, slots: threading.Semaphore):
        self.slots = slots
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # At most max_connections at once; the rest are closed at once instead of queueing
        # threads without bound.
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def _basic_auth(header: str | None) -> tuple[str | None, str | None]:
    if not header or not header.startswith("Basic "):
        return None, None
    try:
        user, _, secret = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return user or None, secret


def _safe_path(path: str) -> bool:
    """A path inside the sink, and not a hidden one (``.darkroom.lock``, temp files)."""
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and all(p and p[0] != "." for p in parts)


_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def _loopback_host(header: str | None) -> bool:
    """Whether a request's Host names this machine. A page elsewhere can make a browser
    resolve its own name to 127.0.0.1 (DNS rebinding); its requests then carry that name."""
    if not header:
        return False
    host = header.strip().lower()
    if host.startswith("["):
        host = host[: host.find("]") + 1]
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host in _LOOPBACK_NAMES or host.startswith("127.")


def _handler_for(server: ReviewServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = server.config.timeout
        server_version = "darkroom-review"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            pass  # requests are not worth a log line each; decisions are logged

        def _reply(
            self, status: int, body: bytes, content_type: str, extra: Mapping[str, str] = {}
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            self._reply(status, json.dumps(data).encode(), "application/json")

        def _authorised(self) -> str | None:
            if not server.config.allow_remote and not _loopback_host(self.headers.get("Host")):
                self._json(HTTPStatus.FORBIDDEN, {"error": "not a loopback Host"})
                return None
            by = server.who(self.headers.get("Authorization"))
            if by is None:
                self._reply(
                    HTTPStatus.UNAUTHORIZED,
                    b"log in with any user name and the review token as password\n",
                    "text/plain; charset=utf-8",
                    {"WWW-Authenticate": 'Basic realm="darkroom review"'},
                )
            return by

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            by = self._authorised()
            if by is None:
                return
            path = unquote(urlsplit(self.path).path)
            if path == "/api/ping":
                if self.headers.get(HEADER) != "1":
                    self._json(HTTPStatus.FORBIDDEN, {"error": f"missing {HEADER} header"})
                    return
                self._json(HTTPStatus.OK, {"ok": True, "by": by})
                return
            if path == "/":
                self._index()
                return
            sink_name, _, inner = path.lstrip("/").partition("/")
            sink = server.sinks.get(sink_name)
            if sink is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no sink {sink_name!r}"})
                return
            inner = inner or "index.html"
            if inner.endswith("/"):
                inner += "index.html"
            if not _safe_path(inner) or not sink.exists(inner):
                self._json(HTTPStatus.NOT_FOUND, {"error": "no such file"})
                return
            data = sink.read(inner)
            kind = mimetypes.guess_type(posixpath.basename(inner))[0] or "application/octet-stream"
            if kind.startswith("text/") or kind == "application/json":
                kind += "; charset=utf-8"
            self._reply(HTTPStatus.OK, data, kind)

        def _index(self) -> None:
            links = "".join(
                f'<li><a href="/{quote(name)}/index.html">{html.escape(name)}</a></li>'
                for name in sorted(server.sinks)
            )
            page = (
                '<!DOCTYPE html><html lang="en"><meta charset="utf-8"><title>Darkroom review'
                f"</title><h1>Darkroom review</h1><ul>{links}</ul></html>"
            )
            self._reply(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")

        def do_POST(self) -> None:
            by = self._authorised()
            if by is None:
                return
            if urlsplit(self.path).path != "/api/decide":
                self._json(HTTPStatus.NOT_FOUND, {"error": "POST /api/decide only"})
                return
            if self.headers.get(HEADER) != "1" or not (
                self.headers.get("Content-Type", "").startswith("application/json")
            ):
                self._json(
                    HTTPStatus.FORBIDDEN,
                    {"error": f"a decision needs the {HEADER}: 1 header and a JSON body"},
                )
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
                return
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("not an object")
            except ValueError:
                self._json(HTTPStatus.BAD_REQUEST, {"error": "the body must be a JSON object"})
                return
            try:
                decided = server.handle_decide(body, by)
            except ReviewError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            except Exception as exc:  # the sink failed: say so, keep serving
                log.warning("review decision failed", error=str(exc))
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"could not record: {exc}"})
                return
            self._json(
                HTTPStatus.OK,
                {
                    "decided": [
                        {
                            "output": d.output_path,
                            "action": d.action.value,
                            "decision": d.decision.decision,
                            "starred": d.decision.starred,
                            "note": d.decision.note,
                            "by": d.decision.by,
                            "at": d.decision.at,
                            "approved_copy": d.approved_copy,
                        }
                        for d in decided
                    ]
                },
            )

    return Handler
