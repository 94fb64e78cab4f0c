"""``darkroom review approve s3://bucket/prefix/...``: the URL a reviewer copies from a page,
a webhook or ``aws s3 ls`` finds its sink, manifest and variant (real CLI, moto server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.review.conftest import build_review_sink
from tests.review.test_approve_by_path import darkroom  # the moto credentials are in os.environ

pytestmark = pytest.mark.slow  # runs the darkroom CLI as a subprocess

SOURCE = "product-lifestyle/lamp"


@pytest.fixture
def s3_review(tmp_path: Path, s3: Any, bucket: str, moto_endpoint: str) -> dict[str, Any]:
    """One reviewed source in ``s3://BUCKET/campaign/``, and a config naming that sink (and
    a folder sink, to be listed in errors)."""
    built, _, _ = build_review_sink(tmp_path / "built")
    for path in sorted(p for p in built.root.rglob("*") if p.is_file()):
        key = "campaign/" + path.relative_to(built.root).as_posix()
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    config = tmp_path / "darkroom.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "sinks:\n"
        f"  local: {{type: folder, path: {tmp_path / 'local'}}}\n"
        f"  out: {{type: s3, bucket: {bucket}, prefix: campaign,"
        f' endpoint_url: "{moto_endpoint}", region: us-east-1}}\n'
    )
    return {"bucket": bucket, "config": config, "url": f"s3://{bucket}/campaign/{SOURCE}"}


def manifest(s3: Any, bucket: str) -> dict[str, Any]:
    body = s3.get_object(Bucket=bucket, Key=f"campaign/{SOURCE}/manifest.json")["Body"]
    return json.loads(body.read())


def exists(s3: Any, bucket: str, key: str) -> bool:
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount"))


def test_approve_by_the_outputs_own_url(tmp_path: Path, s3: Any, s3_review: dict[str, Any]):
    bucket, config, url = s3_review["bucket"], s3_review["config"], s3_review["url"]
    output = f"{SOURCE}/explore-sd-turbo-1.png"

    run = darkroom(tmp_path, "review", "approve", f"{url}/explore-sd-turbo-1.png",
                   "--config", str(config), "--by", "ann")  # fmt: skip

    assert run.returncode == 0, run.stderr
    approved = f"campaign/approved/{output}"
    assert f"s3://{bucket}/{approved}" in run.stdout
    assert exists(s3, bucket, approved)
    decision = manifest(s3, bucket)["decisions"][output]
    assert (decision["decision"], decision["by"]) == ("approved", "ann")
    page = s3.get_object(Bucket=bucket, Key=f"campaign/{SOURCE}/index.html")["Body"].read()
    assert b'class="badge approved"' in page
    # the ledger has it too, for the daemon to announce
    assert (tmp_path / "state" / "ledger.sqlite").is_file()


def test_folder_page_and_approval_copy_urls(tmp_path: Path, s3: Any, s3_review: dict[str, Any]):
    bucket, config, url = s3_review["bucket"], s3_review["config"], s3_review["url"]
    cfg = ("--config", str(config))

    # the source's folder, as `aws s3 ls` prints it (trailing slash), and a variant by name
    run = darkroom(tmp_path, "review", "star", f"{url}/", "explore-kontext-2", *cfg)
    assert run.returncode == 0, run.stderr
    assert manifest(s3, bucket)["decisions"][f"{SOURCE}/explore-kontext-2.png"]["starred"]

    # the page's URL, the way a reviewer copies it from a browser tab on a bucket website
    run = darkroom(tmp_path, "review", "approve", f"{url}/index.html", "wiggle-0", *cfg)
    assert run.returncode == 0, run.stderr
    approved = f"campaign/approved/{SOURCE}/wiggle-anim-0.webp"
    assert exists(s3, bucket, approved)

    # the approval copy's URL (from the approved/ listing or a webhook) rejects the variant
    run = darkroom(tmp_path, "review", "reject", f"s3://{bucket}/{approved}", *cfg)
    assert run.returncode == 0, run.stderr
    assert not exists(s3, bucket, approved)
    assert manifest(s3, bucket)["decisions"][f"{SOURCE}/wiggle-anim-0.webp"]["decision"] == (
        "rejected"
    )


def test_a_url_no_sink_holds_names_the_configured_sinks(
    tmp_path: Path, s3: Any, s3_review: dict[str, Any]
):
    bucket, config = s3_review["bucket"], s3_review["config"]
    before = manifest(s3, bucket)
    for url in (
        f"s3://other-bucket/campaign/{SOURCE}/explore-sd-turbo-1.png",
        f"s3://{bucket}/elsewhere/{SOURCE}/explore-sd-turbo-1.png",
    ):
        run = darkroom(tmp_path, "review", "approve", url, "--config", str(config))
        assert run.returncode == 1
        assert f"{url} is in none of the configured sinks" in run.stderr
        assert f"out = s3://{bucket}/campaign/" in run.stderr
        assert f"local = {tmp_path / 'local'}" in run.stderr
    assert manifest(s3, bucket) == before


def test_a_url_with_no_manifest_says_where_it_looked(
    tmp_path: Path, s3: Any, s3_review: dict[str, Any]
):
    bucket, config = s3_review["bucket"], s3_review["config"]
    url = f"s3://{bucket}/campaign/product-lifestyle/nothing-here.png"
    run = darkroom(tmp_path, "review", "approve", url, "--config", str(config))
    assert run.returncode == 1
    assert f"no manifest.json at or above {url}" in run.stderr


def test_a_source_url_without_a_variant_lists_the_variants(
    tmp_path: Path, s3: Any, s3_review: dict[str, Any]
):
    run = darkroom(tmp_path, "review", "approve", s3_review["url"], "--config",
                   str(s3_review["config"]))  # fmt: skip
    assert run.returncode == 1
    assert "name the variants" in run.stderr and "explore-sd-turbo-1" in run.stderr


def test_an_s3_url_needs_a_config_here_or_named(tmp_path: Path, s3_review: dict[str, Any]):
    url = f"{s3_review['url']}/explore-sd-turbo-1.png"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = darkroom(elsewhere, "review", "approve", url)
    assert run.returncode == 1
    assert "needs the config that names its sink" in run.stderr and "--config" in run.stderr
    # where darkroom.yaml is, it is the config
    run = darkroom(tmp_path, "review", "approve", url)
    assert run.returncode == 0, run.stderr
