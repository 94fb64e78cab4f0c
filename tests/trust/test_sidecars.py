"""Issue 14, item 8: sidecars. A sidecar that cannot be parsed -- however it fails -- is a
recorded input fault with its reason (never a vanished image); a ``.txt`` sidecar is plain
text (braces included) and is also the ``{sidecar}`` variable; fixing a sidecar re-admits its
image; ``on_success: move`` takes the sidecars and the mask along with the image."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.errors import InputError
from daemon.intake.facts import read_sidecar
from daemon.rules.load import load_rules
from daemon.rules.plan import plan_for
from daemon.rules.sidecars import Sidecar
from daemon.sources.memory import MemorySource
from daemon.types import Arrival
from tests.conftest import make_image
from tests.reliability.conftest import Harness

DEEP_YAML = "vars: " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_JSON = '{"vars": ' + "[" * 100_000 + "]" * 100_000 + "}"

# name -> (sidecar file, bytes, what the recorded reason says)
BROKEN = {
    "deep-yaml": ("deep-yaml.yaml", DEEP_YAML.encode(), "deep-yaml.yaml"),
    "deep-json": ("deep-json.json", DEEP_JSON.encode(), "deep-json.json"),
    "list-prompt": ("list-prompt.yaml", b"prompt: [a, b]\n", "prompt must be text"),
    "bad-utf8": ("bad-utf8.txt", b"caf\xe9 au lait\n", "not UTF-8"),
    "bad-json": ("bad-json.json", b'{"prompt": "x",,}', "not valid JSON"),
    "bad-yaml": ("bad-yaml.yaml", b"prompt: 'unclosed\n  vars: [\n", "not valid YAML"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_every_sidecar_failure_is_an_input_fault_with_its_reason(name):
    filename, data, reason = BROKEN[name]
    with pytest.raises(InputError) as caught:
        Sidecar.parse(filename, data)
    assert filename in str(caught.value) and reason in str(caught.value)

    source = MemorySource("drop")
    source.put(filename, data)
    sidecar, error = read_sidecar(source, f"{name}.jpg")
    assert error is not None and reason in error
    assert sidecar is not None and sidecar.fault == error, "the broken sidecar is recorded"


RULE = """\
name: r
match: {source: drop}
prompt: "{stem}, product photo"
steps:
  - {name: one, model: stub, variants: 1, seeds: [1]}
