"""/metrics, /healthz and /readyz on 127.0.0.1, scraped and parsed like Prometheus does."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon.service.metrics import Metrics, MetricsServer, Readiness
from daemon.types import JobState


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(parsed: dict, name: str, **labels: str) -> float:
    return parsed[(name, frozenset(labels.items()))]


@pytest.fixture
def served() -> Iterator[tuple[Metrics, MetricsServer, dict]]:
    state = {
        "health": (True, {"loop": {"age": 0.1, "max_age": 30, "ok": True}}),
        "counts": {("queued", "product"): 3, ("done", "product"): 2, ("waiting", "banner"): 1},
    }
    readiness = Readiness()
    metrics = Metrics(job_counts=lambda: state["counts"])
    server = MetricsServer(
        "127.0.0.1", 0, metrics, health=lambda: state["health"], ready=readiness.check
    )
    server.start()
    state["readiness"] = readiness
    yield metrics, server, state
    server.stop()


def test_metrics_exposition(served):
    metrics, server, state = served
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
    metrics.job_ended("product", JobState.DONE, "sd-turbo", 0.3)
    metrics.job_ended("product", JobState.DONE, "sd-turbo", 2.0)
    metrics.job_ended("product", JobState.FAILED, None, None)
    metrics.model_loaded("sd-turbo", "cuda:0", 4.2)
    metrics.model_evicted("sdxl-turbo", "cuda:0")
    metrics.worker_restarted("cuda:0", "the worker process killed by SIGSEGV")
    metrics.webhook_failed({"id": "x"}, "http://127.0.0.1:1/", "HTTP 500")  # the on_failure shape
    metrics.set_source_lag("drop", 12.5)

    status, headers, body = get(server.url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    parsed = samples(body.decode())
    assert value(parsed, "darkroom_jobs", state="queued", rule="product") == 3
    assert value(parsed, "darkroom_jobs", state="done", rule="product") == 2
    assert value(parsed, "darkroom_jobs", state="failed", rule="product") == 0  # always present
    assert value(parsed, "darkroom_jobs", state="waiting", rule="banner") == 1
    assert value(parsed, "darkroom_queue_depth") == 4  # waiting + queued
    assert value(parsed, "darkroom_step_seconds_count", profile="sd-turbo") == 2
    assert value(parsed, "darkroom_step_seconds_sum", profile="sd-turbo") == pytest.approx(2.3)
    assert value(parsed, "darkroom_step_seconds_bucket", profile="sd-turbo", le="0.5") == 1
    assert value(parsed, "darkroom_model_loads_total", profile="sd-turbo") == 1
    assert value(parsed, "darkroom_model_evictions_total", profile="sdxl-turbo") == 1
    assert value(parsed, "darkroom_worker_restarts_total") == 1
    assert value(parsed, "darkroom_webhook_failures_total") == 1
    assert value(parsed, "darkroom_jobs_finished_total", rule="product", state="done") == 2
    assert value(parsed, "darkroom_jobs_finished_total", rule="product", state="failed") == 1
    assert value(parsed, "darkroom_source_lag_seconds", source="drop") == 12.5
    assert value(parsed, "darkroom_build_info", version=__import__("daemon").__version__) == 1

    # The ledger is read on every scrape.
    state["counts"] = {("queued", "product"): 0, ("running", "product"): 1}
    parsed = samples(get(server.url + "/metrics")[2].decode())
    assert value(parsed, "darkroom_jobs", state="running", rule="product") == 1
    assert value(parsed, "darkroom_queue_depth") == 0


def test_own_registry_and_count_shapes():
    a, b = Metrics(job_counts=lambda: {"queued": 1}), Metrics()
    a.worker_restarted("cpu", "killed by SIGKILL")
    assert b"darkroom_" not in generate_latest(REGISTRY)
    assert value(samples(b.exposition().decode()), "darkroom_worker_restarts_total") == 0
    nested = Metrics(
        job_counts=lambda: {"product": {"queued": 2, "running": 1}, "banner": {"done": 4}}
    )
    parsed = samples(nested.exposition().decode())
    assert value(parsed, "darkroom_jobs", state="queued", rule="product") == 2
    assert value(parsed, "darkroom_jobs", state="done", rule="banner") == 4
    assert value(parsed, "darkroom_jobs", state="failed", rule="banner") == 0
    assert value(parsed, "darkroom_queue_depth") == 2
    # {state: n} counts (the ledger's counts()) are exported with an empty rule.
    assert value(samples(a.exposition().decode()), "darkroom_jobs", state="queued", rule="") == 1


def test_a_broken_ledger_does_not_break_the_scrape():
    def closed():
        raise RuntimeError("Cannot operate on a closed database.")

    metrics = Metrics(job_counts=closed)
    metrics.observe_step("x", -1)  # clamped, never raises
    parsed = samples(metrics.exposition().decode())
    assert not any(name == "darkroom_jobs" for name, _ in parsed)
    assert value(parsed, "darkroom_step_seconds_sum", profile="x") == 0


def test_healthz(served):
    _, server, state = served
    status, headers, body = get(server.url + "/healthz")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["ok"] is True
    state["health"] = (False, {"worker": {"age": 901.0, "max_age": 900, "ok": False}})
    status, _, body = get(server.url + "/healthz")
    assert status == 503
    assert json.loads(body) == {
        "ok": False,
        "details": {"worker": {"age": 901.0, "max_age": 900, "ok": False}},
    }

    def raises():
        raise RuntimeError("boom")

    server.health = raises
    status, _, body = get(server.url + "/healthz")
    assert status == 503 and "boom" in json.loads(body)["details"]["error"]


def test_readyz_follows_the_lifecycle(served):
    _, server, state = served
    readiness: Readiness = state["readiness"]

    def ready() -> tuple[int, dict]:
        status, _, body = get(server.url + "/readyz")
        return status, json.loads(body)

    status, body = ready()
    assert status == 503 and body["details"]["phase"] == "starting"
    for part in ("sources", "rules", "worker"):
        readiness.mark(part, True)
    assert ready()[0] == 503  # still starting
    readiness.set_phase("running")
    assert ready() == (
        200,
        {
            "ok": True,
            "details": {
                "phase": "running",
                "parts": {"sources": {"ok": True}, "rules": {"ok": True}, "worker": {"ok": True}},
            },
        },
    )
    readiness.mark("worker", False, "restarting after a device error")
    status, body = ready()
    assert (
        status == 503
        and body["details"]["parts"]["worker"]["reason"] == "restarting after a device error"
    )
    readiness.mark("worker", True)
    readiness.set_phase("reloading")
    assert ready()[0] == 503
    readiness.set_phase("stopping")
    assert ready()[0] == 503
    with pytest.raises(ValueError):
        readiness.set_phase("sleeping")


def test_unknown_path_and_restart():
    server = MetricsServer("127.0.0.1", 0, Metrics())
    server.start()
    try:
        assert get(server.url + "/nope")[0] == 404
        assert get(server.url + "/")[0] == 200
        assert get(server.url + "/healthz")[0] == 200  # no checks given: healthy
    finally:
        server.stop()
    server.stop()  # twice is fine
    with pytest.raises(RuntimeError):
        _ = server.port
