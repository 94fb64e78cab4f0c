"""The Prometheus endpoint of a real daemon (a subprocess), scraped and parsed.

The ledger is seeded before the daemon starts with what a day of work leaves: a hosted job
that cost money, a quarantined input and a held one. A second source watches a bucket that
does not exist yet. The scrape must show spend per rule and provider, quarantined and held
inputs per source, per-source lag, and each source's and sink's state and errors; creating
the bucket brings the source up.
"""

from __future__ import annotations

import textwrap
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.queue.ledger import Ledger
from daemon.types import OutputRecord, PlanState
from tests.e2e.conftest import Daemon, wait_for
from tests.operator.conftest import plan
from tests.s3.conftest import moto_endpoint, s3  # noqa: F401 -- fixtures

pytestmark = pytest.mark.slow

RULE = """\
name: r
match: {source: drop, include: ["**/*.png"]}
prompt: "{stem}"
steps:
  - {name: one, model: stub, variants: 1, seed: 1}
output: {sink: out}
"""


def seed(state_dir: Path) -> None:
    """A finished hosted job (two outputs, $0.06 at bfl), a quarantined and a held input."""
    ledger = Ledger(state_dir / "ledger.sqlite")
    done, _ = ledger.submit(plan("paid.png"))
    job = ledger.claim("seed")
    assert job is not None and job.plan_id == done
    outputs = [
        OutputRecord(
            path=f"r/paid.png/one-{v}.png",
            step="one",
            model="flux-pro",
            variant=v,
            seed=1,
            cost=0.03,
            provider="bfl",
        )
        for v in range(2)
    ]
    ledger.complete(job.id, outputs, 1.0)
    ledger.finish_plan(done, PlanState.DONE)
    ledger.record_quarantine("drop", "bad.png", "b" * 64, "not an image", None)
    ledger.submit(plan("waiting.png"))
    held = ledger.claim("seed")
    assert held is not None
    ledger.hold(held.id, "the sink's bucket is gone")
    ledger.close()


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_spend_inputs_lag_and_source_health_are_scraped_from_a_running_daemon(
    tmp_path: Path,
    moto_endpoint: str,  # noqa: F811
    s3: Any,  # noqa: F811
    model_cache: Path,
) -> None:
    bucket = f"dr-later-{uuid.uuid4().hex[:10]}"
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULE)
    (tmp_path / "drop").mkdir()
    (tmp_path / "state").mkdir()
    seed(tmp_path / "state")
    config = tmp_path / "darkroom.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        state_dir: state
        rules_dir: rules
        model_cache: {model_cache}
        sources:
          drop: {{type: folder, path: drop, quiet_period: 0.5}}
          cam: {{type: s3, bucket: {bucket}, endpoint_url: "{moto_endpoint}", region: us-east-1, poll_interval: 1}}
        sinks:
          out: {{type: folder, path: out}}
        worker: {{device: cpu, threads: 1, stop_timeout: 10}}
        jobs: {{hold_backoff: 3600, hold_backoff_max: 3600}}
        metrics: {{enabled: true, port: 0, check_interval: 0.5}}
        log: {{format: json}}
        """)
    )
    daemon = Daemon(tmp_path, config, tmp_path / "daemon.log")
    daemon.start()
    try:
        url = daemon.events("metrics listening")[0]["url"]

        def checked() -> dict[Any, float] | None:
            samples = scrape(url)
            errors = value(samples, "darkroom_source_errors_total", source="cam") or 0
            return samples if errors >= 2 else None

        samples = wait_for(checked, 60, "two failed checks of source cam")
        assert isinstance(samples, dict)
        assert value(samples, "darkroom_hosted_spend_usd_total", rule="r", provider="bfl") == (
            pytest.approx(0.06)
        )
        assert value(samples, "darkroom_inputs_quarantined", source="drop") == 1
        assert value(samples, "darkroom_inputs_quarantined", source="cam") == 0
        assert value(samples, "darkroom_inputs_held", source="drop") == 1
        assert (value(samples, "darkroom_source_lag_seconds", source="drop") or 0) > 0
        assert value(samples, "darkroom_source_up", source="drop") == 1
        assert value(samples, "darkroom_source_up", source="cam") == 0
        assert value(samples, "darkroom_sink_up", sink="out") == 1
        assert value(samples, "darkroom_sink_errors_total", sink="out") == 0
        # Seconds since each source last worked: the failing one's grows, the working one's
        # stays within a check interval.
        cam_age = value(samples, "darkroom_source_seconds_since_ok", source="cam")
        drop_age = value(samples, "darkroom_source_seconds_since_ok", source="drop")
        assert cam_age is not None and drop_age is not None and cam_age > drop_age

        s3.create_bucket(Bucket=bucket)
        wait_for(
            lambda: value(scrape(url), "darkroom_source_up", source="cam") == 1,
            60,
            "source cam to come up once its bucket exists",
        )
        after = scrape(url)
        assert (value(after, "darkroom_source_errors_total", source="cam") or 0) >= 2  # a counter
        assert daemon.stop() == 0
    finally:
        daemon.kill()
