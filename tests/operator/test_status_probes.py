"""The checks behind status, /readyz and STATUS: each failure named with its location and fix.

In-process: a check per kind of source and sink against moto (S3/SQS), a closed loopback
port (a wrong endpoint) and folders. A wrong endpoint fails within the check's short
timeouts, not after botocore's retries.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from daemon.config.settings import (
    FolderSinkConfig,
    FolderSourceConfig,
    S3SinkConfig,
    S3SourceConfig,
)
from daemon.errors import EnvironmentFault
from daemon.service.health import PartHealth, read_report, write_report
from daemon.service.probes import build_probes
from tests.s3.conftest import bucket, moto_endpoint, s3, sqs  # noqa: F401 -- fixtures
from tests.service.conftest import closed_port


def s3_sink(name: str, endpoint: str) -> S3SinkConfig:
    return S3SinkConfig(type="s3", bucket=name, endpoint_url=endpoint, region="us-east-1")


def test_s3_checks_name_the_missing_bucket_queue_and_a_dead_endpoint(
    moto_endpoint: str,  # noqa: F811
    bucket: str,  # noqa: F811
    sqs: Any,  # noqa: F811
) -> None:
    missing = f"dr-none-{uuid.uuid4().hex[:8]}"
    queue = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    dead = f"http://127.0.0.1:{closed_port()}"
    probes = build_probes(
        {
            "ok": S3SourceConfig(
                type="s3",
                bucket=bucket,
                prefix="in",
                endpoint_url=moto_endpoint,
                region="us-east-1",
            ),
            "events": S3SourceConfig(
                type="s3",
                mode="events",
                bucket=bucket,
                queue_url=queue + "-gone",
                endpoint_url=moto_endpoint,
                region="us-east-1",
            ),
        },
        {"gone": s3_sink(missing, moto_endpoint), "dead": s3_sink(bucket, dead)},
    )
    probes["source:ok"]()  # reachable: no error
    with pytest.raises(EnvironmentFault, match=rf"s3://{missing}/.*no such bucket"):
        probes["sink:gone"]()
    with pytest.raises(EnvironmentFault, match=r"queue .*-gone.*no such queue"):
        probes["source:events"]()
    started = time.monotonic()
    with pytest.raises(EnvironmentFault, match=rf"s3://{bucket}/"):
        probes["sink:dead"]()
    # One attempt: far less than botocore's standard retries against a dead endpoint.
    assert time.monotonic() - started < 60


def test_folder_checks(tmp_path: Path) -> None:
    (tmp_path / "drop").mkdir()
    (tmp_path / "file").write_text("x")
    probes = build_probes(
        {
            "drop": FolderSourceConfig(path=tmp_path / "drop"),
            "gone": FolderSourceConfig(path=tmp_path / "nowhere"),
        },
        {
            "new": FolderSinkConfig(path=tmp_path / "out" / "deeper"),  # created on write
            "blocked": FolderSinkConfig(path=tmp_path / "file" / "out"),
        },
    )
    probes["source:drop"]()
    probes["sink:new"]()
    with pytest.raises(EnvironmentFault, match="nowhere does not exist"):
        probes["source:gone"]()
    with pytest.raises(EnvironmentFault, match="file is not a folder"):
        probes["sink:blocked"]()


def test_verdicts_keep_since_count_failures_and_round_trip_through_the_report(
    tmp_path: Path,
) -> None:
    now = [1000.0]
    broken = {"on": True}

    def probe() -> None:
        if broken["on"]:
            raise EnvironmentFault("cannot list s3://cam/: no such bucket")

    changes: list[Any] = []
    health = PartHealth({"source:cam": probe}, on_change=changes.append, clock=lambda: now[0])
    health.check_all()
    now[0] = 1010.0
    health.check_all()
    (state,) = health.failing()
    assert state.since == 1000.0 and state.failures == 2 and "no such bucket" in str(state.error)
    assert len(changes) == 1  # one change, however many failed checks
    assert health.seconds_since_ok("source:cam") == 10.0
    write_report(tmp_path, health.states(), interval=15)
    report = read_report(tmp_path)
    assert report is not None and report.daemon_running  # written by this very process
    assert report.parts == health.states()

    broken["on"] = False
    now[0] = 1020.0
    health.check_all()
    assert health.failing() == [] and len(changes) == 2 and changes[-1].ok
    assert health.states()[0].since == 1020.0 and health.states()[0].failures == 2
