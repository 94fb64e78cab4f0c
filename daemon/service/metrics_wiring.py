"""The /metrics, /healthz and /readyz server as the daemon builds and starts it.

Starting it is where a taken port or a remote bind meets the user: the first is refused
with the key to change, the second is served with a warning of what it exposes.
"""

from __future__ import annotations

import structlog

from daemon.config.settings import Settings
from daemon.errors import ConfigError
from daemon.service.metrics import Metrics, MetricsServer, Readiness
from daemon.service.notify import Heartbeats

__all__ = ["build_metrics_server", "start_metrics_server"]

log = structlog.get_logger("darkroom.app")  # the composition root's logger, as before the split


def build_metrics_server(
    settings: Settings,
    metrics: Metrics,
    beats: Heartbeats,
    readiness: Readiness,
    *,
    any_source: bool,
) -> MetricsServer | None:
    """The server of ``metrics``, or None when disabled (or for ``darkroom process``)."""
    m = settings.metrics
    if not m.enabled or any_source:
        return None
    return MetricsServer(
        m.host,
        m.port,
        metrics,
        health=beats.check,
        ready=readiness.check,
        timeout=m.timeout,
        max_connections=m.max_connections,
    )


def start_metrics_server(server: MetricsServer, settings: Settings) -> None:
    """Listen, or raise ConfigError naming the address and the key to change."""
    try:
        server.start()
        log.info("metrics listening", url=server.url)
        if settings.metrics.allow_remote:
            log.warning(
                "metrics and health endpoints are served beyond this machine "
                "(metrics.allow_remote): anyone who can reach the port reads job "
                "counts, rule and source names; prefer a firewall or a reverse proxy",
                url=server.url,
            )
    except OSError as exc:
        m = settings.metrics
        raise ConfigError(
            f"metrics: cannot listen on {m.host}:{m.port}: {exc.strerror}; "
            "choose another metrics.port"
        ) from None
