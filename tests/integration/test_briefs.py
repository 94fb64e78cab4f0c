"""Briefs without a photo: a dropped ``*.brief.csv`` / ``*.brief.yaml`` runs text-to-image
steps on the tiny models through the same rules, outputs, manifests and pages; a malformed
brief is an input fault naming file:line; a brief is never mistaken for a sidecar."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from PIL import Image

from daemon.rules.briefs import BriefError, parse_brief
from daemon.rules.load import load_rules
from daemon.rules.plan import plan_for
from daemon.types import Arrival
from tests.conftest import make_image

BRIEFS = """\
name: drafts
match: {source: drop, briefs: true}
prompt: "{brief}, studio product photo"
steps:
  - {name: draft, model: tiny-t2i, variants: 1, seed: 5}
  - {name: grade, model: stub}
output: {sink: out}
"""
PHOTOS = """\
name: photos
match: {source: drop}
prompt: "{stem}"
steps:
  - {name: look, model: stub, seeds: [1]}
output: {sink: out}
"""


def test_a_csv_brief_runs_each_row_through_text_to_image_and_the_chain(harness):
    harness.rule("briefs.yaml", BRIEFS)
    harness.rule("photos.yaml", PHOTOS)
    harness.start()
    (harness.drop / "summer.brief.csv").write_text(
        "name,prompt,size,count,product\n"
        'oil,"olive oil {50% off} on a terrace",16:9,2,oil\n'
        ",lemons in a bowl,32x48,,\n"
    )
    oil = harness.manifest(
        "drafts", "x", where="drafts/summer.brief.csv/oil/manifest.json", timeout=120
    )
    second = harness.manifest(
        "drafts", "x", where="drafts/summer.brief.csv/row-2/manifest.json", timeout=120
    )
    assert oil["status"] == "done" and second["status"] == "done"
    assert oil["source"]["brief"] == {
        "row": "oil",
        "line": 2,
        "prompt": "olive oil {50% off} on a terrace",
    }
    draft, grade = oil["steps"]
    # The row's prompt is text, wrapped by the rule's {brief}; its count and size are used.
    assert draft["prompt"] == "olive oil {50% off} on a terrace, studio product photo"
    assert [o["seed"] for o in draft["outputs"]] == [5, 6]  # count 2 from the rule's seed
    first = harness.out / draft["outputs"][0]["path"]
    with Image.open(first) as image:
        assert image.width > image.height  # 16:9 of the profile's 64 px
        xmp = image.info.get("XML:com.adobe.xmp", "") or str(image.info)
    assert "trainedAlgorithmicMedia" in xmp
    assert len(grade["outputs"]) == 2  # the next step takes the drafts, like any chain
    row2 = second["steps"][0]["outputs"]
    assert len(row2) == 1 and (row2[0]["width"], row2[0]["height"]) == (32, 48)
    page = (harness.out / oil["page"]).read_text()
    assert "olive oil {50% off} on a terrace" in page
    # The brief is not a sidecar: no photo rule saw it, and the drop folder keeps it.
    assert not list(harness.out.glob("photos/**/manifest.json"))
    assert (harness.drop / "summer.brief.csv").exists()


def test_editing_one_row_runs_only_that_row_again(harness):
    harness.rule("briefs.yaml", BRIEFS.replace("  - {name: grade, model: stub}\n", ""))
    harness.start()
    brief = harness.drop / "b.brief.yaml"
    brief.write_text(
        "briefs:\n  - {name: a, prompt: one red apple}\n  - {name: b, prompt: a pear}\n"
    )
    a = harness.manifest("drafts", "x", where="drafts/b.brief.yaml/a/manifest.json", timeout=120)
    b = harness.manifest("drafts", "x", where="drafts/b.brief.yaml/b/manifest.json", timeout=120)
    brief.write_text(
        "briefs:\n  - {name: a, prompt: one red apple}\n  - {name: b, prompt: two green pears}\n"
    )
    path_b = harness.out / "drafts/b.brief.yaml/b/manifest.json"
    harness.wait(
        lambda: json.loads(path_b.read_text())["plan_id"] != b["plan_id"],
        timeout=120,
        what="row b's second round",
    )
    assert json.loads(path_b.read_text())["steps"][0]["prompt"].startswith("two green pears")
    again = json.loads((harness.out / "drafts/b.brief.yaml/a/manifest.json").read_text())
    assert again["plan_id"] == a["plan_id"]  # row a did not change: not run again


def test_a_malformed_brief_is_an_input_fault_naming_file_and_line(harness):
    harness.rule("briefs.yaml", BRIEFS)
    harness.start()
    (harness.drop / "bad.brief.csv").write_text("title,size\nsunset,square\n")
    failed = harness.manifest(
        "drafts", "x", where="drafts/bad.brief.csv/manifest.json", timeout=120
    )
    assert failed["status"] == "failed"
    assert "bad.brief.csv:1: the header has no 'prompt' column" in failed["steps"][0]["error"]
    harness.wait(lambda: not (harness.drop / "bad.brief.csv").exists(), what="quarantine")


def test_row_faults_and_limits_are_reasons_with_lines(tmp_path: Path):
    rows = parse_brief(
        "x.brief.csv",
        b"prompt,count,seed,size\nok,2,,\n,1,,\nfine,99,,\nbig,1,,13x7\n",
    )
    assert [r.error for r in rows][0] is None
    assert rows[1].error == "x.brief.csv:3: no prompt: every row needs one"
    assert rows[2].error is not None and rows[2].error.startswith("x.brief.csv:4: count '99'")
    assert rows[3].error is not None and "x.brief.csv:5: size '13x7'" in rows[3].error
    too_many = "prompt\n" + "p\n" * 501
    try:
        parse_brief("m.brief.csv", too_many.encode())
    except BriefError as exc:
        assert "m.brief.csv:502: brief has 501 rows, over the limit of 500" in str(exc)
    else:
        raise AssertionError("501 rows were accepted")
    long_prompt = "prompt: " + "x" * 5000
    (row,) = parse_brief("l.brief.yaml", long_prompt.encode())
    assert row.error is not None and "over the limit of 4000" in row.error
    try:
        parse_brief("y.brief.yaml", b"briefs:\n  - prompt: a\n  - prompt: [unclosed\n")
    except BriefError as exc:
        assert str(exc).startswith("y.brief.yaml:4: brief is not valid YAML")
    else:
        raise AssertionError("invalid YAML was accepted")


def test_a_rows_references_come_from_the_rules_folder_and_join_its_identity(tmp_path: Path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "r.yaml").write_text(textwrap.dedent(BRIEFS))
    make_image(rules_dir / "refs" / "oil.png")
    rule = load_rules(rules_dir).get("drafts")
    arrival = Arrival("drop", "b.brief.yaml", "/d/b.brief.yaml", 10, 1)
    (row,) = parse_brief("b.brief.yaml", b"prompt: oil\nreferences: [refs/oil.png]\n")
    from daemon.rules.references import reference_files

    files = reference_files(rule, rules_dir, {})
    plan = plan_for(rule, arrival, "ab" * 32, brief=row, references=files)
    assert plan.error is None and plan.units[0].references[0].path.endswith("refs/oil.png")
    assert plan.units[1].references == []  # only the steps that take the brief
    (rules_dir / "refs" / "oil.png").write_bytes(b"changed")
    assert plan_for(rule, arrival, "ab" * 32, brief=row, references=files).content != plan.content
    (outside,) = parse_brief("b.brief.yaml", b"prompt: oil\nreferences: [../secret.png]\n")
    bad = plan_for(rule, arrival, "ab" * 32, brief=outside, references=files)
    assert bad.error is not None and "is not a file in the rules folder" in bad.error


def test_darkroom_match_shows_every_rows_plan_and_each_fault(tmp_path: Path):
    import subprocess
    import sys

    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "r.yaml").write_text(BRIEFS)
    (tmp_path / "drop").mkdir()
    brief = tmp_path / "drop" / "s.brief.csv"
    brief.write_text("name,prompt,count\noil,olive oil,2\n,lemons,x\n")
    config = tmp_path / "darkroom.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nrules_dir: {rules_dir}\n"
        f"sources: {{drop: {{path: {tmp_path / 'drop'}}}}}\n"
        f"sinks: {{out: {{path: {tmp_path / 'out'}}}}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "match", "-c", str(config), str(brief), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)["rules"]
    drafts = [s for s in entry["steps"] if s["step"] == "draft"]
    assert [(s["row"], len(s["outputs"])) for s in drafts] == [("oil", 2), ("row-2", 1)]
    assert drafts[0]["outputs"][0] == "drafts/s.brief.csv/oil/draft-0.png"
    assert entry["would_fail"] == "s.brief.csv:3: count 'x' must be a whole number from 1 to 64"
