"""Prompt variations: a step fans out over a list of prompts or a prompt matrix, each
variation its own unit with its own prompt, output name and provenance."""

from __future__ import annotations

import json
import textwrap

import pytest

from daemon.errors import RuleError
from daemon.outputs import provenance
from daemon.outputs.manifest import parse_manifest
from daemon.outputs.sheet_layout import layout_sheet
from daemon.rules.load import load_rules
from tests.conftest import make_image

MATRIX = """\
name: moods
match: {source: drop}
prompt: "{stem} on a table, {mood} mood, {season} light"
steps:
  - name: explore
    model: stub
    seeds: [5]
    prompt_matrix: {mood: [calm, bold], season: [summer, Winter Dusk]}
  - {name: refine, model: stub, seeds: [9], pick: first, prompt: "{stem}, sharper"}
output: {sink: out}
"""


def test_a_prompt_matrix_runs_every_combination_with_its_own_prompt_and_name(harness):
    harness.rule("m.yaml", MATRIX)
    harness.start()
    make_image(harness.drop / "vase.png")
    m = harness.manifest("moods", "vase")
    assert m["status"] == "done", [(s["name"], s["error"]) for s in m["steps"]]
    assert m["rule"]["prompt"] == "vase on a table, {mood} mood, {season} light"
    explore = [s for s in m["steps"] if s["name"] == "explore"]
    assert [(s["variation"], s["prompt"]) for s in explore] == [
        ("calm-summer", "vase on a table, calm mood, summer light"),
        ("calm-winter-dusk", "vase on a table, calm mood, Winter Dusk light"),
        ("bold-summer", "vase on a table, bold mood, summer light"),
        ("bold-winter-dusk", "vase on a table, bold mood, Winter Dusk light"),
    ]
    paths = [s["outputs"][0]["path"] for s in explore]
    assert paths == [
        f"moods/vase.png/explore-{v}-0.png"
        for v in ("calm-summer", "calm-winter-dusk", "bold-summer", "bold-winter-dusk")
    ]
    assert all(s["seeds"] == [5] for s in explore)  # the same seed: only the prompt differs
    for step in explore:  # each output says which prompt made it
        info = provenance.read((harness.out / step["outputs"][0]["path"]).read_bytes())
        assert info is not None and info["prompt"] == step["prompt"]
    # The sheet gives each variation's row its prompt as a title, in row order.
    layout = layout_sheet(parse_manifest(json.dumps(m)))
    titles = [b.text for b in layout.blocks if b.role == "group-prompt"]
    assert titles == [f"{s['variation']}: {s['prompt']}" for s in explore] + [
        "refine: vase, sharper"
    ]
    refine = [s for s in m["steps"] if s["name"] == "refine"]
    assert len(refine) == 1 and refine[0].get("variation") is None
    assert refine[0]["outputs"][0]["path"] == "moods/vase.png/refine-0.png"  # no empty id
    assert refine[0]["outputs"][0]["input"] == paths[0]


def test_a_list_of_prompts_with_compared_models(harness):
    harness.rule(
        "p.yaml",
        """\
        name: wordings
        match: {source: drop}
        steps:
          - name: explore
            models: [stub, stub-b]
            seeds: [1]
            prompts: ["{stem} in a loft", "{stem} on a beach"]
        output: {sink: out}
        """,
    )
    harness.start("profiles:\n  stub-b: {task: stub, model: stub-b, max_side: 64}\n")
    make_image(harness.drop / "lamp.png")
    m = harness.manifest("wordings", "lamp")
    assert m["status"] == "done"
    assert [(s["model"], s["variation"], s["prompt"]) for s in m["steps"]] == [
        ("stub", "p1", "lamp in a loft"),
        ("stub", "p2", "lamp on a beach"),
        ("stub-b", "p1", "lamp in a loft"),
        ("stub-b", "p2", "lamp on a beach"),
    ]
    names = [s["outputs"][0]["path"].rsplit("/", 1)[1] for s in m["steps"]]
    assert names == [
        "explore-stub-p1-0.png",
        "explore-stub-p2-0.png",
        "explore-stub-b-p1-0.png",
        "explore-stub-b-p2-0.png",
    ]
    assert all((harness.out / s["outputs"][0]["path"]).exists() for s in m["steps"])


def _rules(tmp_path, text):
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    (d / "r.yaml").write_text(textwrap.dedent(text))
    return d


def test_check_knows_matrix_variables_and_asks_for_variation_in_a_custom_path(tmp_path):
    rule = load_rules(_rules(tmp_path, MATRIX)).get("moods")
    assert len(rule.steps[0].variations) == 4
    bad = MATRIX.replace("output: {sink: out}", 'output: {sink: out, path: "{stem}/{step}.png"}')
    with pytest.raises(RuleError) as exc:
        load_rules(_rules(tmp_path, bad))
    assert "{variation}" in str(exc.value)
    unknown = MATRIX.replace("{season} light", "{weather} light")
    with pytest.raises(RuleError) as exc:
        load_rules(_rules(tmp_path, unknown))
    assert "unknown variable {weather}" in str(exc.value)
    both = MATRIX.replace(
        "    seeds: [5]\n", '    seeds: [5]\n    prompt: "x"\n    prompts: [a, b]\n'
    )
    with pytest.raises(RuleError) as exc:
        load_rules(_rules(tmp_path, both))
    assert "either prompt: or prompts:" in str(exc.value)
    inherits = MATRIX.replace(', prompt: "{stem}, sharper"', "")
    with pytest.raises(RuleError) as exc:
        load_rules(_rules(tmp_path, inherits))
    assert "step 'refine' has no prompt_matrix for {mood}, {season}" in str(exc.value)
