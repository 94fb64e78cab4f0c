"""Issue 18: decisions start work in the same daemon. Approving a variant runs the ``on:
approved`` rule on it; "refine" with a note runs round 2 of the same rule on it with the note
in its prompt; both are linked from the source's page, and each says what it follows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_image
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.slow

API = {"Content-Type": "application/json", "X-Darkroom-Review": "1"}

RULES = """\
name: look
match: {source: drop, include: ["*.png"]}
prompt: "a lamp on oak"
steps:
  - {name: explore, model: stub, variants: 2, seed: 7}
output: {sink: out}
"""

CHANNELS = """\
name: channels
on: approved
after: [look]
prompt: "web banner of {stem} ({parent_key}), approved by {decided_by}"
steps:
  - {name: web, model: stub, variants: 1, seed: 1}
output: {sink: out}
"""


def manifest(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.mark.usefixtures("no_proxy")
def test_approve_runs_the_follow_up_rule_and_refine_runs_round_two(
    daemon_factory: Any, tmp_path: Path
) -> None:
    daemon = daemon_factory(RULES, extra="review: {enabled: true, port: 0}\n")
    (tmp_path / "rules" / "channels.yaml").write_text(CHANNELS)
    daemon.start()
    make_image(tmp_path / "drop" / "lamp.png")
    out = tmp_path / "out"
    parent = out / "look" / "lamp.png" / "manifest.json"
    wait_for(parent.exists, 120, "the first round")
    outputs = [o["path"] for s in manifest(parent)["steps"] for o in s["outputs"]]
    assert len(outputs) == 2
    (listening,) = daemon.events("review server listening")
    decide = listening["url"] + "api/decide"

    def post(variant: str, action: str, note: str | None = None) -> None:
        body = {
            "sink": "out",
            "manifest": "look/lamp.png/manifest.json",
            "variants": [variant],
            "action": action,
            "note": note,
        }
        answer = httpx.post(decide, json=body, headers=API, timeout=30)
        assert answer.status_code == 200, answer.text

    # 1. Approve: the channels rule runs on the approved variant, in its own folder.
    post(outputs[0], "approve")
    follow = out / "channels" / outputs[0] / "manifest.json"
    wait_for(follow.exists, 120, "the on: approved rule's manifest")
    child = manifest(follow)
    assert child["status"] == "done"
    assert child["source"]["key"] == outputs[0] and child["source"]["source"] == "review:out"
    assert child["follows"]["trigger"] == "approved"
    assert child["follows"]["manifest"] == "look/lamp.png/manifest.json"
    # {stem} is the photo's ("lamp"), not the variant file's ("explore-0").
    assert child["steps"][0]["prompt"] == "web banner of lamp (lamp.png), approved by local"

    # 2. Refine with a note: round 2 of "look" on the other variant, the note in its prompt.
    post(outputs[1], "refine", "warmer light")
    round_two = out / "look" / outputs[1] / "manifest.json"
    wait_for(round_two.exists, 120, "the refine round")
    second = manifest(round_two)
    assert second["rule"]["name"] == "look"
    assert second["steps"][0]["prompt"] == "a lamp on oak, warmer light"
    assert second["follows"]["trigger"] == "refine" and second["follows"]["round"] == 2

    # Round 3 from a round-2 variant keeps round 2's note and adds its own.
    round_two_output = second["steps"][0]["outputs"][0]["path"]
    answer = httpx.post(
        decide,
        json={
            "sink": "out",
            "manifest": str(round_two.relative_to(out)),
            "variants": [round_two_output],
            "action": "refine",
            "note": "at dusk",
        },
        headers=API,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    round_three = out / "look" / round_two_output / "manifest.json"
    wait_for(round_three.exists, 120, "round 3")
    third = manifest(round_three)
    assert third["steps"][0]["prompt"] == "a lamp on oak, warmer light, at dusk"
    assert third["follows"]["round"] == 3

    # 3. The source's page links both, and its manifest lists them (written after each).
    def linked() -> list[dict[str, Any]] | None:
        ups = manifest(parent).get("follow_ups", [])
        return ups if len(ups) == 2 else None

    ups = wait_for(linked, 60, "both follow-ups linked from the parent")
    assert {(u["rule"], u["trigger"], u["output"]) for u in ups} == {  # type: ignore[union-attr]
        ("channels", "approved", outputs[0]),
        ("look", "refine", outputs[1]),
    }
    page = (out / "look" / "lamp.png" / "index.html").read_text()
    assert "warmer light" in page and "channels" in page
    # The approval itself is still recorded, and only once a follow-up per decision ran.
    assert manifest(parent)["decisions"][outputs[0]]["decision"] == "approved"
    assert len(list(out.glob("channels/**/manifest.json"))) == 1
    assert daemon.stop() == 0


def test_a_cli_decision_made_while_the_daemon_is_down_runs_when_it_starts(
    daemon_factory: Any, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    daemon = daemon_factory(RULES)
    (tmp_path / "rules" / "channels.yaml").write_text(CHANNELS)
    daemon.start()
    make_image(tmp_path / "drop" / "lamp.png")
    parent = tmp_path / "out" / "look" / "lamp.png" / "manifest.json"
    wait_for(parent.exists, 120, "the first round")
    assert daemon.stop() == 0

    approve = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "review", "approve", "--config",
         str(daemon.config), str(parent.parent), "explore-1", "--by", "ann"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert approve.returncode == 0, approve.stderr
    assert "approved: look/lamp.png/explore-1.png" in approve.stdout

    daemon.start()
    follow = tmp_path / "out" / "channels" / "look" / "lamp.png" / "explore-1.png" / "manifest.json"
    wait_for(follow.exists, 120, "the follow-up of the CLI's approval")
    assert (
        manifest(follow)["steps"][0]["prompt"] == "web banner of lamp (lamp.png), approved by ann"
    )
    assert daemon.stop() == 0


def test_check_reports_follow_up_mistakes_at_their_lines(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "look.yaml").write_text(RULES)
    (tmp_path / "rules" / "loop.yaml").write_text(
        "name: loop\non: approved\nafter: [loop, lokk]\nsteps: [{name: s, model: stub}]\n"
        "output: {sink: out}\n"
    )
    (tmp_path / "rules" / "odd.yaml").write_text(
        "name: odd\nafter: [look]\nmatch: {source: drop}\nsteps: [{name: s, model: stub}]\n"
        "output: {sink: out}\n"
    )
    (tmp_path / "darkroom.yaml").write_text(
        "state_dir: state\nsources: {drop: {path: drop}}\nsinks: {out: {path: out}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "check"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    text = result.stdout + result.stderr
    assert result.returncode == 1
    assert "loop.yaml:3" in text and "does not follow its own outputs" in text
    assert "no rule named 'lokk' to follow" in text
    assert "odd.yaml" in text and "needs on: approved or on: rejected" in text
