"""A new version that fails, on an S3 sink (moto): the prefix's top level matches its manifest.

The real daemon (a subprocess) reads a drop folder and writes to an S3 sink. Version 1 of
photo.png completes; version 2 makes the model fail. Afterwards the manifest describes the
failed version 2, and version 1's objects are under rounds/1/ (their recorded bytes), no
longer beside it at the top of the prefix.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import make_image
from tests.e2e.conftest import Daemon
from tests.s3.conftest import wait_for

pytestmark = pytest.mark.slow

PREFIX = "out/r/photo.png/"


def config(tmp_path: Path, endpoint: str, bucket: str, model_cache: Path, marker: Path) -> Path:
    (tmp_path / "drop").mkdir()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        textwrap.dedent(f"""\
        name: r
        match: {{source: drop}}
        prompt: "{{stem}}"
        steps:
          - {{name: one, model: stub, variants: 2, seeds: [1, 2],
              params: {{stub_fail: invalid, stub_fail_once: '{marker}'}}}}
        output: {{sink: out}}
        """)
    )
    path = tmp_path / "darkroom.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        state_dir: state
        rules_dir: rules
        model_cache: {model_cache}
        sources:
          drop: {{type: folder, path: drop, quiet_period: 0.3, rescan_interval: 5}}
        sinks:
          out: {{type: s3, bucket: {bucket}, prefix: out, endpoint_url: "{endpoint}", region: us-east-1}}
        worker: {{device: cpu, threads: 1, stop_timeout: 10}}
        jobs: {{max_attempts: 2, retry_backoff: 0.2}}
        digest: {{enabled: false}}
        log: {{format: json}}
        """)
    )
    return path


def keys(s3, bucket: str) -> list[str]:
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX):
        found += [o["Key"][len(PREFIX) :] for o in page.get("Contents", ())]
    return sorted(found)


def read(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def manifest_of(s3, bucket: str, source_sha: str) -> dict | None:
    try:
        m = json.loads(read(s3, bucket, PREFIX + "manifest.json"))
    except Exception:  # not there yet
        return None
    return m if m["source"]["sha256"] == source_sha else None


def new_version(tmp_path: Path, color: tuple[int, int, int]) -> str:
    staged = make_image(tmp_path / f"staged-{color[0]}.png", color=color)
    data = staged.read_bytes()
    staged.rename(tmp_path / "drop" / "photo.png")
    return hashlib.sha256(data).hexdigest()


def test_a_failed_new_version_moves_the_previous_round_under_rounds_on_s3(
    tmp_path, moto_endpoint, s3, bucket, model_cache
):
    marker = tmp_path / "model-ok"
    marker.touch()
    daemon = Daemon(
        tmp_path,
        config(tmp_path, moto_endpoint, bucket, model_cache, marker),
        tmp_path / "daemon.log",
    )
    daemon.start()
    try:
        first = new_version(tmp_path, (200, 80, 40))
        wait_for(lambda: manifest_of(s3, bucket, first), 60, "version 1's manifest")
        v1 = json.loads(read(s3, bucket, PREFIX + "manifest.json"))
        assert v1["status"] == "done"
        recorded = {Path(o["path"]).name: o["sha256"] for s in v1["steps"] for o in s["outputs"]}

        marker.unlink()  # the model now refuses every request
        second = new_version(tmp_path, (10, 10, 200))
        wait_for(lambda: manifest_of(s3, bucket, second), 60, "version 2's manifest")
        wait_for(
            lambda: daemon.events("source finished", status="failed"), 60, "version 2 to close"
        )
        v2 = json.loads(read(s3, bucket, PREFIX + "manifest.json"))
        assert v2["status"] == "failed"

        listing = keys(s3, bucket)
        assert not [k for k in listing if k.startswith("one-")], listing
        assert not [k for k in listing if k.startswith("thumbs/")], listing
        [kept] = v2["rounds"]
        assert kept["source_sha256"] == first and kept["status"] == "done"
        for name, digest in recorded.items():
            data = read(s3, bucket, f"{PREFIX}rounds/1/{name}")
            assert hashlib.sha256(data).hexdigest() == digest, name
        assert f"rounds/1/{next(iter(recorded))}" in " ".join(kept["outputs"])
        page = read(s3, bucket, PREFIX + "index.html").decode()
        assert "This version failed" in page
        assert daemon.stop() == 0
    finally:
        daemon.kill()
