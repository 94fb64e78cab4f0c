"""Rule tooling from the command line: check, match, rules schema, reprocess."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from daemon.cli.rules import rule_schema
from tests.conftest import make_image
from tests.e2e.test_cli import darkroom, setup

REPO = Path(__file__).resolve().parents[2]

RULE = """\
name: look
match: {source: drop, min_width: 60}
vars: {mood: calm}
prompt: "{stem}, {mood} mood"
steps:
  - {name: explore, models: [stub, stub], variants: 2, seed: 5}
output: {sink: out}
"""


def test_schema_file_is_current():
    on_disk = json.loads((REPO / "rules" / "schema.json").read_text())
    assert on_disk == json.loads(json.dumps(rule_schema())), (
        "rules/schema.json is stale: run `darkroom rules schema -o rules/schema.json`"
    )


@pytest.mark.slow  # runs the darkroom CLI as a subprocess
def test_check_names_an_unknown_variable_with_a_hint(tmp_path):
    config = setup(
        tmp_path,
        RULE.replace("{mood} mood", "{mod} mood").replace("models: [stub, stub]", "model: stub"),
    )
    result = darkroom("check", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert (
        f"{tmp_path / 'rules' / 'r.yaml'}:4:9: unknown variable {{mod}} (hint: did you mean 'mood'?)"
        in result.stderr
    )


@pytest.mark.slow  # runs the darkroom CLI as a subprocess
def test_check_refuses_duplicate_models_in_a_compare_step(tmp_path):
    config = setup(tmp_path, RULE)
    result = darkroom("check", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1 and "each once" in result.stderr


@pytest.mark.slow  # runs the darkroom CLI as a subprocess
def test_match_explains_matches_misses_and_the_plan(tmp_path):
    rule = RULE.replace("models: [stub, stub]", "model: stub")
    config = setup(tmp_path, rule)
    (tmp_path / "rules" / "other.yaml").write_text(
        textwrap.dedent("""\
        name: jpegs
        match: {source: drop, include: ["*.jpg"]}
        steps: [{name: one, model: stub}]
        output: {sink: out}
        """)
    )
    photo = make_image(tmp_path / "drop" / "sub" / "vase.png", (64, 48))
    result = darkroom("match", "--config", str(config), str(photo), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "sub/vase.png from source 'drop': png, 64x48, landscape" in out
    assert "+ look: matches" in out
    assert "prompt: vase, calm mood" in out
    assert "look/sub/vase.png/explore-0.png, look/sub/vase.png/explore-1.png" in out
    assert "- jpegs: no — sub/vase.png matches none of include ['*.jpg']" in out

    small = make_image(tmp_path / "drop" / "tiny.png", (32, 32))
    miss = darkroom("match", "--config", str(config), str(small), cwd=tmp_path)
    assert miss.returncode == 1
    assert "width 32 < min_width 60" in miss.stdout and "no rule matches" in miss.stdout


@pytest.mark.slow  # runs the darkroom CLI as a subprocess
def test_reprocess_applies_an_edited_rule_to_inputs_already_seen(tmp_path):
    rule = RULE.replace("models: [stub, stub]", "model: stub")
    config = setup(tmp_path, rule)
    (tmp_path / "drop").mkdir()
    photo = make_image(tmp_path / "drop" / "bowl.png")
    first = darkroom("process", "--config", str(config), str(photo), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # process registers its inputs under the "cli" source; seed the ledger as the daemon would.
    from daemon.queue.ledger import Ledger

    ledger = Ledger(tmp_path / "state" / "ledger.sqlite")
    ledger.mark_seen(
        "drop", "bowl.png", photo.stat().st_size, photo.stat().st_mtime_ns, None, "submitted"
    )
    ledger.close()
    (tmp_path / "rules" / "r.yaml").write_text(textwrap.dedent(rule.replace("calm", "stormy")))
    again = darkroom("reprocess", "--config", str(config), "--rule", "look", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 of 1 seen input(s) queued again" in again.stdout
    same = darkroom("reprocess", "--config", str(config), "--rule", "look", cwd=tmp_path)
    assert "0 of 1" in same.stdout
    status = darkroom("status", "--config", str(config), cwd=tmp_path)
    assert "queued 1" in status.stdout
