"""Prometheus metrics and the readiness state the health endpoints serve.

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
starting, reloading or stopping, or while a source or sink cannot be reached
(:class:`Readiness` keeps that state).

With ``ledger`` and ``health`` the scrape also reads, at scrape time: hosted spend per rule
and provider, quarantined and held inputs per source (from the ledger), and whether each
source and sink can be reached, its failed checks and the seconds since it last worked
(:class:`daemon.service.health.PartHealth`).

The HTTP server itself (loopback, timeouts, a connection cap) is
:mod:`daemon.service.endpoints`; ``MetricsServer`` is importable from here too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest

from daemon import __version__
from daemon.hooks import Hooks
from daemon.types import JobState

if TYPE_CHECKING:
    from daemon.service.health import PartState

log = structlog.get_logger("darkroom.metrics")

__all__ = ["STEP_BUCKETS", "Check", "Metrics", "MetricsServer", "Readiness"]

# Seconds per model call: sub-second turbo models up to minutes of video.
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

# The ledger's job states, always exported (0 included) for every rule seen, so that
# alerts like `darkroom_jobs{state="failed"} > 0` never meet a missing series.
JOB_STATES = tuple(state.value for state in JobState)
# States that count towards darkroom_queue_depth: work accepted but not started.
QUEUED_STATES = ("waiting", "queued")

# {rule: {state: n}} (Ledger.counts_by_rule), {(state, rule): n}, or {state: n} (no rule label).
JobCounts = Mapping[str, Mapping[str, int]] | Mapping[tuple[str, str], int] | Mapping[str, int]


class LedgerReadings(Protocol):
    """The ledger's read-only queries a scrape uses (daemon.queue.ledger.Ledger has them)."""

    def spend_by_provider(self, since: float = 0.0) -> dict[tuple[str, str], float]: ...
    def quarantined_by_source(self) -> dict[str, int]: ...
    def held_inputs_by_source(self) -> dict[str, int]: ...


class _InputsCollector:
    """Spend per rule and provider, quarantined and held inputs per source: from the ledger."""

    def __init__(
        self, ledger: Callable[[], LedgerReadings | None], sources: Callable[[], list[str]]
    ):
        self.ledger = ledger
        self.sources = sources

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        spend = CounterMetricFamily(
            "darkroom_hosted_spend_usd",
            "Estimated hosted-model spend (USD) of committed jobs, by rule and provider "
            "(ledger rows are pruned after maintenance.retention_days).",
            labels=["rule", "provider"],
        )
        quarantined = GaugeMetricFamily(
            "darkroom_inputs_quarantined",
            "Inputs quarantined (bad bytes, with a reason), by source; 'darkroom requeue' clears.",
            labels=["source"],
        )
        held = GaugeMetricFamily(
            "darkroom_inputs_held",
            "Inputs with a job held by an environment fault (see darkroom status), by source.",
            labels=["source"],
        )
        ledger = self.ledger()
        if ledger is None:
            return []
        try:
            by_provider = ledger.spend_by_provider()
            in_quarantine = ledger.quarantined_by_source()
            on_hold = ledger.held_inputs_by_source()
        except Exception as exc:  # noqa: BLE001 -- a scrape must not fail because the ledger is closed
            log.debug("ledger readings unavailable", reason=str(exc))
            return []
        for (rule, provider), usd in sorted(by_provider.items()):
            spend.add_metric([rule, provider], usd)
        names = sorted({*self.sources(), *in_quarantine, *on_hold})
        for name in names:
            quarantined.add_metric([name], in_quarantine.get(name, 0))
            held.add_metric([name], on_hold.get(name, 0))
        return [spend, quarantined, held]


class _HealthCollector:
    """Whether each source and sink can be reached, its failed checks, seconds since it worked."""

    def __init__(self, states: Callable[[], list[PartState]], now: Callable[[], float]):
        self.states = states
        self.now = now

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        families: list[Any] = []
        now = self.now()
        states = self.states()
        for kind in ("source", "sink"):
            up = GaugeMetricFamily(
                f"darkroom_{kind}_up",
                f"1 when the {kind}'s latest check passed, 0 when it failed (see darkroom status).",
                labels=[kind],
            )
            errors = CounterMetricFamily(
                f"darkroom_{kind}_errors",
                f"Failed checks of the {kind} since the daemon started.",
                labels=[kind],
            )
            since_ok = GaugeMetricFamily(
                f"darkroom_{kind}_seconds_since_ok",
                f"Seconds since the {kind} last passed a check (grows while it fails).",
                labels=[kind],
            )
            for state in states:
                if state.kind != kind:
                    continue
                errors.add_metric([state.name], state.failures)
                if state.ok is None:
                    continue  # not checked yet: no verdict to export
                up.add_metric([state.name], 1 if state.ok else 0)
                last = state.last_ok_at if state.last_ok_at is not None else state.since
                since_ok.add_metric([state.name], max(0.0, now - (last or now)))
            families += [up, errors, since_ok]
        return families


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
        *,
        ledger: Callable[[], LedgerReadings | None] | None = None,
        sources: Callable[[], list[str]] = list,
        health: Callable[[], list[PartState]] | None = None,
        clock: Callable[[], float] = time.time,
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
        if ledger is not None:
            self.registry.register(_InputsCollector(ledger, sources))
        if health is not None:
            self.registry.register(_HealthCollector(health, clock))

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
        self._since: dict[str, float] = {}

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

    def mark(
        self, part: str, ok: bool, reason: str | None = None, since: float | None = None
    ) -> None:
        """``since``: when the part started failing (unix time), shown on /readyz."""
        with self._lock:
            self._parts[part] = (ok, None if ok else (reason or "down"))
            if ok:
                self._since.pop(part, None)
            elif since is not None:
                self._since[part] = since

    def check(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            parts: dict[str, dict[str, Any]] = {
                name: ({"ok": True} if ok else {"ok": False, "reason": why})
                for name, (ok, why) in self._parts.items()
            }
            for name, since in self._since.items():
                if name in parts:
                    parts[name]["since"] = _iso(since)
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


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# The server lives in its own module; imported here for callers of the old name.
from daemon.service.endpoints import Check, MetricsServer  # noqa: E402
