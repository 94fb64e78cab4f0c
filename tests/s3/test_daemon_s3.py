"""The real daemon (a subprocess) with S3 sources and an S3 sink on a moto server.

One daemon watches a poll-mode prefix and an event-mode prefix; then two daemons (separate
state_dirs) share one queue. The ``stub`` model makes jobs instant, so the figures measure
the S3/SQS paths. Wall times are printed (``pytest -s``) and kept in the test report.
"""

from __future__ import annotations

import io
import json
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.conftest import Daemon
from tests.s3.conftest import make_queue, notify, queue_depth, wait_for

pytestmark = pytest.mark.slow

# Enough objects for two daemons (max_in_flight 5 each) to share a queue. Each object's plan
# writes a handful of objects to moto: 50 made this the suite's slowest test after the GPU
# check's dry run (94 s on a busy 2-core box).
N = 20
IGNORED = "no rule matches; ignored (darkroom match explains why)"


def png(i: int) -> bytes:
    image = Image.new("RGB", (32, 32), (i * 5 % 256, 255 - i * 3 % 256, i * 11 % 256))
    image.putpixel((i % 32, i // 32), (0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def rule(name: str, source: str) -> str:
    return textwrap.dedent(f"""\
        name: {name}
        match: {{source: {source}, include: ["**/*.png"]}}
        prompt: "{{stem}}"
        steps:
          - {{name: explore, model: stub, variants: 1, seed: 5}}
        output: {{sink: out}}
        """)


def config(
    tmp: Path, name: str, endpoint: str, bucket: str, sources: str, model_cache: Path
) -> Path:
    (tmp / "rules").mkdir(exist_ok=True)
    path = tmp / f"{name}.yaml"
    sources_block = textwrap.indent(textwrap.dedent(sources), "  ")
    path.write_text(
        f"state_dir: state-{name}\n"
        "rules_dir: rules\n"
        f"model_cache: {model_cache}\n"
        f"sources:\n{sources_block}"
        "sinks:\n"
        f'  out: {{type: s3, bucket: {bucket}, prefix: out, endpoint_url: "{endpoint}", region: us-east-1}}\n'
        "worker: {device: cpu, threads: 1, stop_timeout: 10}\n"
        "jobs: {max_attempts: 2, retry_backoff: 0.2}\n"
        "log: {format: json}\n"
    )
    return path


def manifests(s3, bucket: str) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="out/"):
        keys += [o["Key"] for o in page.get("Contents", ()) if o["Key"].endswith("manifest.json")]
    return keys


def upload(s3, bucket: str, prefix: str, n: int = N) -> float:
    started = time.monotonic()
    for i in range(n):
        s3.put_object(
            Bucket=bucket,
            Key=f"{prefix}/img-{i:03}.png",
            Body=png(i if prefix != "ev" else i + 100),
        )
    return started


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def test_poll_and_events_end_to_end(
    tmp_path, moto_endpoint, s3, sqs, bucket, model_cache, daemons, record_property
):
    queue = make_queue(sqs, visibility=30)
    notify(s3, sqs, bucket, queue, prefix="ev/")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "polled.yaml").write_text(rule("polled", "polled"))
    (tmp_path / "rules" / "evented.yaml").write_text(rule("evented", "evented"))
    cfg = config(
        tmp_path,
        "one",
        moto_endpoint,
        bucket,
        f"""\
        polled: {{type: s3, mode: poll, bucket: {bucket}, prefix: poll, poll_interval: 1,
                  endpoint_url: "{moto_endpoint}", region: us-east-1}}
        evented: {{type: s3, mode: events, bucket: {bucket}, prefix: ev, queue_url: "{queue}",
                   wait_time: 1, visibility_timeout: 30, endpoint_url: "{moto_endpoint}", region: us-east-1}}
        """,
        model_cache,
    )
    daemon = Daemon(tmp_path, cfg, tmp_path / "one.log")
    daemons.append(daemon)
    daemon.start()

    started = upload(s3, bucket, "poll")
    wait_for(lambda: len(manifests(s3, bucket)) >= N, 120, f"{N} manifests from polling")
    poll_s = time.monotonic() - started

    started = upload(s3, bucket, "ev")
    wait_for(lambda: len(manifests(s3, bucket)) >= 2 * N, 120, f"{N} manifests from events")
    events_s = time.monotonic() - started
    wait_for(lambda: queue_depth(sqs, queue) == (0, 0), 30, "every message settled and deleted")

    # Two more poll listings, each after all the work: nothing is processed twice. An object
    # no rule takes, put after the last listing, is logged as ignored by the next one.
    for i in range(2):
        barrier = f"poll/barrier-{i}.webp"
        s3.put_object(Bucket=bucket, Key=barrier, Body=png(i))
        wait_for(
            lambda barrier=barrier: [
                e for e in daemon.events(IGNORED) if barrier.endswith(e["key"])
            ],
            30,
            f"a poll listing to find {barrier}",
        )
    assert daemon.stop() == 0
    found = manifests(s3, bucket)
    assert len(found) == 2 * N and len(set(found)) == 2 * N
    queued = Counter((e["source"], e["key"]) for e in daemon.events("queued"))
    assert len(queued) == 2 * N and set(queued.values()) == {1}
    body = json.loads(s3.get_object(Bucket=bucket, Key=sorted(found)[0])["Body"].read())
    assert body["status"] == "done" and body["source"]["etag"]
    record_property(f"poll_{N}_s", round(poll_s, 2))
    record_property(f"events_{N}_s", round(events_s, 2))
    print(
        f"\n{N} objects end to end: poll {poll_s:.1f} s (poll_interval 1 s), events {events_s:.1f} s"
    )


def test_two_daemons_share_one_queue(
    tmp_path, moto_endpoint, s3, sqs, bucket, model_cache, daemons, record_property
):
    queue = make_queue(sqs, visibility=30)
    notify(s3, sqs, bucket, queue, prefix="ev/")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "evented.yaml").write_text(rule("evented", "evented"))
    source = f"""\
        evented: {{type: s3, mode: events, bucket: {bucket}, prefix: ev, queue_url: "{queue}", max_in_flight: 5,
                   wait_time: 1, visibility_timeout: 30, endpoint_url: "{moto_endpoint}", region: us-east-1}}
        """
    pair = [
        Daemon(
            tmp_path,
            config(tmp_path, name, moto_endpoint, bucket, source, model_cache),
            tmp_path / f"{name}.log",
        )
        for name in ("a", "b")
    ]
    daemons.extend(pair)
    for daemon in pair:
        daemon.start()

    started = upload(s3, bucket, "ev")
    wait_for(lambda: len(manifests(s3, bucket)) >= N, 120, f"{N} manifests")
    elapsed = time.monotonic() - started
    wait_for(lambda: queue_depth(sqs, queue) == (0, 0), 30, "every message deleted")
    for daemon in pair:
        assert daemon.stop() == 0

    found = manifests(s3, bucket)
    assert len(found) == N
    per_daemon = [Counter(e["key"] for e in d.events("queued")) for d in pair]
    keys = per_daemon[0] + per_daemon[1]
    assert len(keys) == N and set(keys.values()) == {1}, "an object was processed twice"
    committed_twice = [
        e
        for d in pair
        for e in d.events("another daemon already committed this source; keeping its manifest")
    ]
    assert not committed_twice
    shares = [sum(c.values()) for c in per_daemon]
    record_property(f"two_daemons_{N}_s", round(elapsed, 2))
    record_property("two_daemons_shares", shares)
    print(f"\n{N} objects, two daemons on one queue: {elapsed:.1f} s, shares {shares}")
