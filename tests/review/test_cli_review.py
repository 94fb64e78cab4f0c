"""``darkroom review approve|reject`` through the real CLI, on a folder sink."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.outputs import page as review_page
from daemon.review import decisions as review_decisions

from .conftest import as_manifest


def darkroom(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow  # runs the darkroom CLI as a subprocess
def test_approve_then_reject(review_sink: Any) -> None:
    sink, manifest, manifest_path = review_sink
    review_page.publish(sink, as_manifest(manifest), manifest_path=manifest_path)
    source_dir = sink.root / "product-lifestyle/lamp"
    run = darkroom(
        "review",
        "approve",
        str(source_dir),
        "explore-sd-turbo-1",
        "explore-kontext-2.png",
        "--note",
        "hero <shot>",
        "--by",
        "ann",
    )
    assert run.returncode == 0, run.stderr
    copy = sink.root / "approved/product-lifestyle/lamp/explore-sd-turbo-1.png"
    assert copy.read_bytes() == (source_dir / "explore-sd-turbo-1.png").read_bytes()
    assert (sink.root / "approved/product-lifestyle/lamp/explore-kontext-2.png").is_file()
    saved = json.loads((source_dir / "manifest.json").read_text())
    decision = saved["decisions"]["product-lifestyle/lamp/explore-sd-turbo-1.png"]
    assert (decision["decision"], decision["by"], decision["note"]) == (
        "approved",
        "ann",
        "hero <shot>",
    )
    assert saved["steps"] == manifest["steps"]  # nothing else changed
    page = (source_dir / "index.html").read_text()
    assert 'class="badge approved"' in page and "hero &lt;shot&gt;" in page
    index = json.loads((sink.root / "index.json").read_text())
    assert index["entries"][0]["approved"] == 2

    run = darkroom(
        "review",
        "reject",
        str(source_dir / "manifest.json"),
        "product-lifestyle/lamp/explore-sd-turbo-1.png",
    )
    assert run.returncode == 0, run.stderr
    assert not copy.exists()
    saved = json.loads((source_dir / "manifest.json").read_text())
    assert (
        saved["decisions"]["product-lifestyle/lamp/explore-sd-turbo-1.png"]["decision"]
        == "rejected"
    )
    page = (source_dir / "index.html").read_text()
    assert 'class="badge rejected"' in page and 'class="badge approved"' in page  # kontext-2 still


@pytest.mark.slow  # runs the darkroom CLI as a subprocess
def test_unknown_and_ambiguous_variants_name_the_choices(review_sink: Any) -> None:
    sink, manifest, manifest_path = review_sink
    target = str(sink.root / manifest_path)
    before = (sink.root / manifest_path).read_bytes()
    run = darkroom("review", "approve", target, "explore-9")
    assert run.returncode == 1
    assert (
        f"no variant 'explore-9' in {sink.root / manifest_path}; variants: explore-sd-turbo-0"
        in run.stderr
    )
    run = darkroom("review", "approve", target, "explore-0")  # three models made an explore-0
    assert run.returncode == 1 and "ambiguous" in run.stderr
    run = darkroom("review", "approve", target, "wiggle-0", "nope")  # all or nothing
    assert run.returncode == 1 and "'nope'" in run.stderr
    assert (sink.root / manifest_path).read_bytes() == before
    run = darkroom("review", "approve", str(sink.root / "nowhere"), "x")
    assert run.returncode == 1 and "no such manifest or folder" in run.stderr


def test_short_names_prefer_step_and_variant() -> None:
    def output(path: str, step: str, model: str) -> dict[str, Any]:
        return {"path": path, "step": step, "model": model, "variant": 0, "seed": 1}

    manifest = as_manifest(
        {
            "steps": [
                {
                    "name": "explore",
                    "model": "a",
                    "outputs": [output("r/s/e-a-0.png", "explore", "a")],
                },
                {
                    "name": "refine",
                    "model": "b",
                    "outputs": [output("r/s/r-b-0.png", "refine", "b")],
                },
            ]
        }
    )
    assert review_page.short_names(manifest) == {
        "r/s/e-a-0.png": "explore-0",
        "r/s/r-b-0.png": "refine-0",
    }
    assert review_decisions.resolve_variant(manifest, "refine-0", "m") == "r/s/r-b-0.png"
    assert review_decisions.resolve_variant(manifest, "e-a-0", "m") == "r/s/e-a-0.png"


@pytest.mark.slow  # runs the darkroom CLI as a subprocess
def test_config_mode_finds_the_folder_sink(review_sink: Any, tmp_path: Path) -> None:
    sink, manifest, manifest_path = review_sink
    config = tmp_path / "darkroom.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nsinks:\n  review:\n    type: folder\n    path: {sink.root}\n"
    )
    run = darkroom(
        "review", "approve", "review:" + manifest_path, "wiggle-0", "--config", str(config)
    )
    assert run.returncode == 0, run.stderr + run.stdout
    assert (sink.root / "approved/product-lifestyle/lamp/wiggle-anim-0.webp").is_file()
