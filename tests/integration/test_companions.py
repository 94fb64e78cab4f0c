"""Several inputs per step: a rule pairs the arriving photo with companions next to it
(``product.png`` + ``product.scene.png``); the group is complete when every required
companion has arrived (whichever settles last starts it); a changed companion is a new
round; every input is in the manifest and on the page; `check` refuses models that take one
image."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

from daemon.config.profiles import resolve_profiles
from daemon.config.settings import load_settings
from daemon.rules.inputs import input_problems
from daemon.rules.load import load_rules
from tests.conftest import make_image

PAIRED = """\
name: scenes
match: {source: drop, exclude: ["**/*.scene.png"]}
companions:
  scene: "{stem}.scene.png"
prompt: "{stem} in its scene"
steps:
  - {name: plain, model: stub, seeds: [1]}
  - {name: composite, input: source, model: stub, seeds: [1], companions: [scene]}
output: {sink: out}
"""
WHERE = "scenes/product.png/manifest.json"


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def outcome(harness, key: str) -> str | None:
    db = sqlite3.connect(f"file:{harness.root / 'state' / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT outcome FROM seen WHERE key=?", (key,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def test_a_photo_waits_for_its_companion_and_runs_with_it_when_it_arrives(harness):
    harness.rule("r.yaml", PAIRED)
    harness.start()
    make_image(harness.drop / "product.png")
    waiting = harness.wait(
        lambda: (outcome(harness, "product.png") or "").startswith("waiting"),
        timeout=60,
        what="the photo's waiting record",
    )
    assert waiting
    reason = outcome(harness, "product.png")
    assert reason is not None and "companion 'scene' (product.scene.png) has not arrived" in reason
    assert not (harness.out / WHERE).exists()

    make_image(harness.drop / "product.scene.png", color=(0, 255, 0))
    manifest = harness.manifest("scenes", "product", where=WHERE, timeout=60)
    assert manifest["status"] == "done"
    plain, composite = manifest["steps"]
    assert "companions" not in plain
    (companion,) = composite["companions"]
    assert companion["name"] == "scene" and companion["key"] == "product.scene.png"
    scene_bytes = (harness.drop / "product.scene.png").read_bytes()
    import hashlib

    assert companion["sha256"] == hashlib.sha256(scene_bytes).hexdigest()
    a = pixels(harness.out / plain["outputs"][0]["path"])
    b = pixels(harness.out / composite["outputs"][0]["path"])
    assert np.abs(a - b).mean() > 10  # the companion reached the model
    page = (harness.out / manifest["page"]).read_text()
    assert "with: product.scene.png" in page
    # The companion is not a photo of its own here (excluded), and never quarantined.
    assert (harness.drop / "product.scene.png").exists()

    # A changed companion is new work: the photo's folder gets a new round.
    make_image(harness.drop / "product.scene.png", color=(0, 0, 255))
    path = harness.out / WHERE
    harness.wait(
        lambda: json.loads(path.read_text())["plan_id"] != manifest["plan_id"],
        timeout=60,
        what="a new round after the companion changed",
    )
    again = json.loads(path.read_text())
    assert again["steps"][1]["companions"][0]["sha256"] != companion["sha256"]
    assert len(again["rounds"]) >= 1


def test_an_optional_glob_companion_takes_the_folders_other_images(harness):
    harness.rule(
        "r.yaml",
        PAIRED.replace(
            'scene: "{stem}.scene.png"', 'shots: {path: "*.png", required: false, max: 3}'
        )
        .replace("companions: [scene]", "companions: [shots]")
        .replace('exclude: ["**/*.scene.png"]', 'include: ["**/hero.png"]'),
    )
    make_image(harness.drop / "set" / "a.png", color=(0, 255, 0))
    make_image(harness.drop / "set" / "b.png", color=(0, 0, 255))
    make_image(harness.drop / "set" / "hero.png")
    harness.start()
    manifest = harness.manifest(
        "scenes", "hero", where="scenes/set/hero.png/manifest.json", timeout=60
    )
    assert manifest["status"] == "done"
    keys = [c["key"] for c in manifest["steps"][1]["companions"]]
    assert keys == ["set/a.png", "set/b.png"]


def test_check_refuses_models_that_cannot_take_the_steps_inputs(tmp_path: Path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "pair.yaml").write_text(
        textwrap.dedent(PAIRED).replace(
            "model: stub, seeds: [1], companions", "model: tiny, seeds: [1], companions"
        )
    )
    (rules_dir / "brief.yaml").write_text(
        "name: drafts\nmatch: {source: drop, briefs: true}\nsteps:\n  - {name: d, model: tiny}\n"
        "output: {sink: out}\n"
    )
    (rules_dir / "photo.yaml").write_text(
        "name: photo\nmatch: {source: drop}\nsteps:\n  - {name: d, model: tiny-t2i}\n"
        "output: {sink: out}\n"
    )
    config = tmp_path / "darkroom.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nrules_dir: {rules_dir}\n"
        f"sources: {{drop: {{path: {tmp_path / 'drop'}}}}}\nsinks: {{out: {{path: {tmp_path / 'out'}}}}}\n"
    )
    settings = load_settings(config)
    problems = input_problems(load_rules(rules_dir), resolve_profiles(settings))
    text = "\n".join(str(p) for p in problems)
    assert (
        "pair.yaml:" in text and "takes one image, but step 'composite' gives it companions" in text
    )
    assert "brief.yaml:" in text and "needs an input image, but this rule takes briefs" in text
    assert "photo.yaml:" in text and "makes images from a prompt alone" in text
