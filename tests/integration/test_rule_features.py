"""Every rule feature through the real pipeline (in-process daemon, stub model)."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import numpy as np
from PIL import Image, ImageCms

from tests.conftest import make_image

PROFILES = """\
profiles:
  stub-b: {task: stub, model: stub-b, max_side: 64}
"""


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_sidecar_txt_prompt_and_editing_it_keeps_the_previous_round(harness):
    harness.rule(
        "r.yaml",
        """\
        name: r
        match: {source: drop}
        prompt: "rule prompt for {stem}"
        steps: [{name: one, model: stub, seeds: [1]}]
        output: {sink: out}
        """,
    )
    harness.start()
    (harness.drop / "cat.txt").write_text("a cat wearing a crown")
    make_image(harness.drop / "cat.png")
    first = harness.manifest("r", "cat")
    assert first["steps"][0]["prompt"] == "a cat wearing a crown"
    assert first["source"]["sidecar"]["key"] == "cat.txt"

    (harness.drop / "cat.txt").write_text("a cat wearing sunglasses")
    second = harness.wait(
        lambda: (m := harness.manifest("r", "cat")) and m["plan_id"] != first["plan_id"] and m,
        what="the second round",
    )
    assert second["steps"][0]["prompt"] == "a cat wearing sunglasses"
    assert [r["round"] for r in second["rounds"]] == [1]
    assert second["rounds"][0]["prompt"] == "a cat wearing a crown"  # what round 1 asked for
    kept = harness.out / second["rounds"][0]["outputs"][0]
    assert kept.exists() and kept.parent.name == "1"


def test_json_sidecar_vars_seed_and_steps(harness):
    harness.rule(
        "r.yaml",
        """\
        name: r
        match: {source: drop, sidecar: required}
        vars: {room: kitchen}
        prompt: "{product} in a {room}"
        steps: [{name: one, model: stub, variants: 2}]
        output: {sink: out}
        """,
    )
    harness.start()
    (harness.drop / "chair.json").write_text(
        json.dumps({"vars": {"product": "oak chair", "room": "loft"}, "seed": 40, "steps": 3})
    )
    make_image(harness.drop / "chair.png")
    make_image(harness.drop / "lonely.png")  # no sidecar: not taken by this rule
    m = harness.manifest("r", "chair")
    assert m["steps"][0]["prompt"] == "oak chair in a loft"
    assert m["steps"][0]["seeds"] == [40, 41]
    assert m["steps"][0]["outputs"][0]["params"]["steps"] == 3
    harness.wait(lambda: harness.ledger.seen("lonely.png"), what="lonely.png to be decided on")
    assert harness.ledger.plans("lonely.png") == []
    assert not (harness.out / "r" / "lonely").exists()


def test_a_variable_the_sidecar_lacks_fails_the_job_naming_it(harness):
    harness.rule(
        "r.yaml",
        """\
        name: r
        match: {source: drop, sidecar: required}
        prompt: "{product} on a table"
        steps: [{name: one, model: stub}]
        output: {sink: out}
        """,
    )
    harness.start()
    (harness.drop / "vase.yaml").write_text("vars: {colour: blue}\n")
    make_image(harness.drop / "vase.png")
    m = harness.manifest("r", "vase")
    assert m["status"] == "failed"
    assert "unknown variable {product}" in m["steps"][0]["error"]


def test_compare_step_runs_each_model_and_pick_feeds_the_next_step(harness):
    harness.rule(
        "r.yaml",
        """\
        name: r
        match: {source: drop}
        prompt: "{stem}"
        steps:
          - {name: explore, models: [stub, stub-b], variants: 2, seed: 3}
          - {name: refine, model: stub, pick: [1, 2], seeds: [9]}
        output: {sink: out}
        """,
    )
    harness.start(PROFILES)
    make_image(harness.drop / "lamp.png")
    m = harness.manifest("r", "lamp")
    assert m["status"] == "done"
    assert [(s["name"], s["model"]) for s in m["steps"]] == [
        ("explore", "stub"),
        ("explore", "stub-b"),
        ("refine", "stub"),
    ]
    explore_paths = [o["path"] for s in m["steps"][:2] for o in s["outputs"]]
    assert explore_paths == [
        "r/lamp.png/explore-stub-0.png",
        "r/lamp.png/explore-stub-1.png",
        "r/lamp.png/explore-stub-b-0.png",
        "r/lamp.png/explore-stub-b-1.png",
    ]
    refine = m["steps"][2]["outputs"]
    assert [o["input"] for o in refine] == explore_paths[1:3]
    assert all((harness.out / p).exists() for p in explore_paths)


def test_references_and_masks_reach_the_model(harness):
    refs = harness.rules_dir / "refs"
    make_image(refs / "face.png", color=(0, 255, 0))
    harness.rule(
        "r.yaml",
        """\
        name: r
        match: {source: drop}
        steps:
          - {name: plain, model: stub, seeds: [1]}
          - {name: refd, input: source, model: stub, seeds: [1], references: ["refs/*.png"]}
          - {name: masked, input: source, model: stub, seeds: [1], mask: sidecar}
        output: {sink: out}
        """,
    )
    harness.start()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # left half may change
    mask.save(harness.drop / "pot.mask.png")
    make_image(harness.drop / "pot.png")
    m = harness.manifest("r", "pot")
    assert m["status"] == "done", m
    plain, refd, masked = (pixels(harness.out / s["outputs"][0]["path"]) for s in m["steps"])
    source = pixels(harness.drop / "pot.png")
    assert np.abs(plain - refd).mean() > 10  # the green reference shows through
    assert m["steps"][1]["references"][0].endswith("refs/face.png")
    assert np.abs(masked[:, 40:] - source[:, 40:]).max() <= 2  # right half kept
    assert np.abs(masked[:, :24] - source[:, :24]).mean() > 10  # left half changed
    assert not (harness.out / "r" / "pot.mask").exists()  # the mask is not an input of its own


def test_alpha_mask_and_missing_sidecar_mask_reason(harness):
    harness.rule(
        "r.yaml",
        """\
        name: r
        match: {source: drop}
        steps: [{name: one, model: stub, seeds: [1], mask: alpha}]
        output: {sink: out}
        """,
    )
    harness.start()
    rgba = Image.new("RGBA", (64, 64), (200, 100, 50, 255))
    rgba.paste((200, 100, 50, 0), (0, 0, 64, 32))  # top half transparent: to change
    rgba.save(harness.drop / "cut.png")
    make_image(harness.drop / "opaque.jpg")
    m = harness.manifest("r", "cut")
    assert m["status"] == "done"
    bad = harness.manifest("r", "opaque")
    assert bad["status"] == "failed" and "no alpha channel" in bad["steps"][0]["error"]


def test_output_format_quality_and_icc_profile(harness):
    harness.rule(
        "r.yaml",
        """\
        name: r
        match: {source: drop}
        steps: [{name: one, model: stub, seeds: [1]}]
        output: {sink: out, format: jpeg, quality: 70}
        """,
    )
    harness.start()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = Image.new("RGB", (64, 64), (120, 30, 200))
    image.save(harness.drop / "tagged.jpg", icc_profile=srgb)
    m = harness.manifest("r", "tagged")
    out = harness.out / m["steps"][0]["outputs"][0]["path"]
    assert out.suffix == ".jpg"
    with Image.open(out) as written:
        assert written.format == "JPEG"
        assert written.info.get("icc_profile") == srgb


def test_match_conditions_priority_and_stop(harness):
    harness.rule(
        "a-portrait.yaml",
        """\
        name: portrait
        priority: 5
        stop: true
        match: {source: drop, orientation: portrait, min_height: 60}
        steps: [{name: one, model: stub, seeds: [1]}]
        output: {sink: out}
        """,
    )
    harness.rule(
        "b-any.yaml",
        """\
        name: any
        match: {source: drop, types: [png]}
        steps: [{name: one, model: stub, seeds: [1]}]
        output: {sink: out}
        """,
    )
    harness.start()
    make_image(harness.drop / "tall.png", (40, 64))
    make_image(harness.drop / "wide.png", (64, 40))
    make_image(harness.drop / "wide.jpg", (64, 40))
    harness.manifest("portrait", "tall")
    harness.manifest("any", "wide")
    for key in ("tall.png", "wide.png", "wide.jpg"):
        harness.wait(lambda key=key: harness.ledger.seen(key), what=f"{key} to be decided on")
    assert [p["rule"] for p in harness.ledger.plans("tall.png")] == ["portrait"]
    assert [p["rule"] for p in harness.ledger.plans("wide.png")] == ["any"]
    assert harness.ledger.plans("wide.jpg") == []
    assert not (harness.out / "any" / "tall").exists()  # portrait stopped the search
    assert not (harness.out / "portrait" / "wide").exists()
    assert len(list((harness.out / "any").iterdir())) == 1  # wide.jpg is jpeg, not png


def test_on_success_move_puts_the_source_in_processed(harness):
    harness.rule(
        "r.yaml",
        """\
        name: r
        match: {source: drop}
        steps: [{name: one, model: stub, seeds: [1]}]
        output: {sink: out, on_success: move}
        """,
    )
    harness.start()
    make_image(harness.drop / "shoot" / "a.png")
    harness.manifest("r", "a")
    harness.wait(
        lambda: (harness.drop / ".processed" / "shoot" / "a.png").exists(), what="the move"
    )
    assert not (harness.drop / "shoot" / "a.png").exists()
    # A file that arrives after the move is decided on after anything the move could cause.
    make_image(harness.drop / "shoot" / "later.png")
    harness.wait(lambda: harness.ledger.seen("shoot/later.png"), what="a later file")
    keys = [row["key"] for row in harness.ledger.rows("SELECT key FROM seen")]
    assert sorted(keys) == ["shoot/a.png", "shoot/later.png"]  # not again from .processed
    assert len(list((harness.out / "r").iterdir())) == 1  # not processed again from .processed


def test_hot_reload_valid_change_applies_invalid_keeps_running(harness):
    rule = harness.rule(
        "r.yaml",
        """\
        name: r
        match: {source: drop}
        prompt: "first {stem}"
        steps: [{name: one, model: stub, seeds: [1]}]
        output: {sink: out}
        """,
    )
    app = harness.start()
    make_image(harness.drop / "a.png")
    assert harness.manifest("r", "a")["steps"][0]["prompt"] == "first a"

    rule.write_text(rule.read_text().replace("first", "second"))
    harness.wait(lambda: app.rules.get("r").prompt.startswith("second"), what="the reload")
    make_image(harness.drop / "b.png", color=(1, 2, 3))  # new bytes: same bytes never run twice
    assert harness.manifest("r", "b")["steps"][0]["prompt"] == "second b"

    rule.write_text(rule.read_text().replace("steps:", "stepz:"))
    harness.wait(lambda: app.rules_error, what="the invalid reload to be reported")
    assert "r.yaml:" in app.rules_error
    make_image(harness.drop / "c.png", color=(4, 5, 6))
    assert harness.manifest("r", "c")["steps"][0]["prompt"] == "second c"  # old rules still run

    rule.write_text(rule.read_text().replace("stepz:", "steps:").replace("second", "third"))
    harness.wait(
        lambda: app.rules_error is None and app.rules.get("r").prompt.startswith("third"),
        what="the fix",
    )


def test_a_bad_input_is_quarantined_with_its_reason_and_a_fixed_one_runs(harness):
    harness.rule(
        "r.yaml",
        """\
        name: r
        match: {source: drop}
        steps: [{name: one, model: stub, seeds: [1]}]
        output: {sink: out}
        """,
    )
    app = harness.start()
    (harness.drop / "sub").mkdir()
    (harness.drop / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    moved = harness.drop / ".quarantine" / "sub" / "broken.png"
    harness.wait(lambda: moved.exists(), what="the quarantine")
    reason = json.loads((moved.parent / "broken.png.reason.json").read_text())
    assert reason["rule"] == "r" and "broken.png" in reason["reason"] and reason["attempts"] == 1
    assert not (harness.drop / "sub" / "broken.png").exists()
    assert app.ledger.quarantined()[0]["key"] == "sub/broken.png"
    make_image(harness.drop / "sub" / "broken.png")  # fixed and dropped again
    harness.wait(
        lambda: (m := harness.manifest("r", "broken")) and m["status"] == "done",
        what="the fixed file",
    )


def test_animated_inputs_first_frame_or_reject(harness):
    harness.rule(
        "first.yaml",
        """\
        name: first
        match: {source: drop, include: ["a/*"]}
        steps: [{name: one, model: stub, seeds: [1]}]
        output: {sink: out}
        """,
    )
    harness.rule(
        "strict.yaml",
        """\
        name: strict
        match: {source: drop, include: ["b/*"], animated: reject}
        steps: [{name: one, model: stub, seeds: [1]}]
        output: {sink: out}
        """,
    )
    harness.start()
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    for folder in ("a", "b"):
        (harness.drop / folder).mkdir()
        frames[0].save(
            harness.drop / folder / "spin.gif",
            save_all=True,
            append_images=frames[1:],
            duration=100,
        )
    assert harness.manifest("first", "spin")["status"] == "done"
    strict = harness.manifest("strict", "spin")
    assert (
        strict["status"] == "failed" and "animated image (3 frames)" in strict["steps"][0]["error"]
    )


def test_hostile_names_stay_inside_the_sink(harness):
    harness.rule(
        "r.yaml",
        """\
        name: r
        match: {source: drop}
        steps: [{name: one, model: stub, seeds: [1]}]
        output: {sink: out, path: "{rule}/{dir}/{stem}/{step}-{variant}.png"}
        """,
    )
    harness.start()
    names = [
        "line\nbreak.png",
        "caf\u00e9 au lait.png",
        "cafe\u0301 noir.png",
        "x" * 200 + ".png",
        "rtl\u202egnp.png",
    ]
    for i, name in enumerate(names):
        make_image(
            harness.drop / "deep" / name, color=(i * 40, 10, 10)
        )  # distinct bytes: distinct work
    harness.wait(
        lambda: len(list(harness.out.rglob("manifest.json"))) == len(names),
        timeout=30,
        what="every hostile name processed",
    )
    for manifest in harness.out.rglob("manifest.json"):
        assert json.loads(manifest.read_text())["status"] == "done"
    assert all(p.resolve().is_relative_to(harness.out.resolve()) for p in harness.out.rglob("*"))
    assert (harness.out / "r" / "deep" / "line_break").is_dir()


def test_the_mood_matrix_example_runs_per_product_references_and_every_mood(harness):
    import shutil
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "rules" / "examples"
    shutil.copy(examples / "mood-matrix.yaml", harness.rules_dir)
    shutil.copytree(examples / "refs" / "products", harness.rules_dir / "refs" / "products")
    harness.start(
        """\
        profiles:
          sdxl-ip-adapter: {task: stub, model: stub, max_side: 64}
          sd-turbo: {task: stub, model: stub, max_side: 64}
        """
    )
    make_image(harness.drop / "moods" / "oak-chair" / "hero.jpg")
    m = harness.manifest("mood-matrix", "hero")
    assert m["status"] == "done", [(s["name"], s["error"]) for s in m["steps"]]
    explore = [s for s in m["steps"] if s["name"] == "explore"]
    assert [s["variation"] for s in explore] == [
        "calm-summer",
        "calm-winter",
        "bold-summer",
        "bold-winter",
    ]
    assert explore[3]["prompt"] == "oak-chair product photo, bold mood, winter light"
    assert all(s["references"][0].endswith("refs/products/oak-chair/front.png") for s in explore)
    names = sorted(PurePosixPath(s["outputs"][0]["path"]).name for s in m["steps"])
    assert names == [
        "explore-bold-summer-0.png",
        "explore-bold-winter-0.png",
        "explore-calm-summer-0.png",
        "explore-calm-winter-0.png",
        "refine-0.png",
    ]
