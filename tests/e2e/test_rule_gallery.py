"""Every example in rules/examples/ passes `darkroom check` and runs end to end in the real
daemon, on the tiny twins of its models (examples/gallery.yaml maps them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml
from PIL import Image

from tests.conftest import make_image
from tests.e2e.conftest import Daemon, wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def gallery(tmp_path: Path, model_cache: Path) -> Daemon:
    config = yaml.safe_load((REPO / "examples" / "gallery.yaml").read_text())
    config.update(
        {
            "state_dir": str(tmp_path / "state"),
            "rules_dir": str(REPO / "rules" / "examples"),
            "model_cache": str(model_cache),
            "sources": {
                "drop": {"type": "folder", "path": str(tmp_path / "drop"), "quiet_period": 0.4}
            },
            "sinks": {"out": {"type": "folder", "path": str(tmp_path / "out")}},
            "worker": {"device": "cpu", "threads": 2, "stop_timeout": 30},
            "log": {"format": "json"},
        }
    )
    (tmp_path / "drop").mkdir()
    path = tmp_path / "gallery.yaml"
    path.write_text(yaml.safe_dump(config))
    daemon = Daemon(tmp_path, path, tmp_path / "daemon.log")
    yield daemon
    daemon.kill()


def test_every_example_passes_check():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon.cli",
            "check",
            "-c",
            str(REPO / "examples" / "gallery.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    examples = len(list((REPO / "rules" / "examples").glob("*.yaml")))
    assert f"ok: {examples} rule(s)" in result.stdout  # every example was loaded and checked
    for rule in (REPO / "rules" / "examples").glob("*.yaml"):
        first = rule.read_text().splitlines()[0]
        assert first.startswith("# For:"), f"{rule.name} should start by saying who it is for"


def test_every_example_runs_end_to_end(gallery, tmp_path):
    gallery.start(ready_timeout=300)
    drop, out = tmp_path / "drop", tmp_path / "out"
    make_image(drop / "sketches" / "dragon.png")
    make_image(drop / "campaign" / "spring" / "hero.png", color=(10, 120, 90))
    (drop / "packshots").mkdir()
    (drop / "packshots" / "chair.yaml").write_text("vars: {product: oak chair}\n")
    make_image(drop / "packshots" / "chair.png", color=(200, 180, 150))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    (drop / "edits").mkdir()
    mask.save(drop / "edits" / "window.mask.png")
    make_image(drop / "edits" / "window.png", color=(90, 90, 200))
    make_image(drop / "stills" / "beach.png", color=(230, 200, 120))
    make_image(drop / "compare" / "bottle.png", color=(30, 30, 30))
    (drop / "briefs").mkdir()
    (drop / "briefs" / "spring.brief.csv").write_text(
        "name,prompt,size,count\noil,olive oil on a terrace,16:9,1\n"
    )
    make_image(drop / "scenes" / "mug.scene.png", color=(20, 160, 40))
    make_image(drop / "scenes" / "mug.png", color=(240, 240, 240))

    expected = {
        "solo-explore/dragon",
        "brand-identity/hero",
        "packshot-lifestyle/chair",
        "designer-edit/window",
        "story-animate/beach",
        "compare/bottle",
        "brief-drafts/spring.brief",
        "product-in-scene/mug",
    }

    def manifests():
        # Keyed "rule/stem": where each rule puts its folder is its own business (the default
        # is {rule}/{dir}/{stem}.{ext}; some examples name theirs).
        found = {}
        for path in out.glob("**/manifest.json"):
            if "rounds" in path.relative_to(out).parts:
                continue
            manifest = json.loads(path.read_text())
            stem = PurePosixPath(manifest["source"]["key"]).stem
            found[f"{manifest['rule']['name']}/{stem}"] = manifest
        return found if expected <= set(found) else None

    found = wait_for(manifests, 600, "a manifest from every example rule")
    for name, manifest in found.items():
        assert manifest["status"] == "done", (
            name,
            [(s["name"], s["error"]) for s in manifest["steps"]],
        )

    def outputs(name, step=None):
        return [o for s in found[name]["steps"] if step in (None, s["name"]) for o in s["outputs"]]

    assert len(outputs("solo-explore/dragon")) == 8
    brand = outputs("brand-identity/hero")
    assert len(brand) == 4 and all(o["path"].endswith(".jpg") for o in brand)
    assert found["brand-identity/hero"]["steps"][0]["references"][-1].endswith("refs/mascot-2.png")
    assert found["brand-identity/hero"]["rule"]["prompt"].startswith(
        "the Acme mascot in an autumn spring scene"
    )
    assert found["packshot-lifestyle/chair"]["rule"]["prompt"].startswith("oak chair on a sunlit")
    assert Image.open(out / outputs("packshot-lifestyle/chair", "square")[0]["path"]).size == (
        1080,
        1080,
    )
    assert Image.open(out / outputs("packshot-lifestyle/chair", "story")[0]["path"]).size == (
        1080,
        1920,
    )
    wait_for(
        lambda: (drop / ".processed" / "packshots" / "chair.png").exists(),
        30,
        "the packshot to be moved",
    )
    assert [s["mask"] for s in found["designer-edit/window"]["steps"]] == [None, "sidecar"]
    clip = outputs("story-animate/beach", "animate")
    assert len(clip) == 1 and clip[0]["kind"] == "video" and clip[0]["frames"] == 14
    from backends import video_io

    probe = video_io.probe((out / clip[0]["path"]).read_bytes(), "mp4")
    assert probe["frames"] == 14
    assert (out / clip[0]["poster"]).exists()
    compare = found["compare/bottle"]["steps"]
    assert [s["model"] for s in compare] == ["sd-turbo", "sdxl-turbo", "flux-schnell"]
    assert all(len(s["outputs"]) == 4 for s in compare)
    sheet = Image.open(out / found["compare/bottle"]["sheet"])
    assert sheet.width > sheet.height
    brief = found["brief-drafts/spring.brief"]
    assert (
        brief["source"]["brief"]["row"] == "oil" and len(outputs("brief-drafts/spring.brief")) == 2
    )
    draft = Image.open(out / outputs("brief-drafts/spring.brief", "draft")[0]["path"])
    assert draft.width > draft.height  # the row's 16:9
    scene = found["product-in-scene/mug"]["steps"][0]
    assert [c["key"] for c in scene["companions"]] == ["scenes/mug.scene.png"]
    assert gallery.stop() == 0
