"""Prometheus metrics and the health endpoints, on a small local HTTP server.

    metrics = Metrics(job_counts=ledger.counts_by_rule)   # scraped live from the ledger
    server = MetricsServer("127.0.0.1", 9464, metrics, health=beats.check, ready=readiness.check)
    server.start()            # /metrics, /healthz, /readyz
    metrics.job_ended("product", JobState.DONE, "sd-turbo", 1.8)
    server.stop()

:class:`Metrics` is one of the daemon's :class:`daemon.hooks.Hooks`: the runner and the
worker pool report job ends, model loads and evictions and worker restarts to it.

Everything lives in a registry of its own (never prometheus_client's global one), so two
daemons in one test process, or a library that registers its own metrics, never clash.

``health`` and ``ready`` return ``(ok, details)``; the endpoints answer 200 or 503 with
``{"ok": bool, "details": ...}`` as JSON. /healthz is "restart me if this stays false"
(the same test the systemd watchdog uses); /readyz is "send me work": false while
starting, reloading or stopping (:class:`Readiness` keeps that state).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from daemon import __version__
from daemon.hooks import Hooks
from daemon.types import JobState

log = structlog.get_logger("darkroom.metrics")

__all__ = ["STEP_BUCKETS", "Metrics", "MetricsServer", "Readiness"]

# Seconds per model call: sub-second turbo models up to minutes of video.
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

# The ledger's job states, always exported (0 included) for every rule seen, so that
# alerts like `darkroom_jobs{state="failed"} > 0` never meet a missing series.
JOB_STATES = tuple(state.value for state in JobState)
# States that count towards darkroom_queue_depth: work accepted but not started.
QUEUED_STATES = ("waiting", "queued")

# {rule: {state: n}} (Ledger.counts_by_rule), {(state, rule): n}, or {state: n} (no rule label).
JobCounts = Mapping[str, Mapping[str, int]] | Mapping[tuple[str, str], int] | Mapping[str, int]


class _LedgerCollector:
    """darkroom_jobs{state,rule} and darkroom_queue_depth, read from the ledger at scrape time."""

    def __init__(self, job_counts: Callable[[], JobCounts]):
        self.job_counts = job_counts

    def describe(self) -> Iterable[Any]:
        return []  # no samples at registration time: the ledger may not be open yet

    def collect(self) -> Iterable[Any]:
        jobs = GaugeMetricFamily(
            "darkroom_jobs", "Jobs in the ledger, by state and rule.", labels=["state", "rule"]
        )
        depth = GaugeMetricFamily(
            "darkroom_queue_depth", "Jobs accepted but not started (waiting + queued)."
        )
        try:
            counts = dict(self.job_counts())
        except Exception as exc:  # noqa: BLE001 -- a scrape must not fail because the ledger is closed
            log.debug("job counts unavailable", reason=str(exc))
            return []
        by_rule: dict[str, dict[str, int]] = {}
        for key, n in counts.items():
            if isinstance(n, Mapping):  # {rule: {state: n}}
                states = by_rule.setdefault(str(key), dict.fromkeys(JOB_STATES, 0))
                states.update({str(state): int(m) for state, m in n.items()})
                continue
            state, rule = key if isinstance(key, tuple) else (key, "")
            by_rule.setdefault(rule, dict.fromkeys(JOB_STATES, 0))[str(state)] = int(n)
        total = 0
        for rule, states in sorted(by_rule.items()):
            for state, n in states.items():
                jobs.add_metric([state, rule], n)
                total += n if state in QUEUED_STATES else 0
        depth.add_metric([], total)
        return [jobs, depth]


class Metrics(Hooks):
    """The daemon's metrics. Every method is cheap, thread-safe and never raises.

    ``job_counts`` is called on every scrape: ``Ledger.counts_by_rule`` (``{rule: {state:
    n}}``) as it is; ``{(state, rule): n}`` and ``{state: n}`` (exported with an empty
    rule) work too. Without it there are no darkroom_jobs / darkroom_queue_depth series.
    """

    def __init__(
        self,
        job_counts: Callable[[], JobCounts] | None = None,
        registry: CollectorRegistry | None = None,
    ):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.info = Gauge(
            "darkroom_build_info", "Always 1; the version is in the label.", ["version"], registry=r
        )
        self.info.labels(__version__).set(1)
        self.step_seconds = Histogram(
            "darkroom_step_seconds",
            "Seconds per model call, by profile.",
            ["profile"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.model_loads = Counter(
            "darkroom_model_loads_total",
            "Model pipelines loaded onto the device.",
            ["profile"],
            registry=r,
        )
        self.model_evictions = Counter(
            "darkroom_model_evictions_total",
            "Model pipelines dropped from the device cache.",
            ["profile"],
            registry=r,
        )
        self.worker_restarts = Counter(
            "darkroom_worker_restarts_total",
            "Worker processes replaced after a crash, hang or device error.",
            registry=r,
        )
        self.source_lag = Gauge(
            "darkroom_source_lag_seconds",
            "Age of the oldest arrival not yet processed, by source (0: none pending).",
            ["source"],
            registry=r,
        )
        self.webhook_failures = Counter(
            "darkroom_webhook_failures_total",
            "Webhook deliveries given up (after retries, or dropped).",
            registry=r,
        )
        self.jobs_finished = Counter(
            "darkroom_jobs_finished_total",
            "Jobs that ended, by rule and final state.",
            ["rule", "state"],
            registry=r,
        )
        self.worker_restarts.inc(0)
        self.webhook_failures.inc(0)
        if job_counts is not None:
            self.registry.register(_LedgerCollector(job_counts))

    # -- hooks: what the runner and the pool report ---------------------------------

    def job_ended(
        self, rule: str, state: JobState, profile: str | None, model_seconds: float | None
    ) -> None:
        self._safe(lambda: self.jobs_finished.labels(rule, JobState(state).value).inc())
        if profile is not None and model_seconds is not None:
            self.observe_step(profile, model_seconds)

    def model_loaded(self, profile: str, device: str, seconds: float) -> None:
        self._safe(lambda: self.model_loads.labels(profile).inc())

    def model_evicted(self, profile: str, device: str) -> None:
        self._safe(lambda: self.model_evictions.labels(profile).inc())

    def worker_restarted(self, device: str, reason: str) -> None:
        self._safe(self.worker_restarts.inc)

    # -- what the rest of the daemon calls -------------------------------------------

    def observe_step(self, profile: str, seconds: float) -> None:
        self._safe(lambda: self.step_seconds.labels(profile).observe(max(0.0, float(seconds))))

    def webhook_failed(self, *_args: Any, **_kwargs: Any) -> None:
        """Also usable directly as ``WebhookSender(on_failure=metrics.webhook_failed)``."""
        self._safe(self.webhook_failures.inc)

    def set_source_lag(self, source: str, seconds: float) -> None:
        self._safe(lambda: self.source_lag.labels(source).set(max(0.0, float(seconds))))

    def exposition(self) -> bytes:
        """The text exposition format, as /metrics serves it."""
        return generate_latest(self.registry)

    @staticmethod
    def _safe(action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 -- metrics must never break the pipeline
            log.debug("metric update failed", reason=str(exc))


class Readiness:
    """Whether the daemon wants work: its phase plus the parts that must be up.

    readiness = Readiness(["sources", "rules", "worker"])
    readiness.mark("worker", True)
    readiness.set_phase("running")        # starting | running | reloading | stopping
    ok, details = readiness.check()       # ok only when running and every part is up
    readiness.report("held", held_jobs)   # extra details (held jobs): shown, not a failure
    """

    PHASES = ("starting", "running", "reloading", "stopping")

    def __init__(self, parts: Iterable[str] = ("sources", "rules", "worker")):
        self._lock = threading.Lock()
        self.phase = "starting"
        self._parts: dict[str, tuple[bool, str | None]] = {p: (False, "not started") for p in parts}
        self._reports: dict[str, Callable[[], Any]] = {}

    def report(self, name: str, details: Callable[[], Any]) -> None:
        """Add ``details()`` to every check under ``name`` (e.g. held jobs and their reasons):
        an operator sees it on /readyz; it does not make the daemon unready."""
        with self._lock:
            self._reports[name] = details

    def set_phase(self, phase: str) -> None:
        if phase not in self.PHASES:
            raise ValueError(f"phase must be one of {', '.join(self.PHASES)}, not {phase!r}")
        with self._lock:
            self.phase = phase

    def mark(self, part: str, ok: bool, reason: str | None = None) -> None:
        with self._lock:
            self._parts[part] = (ok, None if ok else (reason or "down"))

    def check(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            parts = {
                name: ({"ok": True} if ok else {"ok": False, "reason": why})
                for name, (ok, why) in self._parts.items()
            }
            phase = self.phase
            reports = dict(self._reports)
        ok = phase == "running" and all(p["ok"] for p in parts.values())
        details: dict[str, Any] = {"phase": phase, "parts": parts}
        for name, report in reports.items():
            try:
                details[name] = report()
            except Exception as exc:  # a report must never break the probe
                details[name] = {"error": repr(exc)}
        return ok, details


Check = Callable[[], tuple[bool, Mapping[str, Any]]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


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
    ):
        self.host, self.requested_port = host, port
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
        server_cls = _Server6 if ":" in self.host else _Server
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