output: {sink: out}
"""


def _rule(tmp_path: Path, text: str = RULE):
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(textwrap.dedent(text))
    return load_rules(rules).get("r")


def test_a_txt_sidecar_is_plain_text_braces_and_all(tmp_path):
    rule = _rule(tmp_path)
    sidecar = Sidecar.parse("photo.txt", b"Summer sale {50% off} {stem}\n")
    plan = plan_for(
        rule, Arrival("drop", "photo.jpg", "/x/photo.jpg", 1, 1), "0" * 64, sidecar=sidecar
    )
    assert plan.error is None
    assert plan.prompt == "Summer sale {50% off} {stem}"  # replaces the prompt, as written
    assert plan.units[0].prompt == "Summer sale {50% off} {stem}"


def test_the_sidecar_variable_combines_a_txt_with_the_rules_prompt(tmp_path):
    rule = _rule(tmp_path, RULE.replace('"{stem}, product photo"', '"{sidecar}, studio light"'))
    sidecar = Sidecar.parse("photo.txt", b"Summer sale {50% off}")
    arrival = Arrival("drop", "photo.jpg", "/x/photo.jpg", 1, 1)
    plan = plan_for(rule, arrival, "0" * 64, sidecar=sidecar)
    assert plan.error is None
    assert plan.units[0].prompt == "Summer sale {50% off}, studio light"
    # Without a .txt the variable is empty, not an error.
    assert plan_for(rule, arrival, "0" * 64).units[0].prompt == ", studio light"


# -- the daemon -------------------------------------------------------------------------------


@pytest.fixture
def harness(tmp_path: Path, model_cache: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, model_cache)
    yield h
    h.stop()


def _done_plan(harness: Harness, key: str):
    return next((p for p in harness.ledger.plans(key) if p["state"] == "done"), None)


def test_broken_sidecars_leave_a_visible_record_and_fixing_one_readmits_its_image(harness):
    harness.rule(RULE)
    harness.start()
    for name, (filename, data, _) in BROKEN.items():
        (harness.drop / filename).write_bytes(data)
        make_image(harness.drop / f"{name}.jpg")
    make_image(harness.drop / "fine.jpg")

    keys = [f"{name}.jpg" for name in BROKEN]
    harness.wait(
        lambda: {r["key"] for r in harness.ledger.quarantine()} >= set(keys),
        30,
        "a quarantine record for every image with a broken sidecar",
    )
    reasons = {r["key"]: r["reason"] for r in harness.ledger.quarantine()}
    for name, (filename, _, reason) in BROKEN.items():
        assert filename in reasons[f"{name}.jpg"] and reason in reasons[f"{name}.jpg"]
        # The image is fine: it stays where it is, ready for a fixed sidecar.
        assert (harness.drop / f"{name}.jpg").exists()
    harness.wait(lambda: _done_plan(harness, "fine.jpg"), 20, "the image without a sidecar")

    status = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "status", "--config", str(harness.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert "drop:list-prompt.jpg" in status.stdout and "prompt must be text" in status.stdout

    # Fixing the sidecar runs the image, and it is no longer listed as quarantined.
    (harness.drop / "list-prompt.yaml").write_text('prompt: "a, b"\n')
    harness.wait(lambda: _done_plan(harness, "list-prompt.jpg"), 20, "the fixed sidecar's image")
    harness.wait(
        lambda: "list-prompt.jpg" not in {r["key"] for r in harness.ledger.quarantine()},
        10,
        "the quarantine record to go",
    )


def test_a_txt_sidecar_with_braces_runs_its_photo(harness):
    harness.rule(RULE)
    harness.start()
    (harness.drop / "sale.txt").write_text("Summer sale {50% off}\n")
    make_image(harness.drop / "sale.jpg")
    plan = harness.wait(lambda: _done_plan(harness, "sale.jpg"), 20, "the photo with a .txt")
    assert '"prompt":"Summer sale {50% off}"' in plan["plan"].replace(": ", ":")
    assert harness.ledger.quarantine() == []


MOVE_RULE = RULE.replace("output: {sink: out}", "output: {sink: out, on_success: move}")


def test_on_success_move_takes_the_sidecars_and_mask_along(harness):
    harness.rule(MOVE_RULE)
    harness.start()
    (harness.drop / "shoot").mkdir()
    (harness.drop / "shoot" / "chair.txt").write_text("a chair")
    (harness.drop / "shoot" / "chair.yaml").write_text("seed: 3\n")
    make_image(harness.drop / "shoot" / "chair.mask.png")
    make_image(harness.drop / "shoot" / "chair.jpg")

    processed = harness.drop / ".processed" / "shoot"
    harness.wait(lambda: (processed / "chair.jpg").exists(), 20, "the image to be moved")
    harness.wait(
        lambda: not [p.name for p in (harness.drop / "shoot").iterdir()],
        10,
        "its sidecars and mask to follow: " + str(list((harness.drop / "shoot").iterdir())),
    )
    assert sorted(p.name for p in processed.iterdir()) == [
        "chair.jpg",
        "chair.mask.png",
        "chair.txt",
        "chair.yaml",
    ]


def test_a_sidecar_shared_by_another_image_stays(harness):
    harness.rule(
        MOVE_RULE.replace("match: {source: drop}", 'match: {source: drop, include: ["*.jpg"]}')
    )
    harness.start()
    (harness.drop / "hero.txt").write_text("a hero shot")
    make_image(harness.drop / "hero.png")  # not taken by this rule, but it has the same stem
    make_image(harness.drop / "hero.jpg")
    harness.wait(lambda: (harness.drop / ".processed" / "hero.jpg").exists(), 20, "the move")
    assert (harness.drop / "hero.txt").exists(), "hero.png still needs its sidecar"
