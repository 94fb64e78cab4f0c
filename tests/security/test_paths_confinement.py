"""Every path a rule or sidecar names (references, masks, watermarks) resolves inside the
rules folder or a named reference folder: never the working directory, never outside, and a
file outside is indistinguishable from a missing one (issue 15)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from daemon.errors import RuleError
from daemon.rules.load import load_rules
from daemon.rules.plan import plan_for
from daemon.rules.references import reference_files
from daemon.types import Arrival
from tests.conftest import make_image
from tests.integration.conftest import Harness
from tests.waiting import wait_for


@pytest.fixture
def harness(tmp_path: Path, model_cache: Path):
    """The in-process daemon of tests/integration (folder source, stub model)."""
    h = Harness(tmp_path, model_cache)
    yield h
    h.stop()


STEP = "{name: one, model: stub, seeds: [1], %s}"


def rule_text(step_extra: str) -> str:
    return textwrap.dedent(f"""\
        name: r
        match: {{source: drop}}
        steps: [{STEP % step_extra}]
        output: {{sink: out}}
        """)


@pytest.mark.parametrize(
    "extra, words",
    [
        ('mask: "/etc/shadow"', "absolute paths are not allowed"),
        ('mask: "masks/../../x.png"', "'..' is not allowed"),
        ('mask: "~/x.png"', "absolute paths are not allowed"),
        ('references: ["../shared/*.png"]', "'..' is not allowed"),
        ('references: ["brand:../*.png"]', "'..' is not allowed"),
        ('references: ["/srv/refs/*.png"]', "absolute paths are not allowed"),
        ('params: {watermark: "/opt/logo.png"}', "absolute paths are not allowed"),
        ('params: {watermark: "../logo.png"}', "'..' is not allowed"),
    ],
)
def test_check_rejects_absolute_and_parent_paths_at_their_line(tmp_path, extra, words):
    d = tmp_path / "rules"
    d.mkdir()
    (d / "r.yaml").write_text(rule_text(extra))
    with pytest.raises(RuleError) as exc:
        load_rules(d)
    message = str(exc.value)
    assert "r.yaml:3:" in message and words in message


def test_a_mask_path_is_read_from_the_rules_folder_not_the_working_directory(
    harness, tmp_path, monkeypatch
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the daemon's working directory has no masks/
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    (harness.rules_dir / "masks").mkdir()
    mask.save(harness.rules_dir / "masks" / "pot.png")
    harness.rule("r.yaml", rule_text('mask: "masks/{stem}.png"'))
    harness.start()
    make_image(harness.drop / "pot.png")
    m = harness.manifest("r", "pot")
    assert m["status"] == "done", m["steps"][0]["error"]
    assert Path(m["steps"][0]["mask"]) == harness.rules_dir / "masks" / "pot.png"


def test_a_watermark_is_read_from_the_rules_folder(harness, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    logo = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    (harness.rules_dir / "logos").mkdir()
    logo.save(harness.rules_dir / "logos" / "logo.png")
    harness.rule(
        "r.yaml",
        """\
        name: r
        match: {source: drop}
        steps: [{name: feed, model: square-1080, params: {watermark: logos/logo.png}}]
        output: {sink: out}
        """,
    )
    harness.start()
    make_image(harness.drop / "mug.png")
    m = harness.manifest("r", "mug", timeout=60)
    assert m["status"] == "done", m["steps"][0]["error"]
    with Image.open(harness.out / m["steps"][0]["outputs"][0]["path"]) as out:
        r, g, b = out.convert("RGB").getpixel((out.width - 60, out.height - 60))
    assert r > 200 and g < 60 and b < 60  # the red logo, bottom right


def _plan_error(rules_dir: Path, key: str, step_extra: str) -> str | None:
    (rules_dir / "r.yaml").write_text(rule_text(step_extra))
    rule = load_rules(rules_dir).get("r")
    arrival = Arrival("s3in", key, f"s3://bucket/{key}", 10, 1)
    files = reference_files(rule, rules_dir, {})
    return plan_for(rule, arrival, "ab" * 32, references=files).error


def test_a_hostile_key_cannot_steer_a_mask_or_reference_outside(tmp_path):
    rules_dir = tmp_path / "srv" / "rules"
    (rules_dir / "masks").mkdir(parents=True)
    secret = tmp_path / "srv" / "secret"
    secret.mkdir()
    (secret / "x.png").write_bytes(b"not yours")
    # An S3 key may hold "../" segments: {dir} renders them, and they are refused.
    exists = _plan_error(rules_dir, "../secret/x.png", 'mask: "masks/{dir}/{stem}.png"')
    absent = _plan_error(rules_dir, "../nothing/x.png", 'mask: "masks/{dir}/{stem}.png"')
    assert exists is not None and absent is not None
    assert "is not a file in the rules folder" in exists
    # The same words whether or not a file is out there (only the echoed name differs).
    assert exists.replace("secret", "?") == absent.replace("nothing", "?")
    assert "secret/x.png" not in (exists.split("(from")[0].replace("../secret", ""))
    # A file name cannot widen a reference glob: "*" in a name is a literal star.
    make_image(rules_dir / "refs" / "acme.png")
    starred = _plan_error(rules_dir, "*.png", 'references: ["refs/{stem}.png"]')
    assert starred is not None and "match no file" in starred
    assert _plan_error(rules_dir, "acme.png", 'references: ["refs/{stem}.png"]') is None


def test_a_symlink_inside_the_rules_folder_pointing_out_is_refused(tmp_path):
    rules_dir = tmp_path / "rules"
    (rules_dir / "refs").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    make_image(outside / "leak.png")
    os.symlink(outside / "leak.png", rules_dir / "refs" / "leak.png")
    os.symlink(outside, rules_dir / "masks")
    mask_error = _plan_error(rules_dir, "leak.png", 'mask: "masks/{stem}.png"')
    assert mask_error is not None and "is not a file in the rules folder" in mask_error
    ref_error = _plan_error(rules_dir, "leak.png", 'references: ["refs/{stem}.png"]')
    assert ref_error is not None and "match no file" in ref_error


def test_a_record_never_says_whether_a_file_outside_exists(harness):
    """A per-photo mask not made yet is waited for (the job is held: the user can add it);
    the reason names the path inside the rules folder, never what the system said about it."""
    harness.rule("r.yaml", rule_text('mask: "masks/{stem}.png"'))
    harness.start()
    make_image(harness.drop / "passwd.png")  # no masks/passwd.png in the rules folder
    held = wait_for(lambda: harness.app.ledger.held()[0], 60, "the job to be held for its mask")
    reason = held[0].error or ""
    assert "masks/passwd.png does not exist" in reason
    assert "No such file" not in reason
    assert not (harness.out / "r" / "passwd").exists()


def test_a_profiles_watermark_is_read_next_to_the_config_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.config.settings import load_settings

    config = tmp_path / "etc" / "darkroom.yaml"
    config.parent.mkdir()
    config.write_text(
        "profiles:\n  web: {like: square-1080, defaults: {watermark: brand/logo.png}}\n"
    )
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(config)
    assert settings.profiles["web"].defaults["watermark"] == str(config.parent / "brand/logo.png")
