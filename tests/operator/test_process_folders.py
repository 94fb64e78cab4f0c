"""Issue 20: ``darkroom process FILE...`` treats a file inside a watched folder the way the
daemon would: same source, same key, so folder-based rules, ``{dir}`` and ``{folder}`` work."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import make_image
from tests.operator.conftest import darkroom

pytestmark = pytest.mark.slow

RULE = """\
name: shoots
match: {source: drop, include: ["shoots/**/*.png"]}
prompt: "{folder} | {dir}"
steps:
  - {name: explore, model: stub, variants: 1, seed: 5}
output: {sink: out}
"""


@pytest.fixture
def workdir(cli_workdir: Callable[..., Path]) -> Path:
    return cli_workdir("shoots", RULE)


def test_a_file_in_a_watched_folder_matches_folder_rules_with_its_dir(workdir: Path) -> None:
    photo = make_image(workdir / "drop" / "shoots" / "may" / "cat.png")
    result = darkroom("process", str(photo), cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("done     shoots/may/cat.png [shoots] -> ")

    # The daemon's default output folder, {rule}/{dir}/{stem}.{source_ext}/.
    folder = workdir / "out" / "shoots" / "shoots" / "may" / "cat.png"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"]["key"] == "shoots/may/cat.png"
    assert manifest["source"]["source"] == "drop"
    (step,) = manifest["steps"]
    assert step["prompt"] == "may | shoots/may"


def test_a_file_outside_every_watched_folder_says_why_no_rule_took_it(workdir: Path) -> None:
    photo = make_image(workdir / "elsewhere" / "shoots" / "cat.png")
    result = darkroom("process", str(photo), "--rule", "shoots", cwd=workdir)
    assert result.returncode == 1
    assert "no rule matches these files" in result.stderr
    # The reason names the rule and the pattern the key (its bare name) did not meet.
    why = [line for line in result.stderr.splitlines() if line.startswith("  cat.png [shoots]")]
    assert why and "shoots/**/*.png" in why[0], result.stderr
