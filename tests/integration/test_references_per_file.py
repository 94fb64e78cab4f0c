"""References per file: templated reference patterns resolved for each arrival, a sidecar's
list of references, and the fault when a file's references do not exist."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

from daemon.rules.load import cross_check, load_rules
from daemon.rules.plan import plan_for
from daemon.rules.references import reference_files
from daemon.rules.sidecars import Sidecar
from daemon.types import Arrival
from tests.conftest import make_image

PER_FOLDER = """\
name: brands
match: {source: drop}
prompt: "{stem}"
steps:
  - {name: plain, model: stub, seeds: [1]}
  - {name: refd, input: source, model: stub, seeds: [1], references: ["refs/{folder}/*.png"]}
output: {sink: out}
"""


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_each_folder_gets_its_own_references_and_a_folder_without_any_fails_naming_them(
    harness,
):
    make_image(harness.rules_dir / "refs" / "acme" / "a.png", color=(0, 255, 0))
    make_image(harness.rules_dir / "refs" / "zenith" / "z.png", color=(255, 0, 255))
    harness.rule("r.yaml", PER_FOLDER)
    harness.start()
    make_image(harness.drop / "acme" / "mug.png")
    make_image(harness.drop / "zenith" / "mug.png")
    make_image(harness.drop / "nobody" / "mug.png")
    acme = harness.manifest("brands", "mug", where="brands/acme/mug.png/manifest.json")
    zenith = harness.manifest("brands", "mug", where="brands/zenith/mug.png/manifest.json")
    assert acme["status"] == "done" and zenith["status"] == "done"
    assert [Path(p).name for p in acme["steps"][1]["references"]] == ["a.png"]
    assert [Path(p).name for p in zenith["steps"][1]["references"]] == ["z.png"]
    a, z = (pixels(harness.out / m["steps"][1]["outputs"][0]["path"]) for m in (acme, zenith))
    assert np.abs(a - z).mean() > 10  # each product's reference reached the model
    page = (harness.out / acme["page"]).read_text()
    assert "<dt>references</dt><dd>a.png</dd>" in page  # named on the review page ...
    assert str(harness.rules_dir) not in page  # ... without the server's folders

    lost = harness.manifest("brands", "mug", where="brands/nobody/mug.png/manifest.json")
    assert lost["status"] == "failed"
    error = lost["steps"][1]["error"]
    assert (
        "rule 'brands' step 'refd': references 'refs/nobody/*.png'"
        " (from 'refs/{folder}/*.png') match no file in the rules folder"
    ) in error


def _rule(tmp_path: Path, text: str):
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    (d / "r.yaml").write_text(textwrap.dedent(text))
    return d, load_rules(d)


def test_sidecar_values_pick_references_and_their_hashes_are_the_plans_identity(tmp_path):
    d, rules = _rule(
        tmp_path,
        PER_FOLDER.replace("refs/{folder}/*.png", "refs/{product}-*.png").replace(
            "match: {source: drop}", "match: {source: drop, sidecar: required}"
        ),
    )
    (d / "refs").mkdir()
    (d / "refs" / "oak-1.png").write_bytes(b"oak one")
    (d / "refs" / "pine-1.png").write_bytes(b"pine one")
    rule = rules.get("brands")
    sidecar = Sidecar.parse("chair.yaml", b"vars: {product: oak}\n")
    arrival = Arrival("drop", "chair.png", "/x/chair.png", 10, 1)
    files = reference_files(rule, d, {})
    plan = plan_for(rule, arrival, "ab" * 32, sidecar=sidecar, references=files)
    assert plan.error is None
    assert plan.units[1].references[0].path == str(d / "refs" / "oak-1.png")
    assert plan.units[1].references[0].sha256 == hashlib.sha256(b"oak one").hexdigest()
    (d / "refs" / "oak-1.png").write_bytes(b"oak one, retouched")
    again = plan_for(rule, arrival, "ab" * 32, sidecar=sidecar, references=files)
    assert again.content != plan.content  # a changed reference image is new work
    # `check` finds the templated pattern matches something (any product) ...
    assert cross_check(rules, {"drop"}, {"out"}, {"stub"}, {}, d) == []
    # ... and says so when no product could ever match.
    for path in (d / "refs").iterdir():
        path.unlink()
    problems = cross_check(rules, {"drop"}, {"out"}, {"stub"}, {}, d)
    assert any("matches no file" in p.message for p in problems)


def test_a_sidecar_may_list_references(tmp_path):
    d, rules = _rule(
        tmp_path, PER_FOLDER.replace('["refs/{folder}/*.png"]', '["sidecar", "refs/base.png"]')
    )
    brand = tmp_path / "brand"
    brand.mkdir()
    (brand / "face.png").write_bytes(b"face")
    (d / "refs").mkdir()
    (d / "refs" / "base.png").write_bytes(b"base")
    (d / "refs" / "extra.png").write_bytes(b"extra")
    rule = rules.get("brands")
    sidecar = Sidecar.parse("chair.yaml", b"vars: {product: oak}\n")
    # The sidecar's list (its schema lives with the sidecar parser).
    object.__setattr__(sidecar, "references", ["refs/extra.png", "brand:face.png"])
    arrival = Arrival("drop", "chair.png", "/x/chair.png", 10, 1)
    files = reference_files(rule, d, {"brand": brand})
    plan = plan_for(rule, arrival, "ab" * 32, sidecar=sidecar, references=files)
    assert plan.error is None
    assert [Path(r.path).name for r in plan.units[1].references] == [
        "extra.png",
        "face.png",
        "base.png",
    ]
    # A sidecar cannot reach outside: the same words as a file that does not exist.
    (tmp_path / "secret.png").write_bytes(b"secret")
    object.__setattr__(sidecar, "references", ["../secret.png"])
    outside = plan_for(rule, arrival, "ab" * 32, sidecar=sidecar, references=files)
    object.__setattr__(sidecar, "references", ["../missing.png"])
    missing = plan_for(rule, arrival, "ab" * 32, sidecar=sidecar, references=files)
    assert outside.error is not None and "is not a file in the rules folder" in outside.error
    assert outside.error.replace("secret", "X") == missing.error.replace("missing", "X")
