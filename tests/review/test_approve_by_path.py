"""``darkroom review approve /path/to/an/output.png``: the local path of an output (or of its
approval copy) in a folder sink names its manifest and the variant (real CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # runs the darkroom CLI as a subprocess

SOURCE = "product-lifestyle/lamp"


def darkroom(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in ``cwd`` (its darkroom.yaml, if any, is the config), with this process's
    environment (tests/s3 puts the moto credentials there)."""
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def decision(root: Path, output: str) -> dict[str, Any]:
    saved = json.loads((root / SOURCE / "manifest.json").read_text())
    return dict(saved["decisions"][f"{SOURCE}/{output}"])


def test_an_outputs_path_is_enough_without_a_config(review_sink: Any, tmp_path: Path) -> None:
    sink, _, _ = review_sink
    output = sink.root / SOURCE / "explore-sd-turbo-1.png"

    run = darkroom(tmp_path, "review", "approve", str(output), "--by", "ann")

    assert run.returncode == 0, run.stderr
    copy = sink.root / "approved" / SOURCE / "explore-sd-turbo-1.png"
    assert copy.read_bytes() == output.read_bytes()
    assert decision(sink.root, "explore-sd-turbo-1.png")["decision"] == "approved"

    # the approval copy's own path takes the decision back to its variant
    run = darkroom(tmp_path, "review", "reject", str(copy))
    assert run.returncode == 0, run.stderr
    assert not copy.exists()
    assert decision(sink.root, "explore-sd-turbo-1.png")["decision"] == "rejected"


def test_an_outputs_path_in_a_configured_folder_sink(review_sink: Any, tmp_path: Path) -> None:
    sink, _, _ = review_sink
    config = tmp_path / "darkroom.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nsinks:\n  review: {{type: folder, path: {sink.root}}}\n"
    )
    output = sink.root / SOURCE / "wiggle-anim-0.webp"
    run = darkroom(tmp_path, "review", "star", str(output), "--config", str(config))
    assert run.returncode == 0, run.stderr
    assert decision(sink.root, "wiggle-anim-0.webp")["starred"] is True

    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(output.read_bytes())
    run = darkroom(tmp_path, "review", "star", str(outside), "--config", str(config))
    assert run.returncode == 1
    assert f"{outside} is not inside a configured sink" in run.stderr
    assert f"review = {sink.root}" in run.stderr


def test_the_page_or_sheet_path_still_asks_for_the_variant(
    review_sink: Any, tmp_path: Path
) -> None:
    sink, _, _ = review_sink
    before = (sink.root / SOURCE / "manifest.json").read_bytes()
    run = darkroom(tmp_path, "review", "approve", str(sink.root / SOURCE / "sheet.png"))
    assert run.returncode == 1
    assert "name the variants" in run.stderr and "wiggle-0" in run.stderr
    assert (sink.root / SOURCE / "manifest.json").read_bytes() == before


def test_a_flat_layouts_output_finds_its_own_manifest(tmp_path: Path) -> None:
    """Flat layout: several sources' manifests and outputs share one folder."""
    root = tmp_path / "out"
    (root / "explore").mkdir(parents=True)
    for stem in ("hero", "side"):
        (root / f"explore/{stem}-0.png").write_bytes(b"png " + stem.encode())
        (root / f"explore/{stem}-manifest.json").write_text(
            json.dumps(
                {
                    "source": {"key": f"{stem}.jpg"},
                    "rule": {"name": "explore"},
                    "status": "done",
                    "steps": [
                        {
                            "name": "explore",
                            "model": "tiny",
                            "outputs": [
                                {
                                    "path": f"explore/{stem}-0.png",
                                    "step": "explore",
                                    "model": "tiny",
                                    "variant": 0,
                                    "seed": 1,
                                }
                            ],
                        }
                    ],
                }
            )
        )
    run = darkroom(tmp_path, "review", "approve", str(root / "explore/side-0.png"))
    assert run.returncode == 0, run.stderr
    saved = json.loads((root / "explore/side-manifest.json").read_text())
    assert saved["decisions"]["explore/side-0.png"]["decision"] == "approved"
    assert "decisions" not in json.loads((root / "explore/hero-manifest.json").read_text())
    assert (root / "approved/explore/side-0.png").read_bytes() == b"png side"
