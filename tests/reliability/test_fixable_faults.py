"""Faults the user can fix hold the work and resume by themselves once fixed (the
environment-fault contract): a mask that is not there (yet), and a rule waiting for the
reference folder it names. A mask that is there but cannot be decoded is the input's fault.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image

from tests.conftest import make_image
from tests.reliability.conftest import Harness, LedgerView, wait_for


def masked_rule(mask: str) -> str:
    return f"""\
        name: r
        match: {{source: drop}}
        prompt: "{{stem}}"
        steps: [{{name: one, model: stub, seeds: [1], mask: "{mask}"}}]
        output: {{sink: out, path: "{{rule}}/{{stem}}/{{step}}-{{variant}}.{{ext}}"}}
        """


def save_mask(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # the left half may change
    mask.save(path)


def held_reason(harness: Harness, key: str) -> str:
    """The reason of ``key``'s held job, once it is held."""
    rows = harness.wait(
        lambda: [j for j in harness.ledger.jobs(key) if j["state"] == "held"],
        60,
        f"{key}'s job to be held",
    )
    return str(rows[0]["error"])  # type: ignore[index]


def slow_backoff(harness: Harness) -> None:
    """Holds back off for an hour: a job that resumes soon was resumed by the look for its
    file, not by the backoff."""
    harness.app.ledger.hold_backoff = 3600
    harness.app.ledger.hold_backoff_max = 3600


def done_manifest(harness: Harness, stem: str, timeout: float = 60) -> Path:
    path = harness.out / "r" / stem / "manifest.json"
    harness.wait(lambda: path.exists(), timeout, f"{stem}'s manifest")
    return path


# -- masks ---------------------------------------------------------------------------------


def seed_plan(harness: Harness, key: str) -> None:
    """Plan ``key`` as intake would (its ``seen`` row included) before the daemon starts:
    the plan is made while the mask exists, the job runs after it has gone."""
    import hashlib

    from daemon.queue.ledger import Ledger
    from daemon.rules.load import load_rules
    from daemon.rules.plan import plan_for
    from daemon.rules.references import reference_files
    from daemon.types import Arrival

    path = harness.drop / key
    data, st = path.read_bytes(), path.stat()
    sha = hashlib.sha256(data).hexdigest()
    rule = load_rules(harness.rules_dir).get("r")
    arrival = Arrival("drop", key, str(path), st.st_size, st.st_mtime_ns)
    files = reference_files(rule, harness.rules_dir.resolve(), {})
    planned = plan_for(rule, arrival, sha, references=files)
    assert planned.error is None and planned.units[0].mask is not None
    harness.state.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(harness.state / "ledger.sqlite")
    ledger.submit(planned)
    ledger.mark_seen("drop", key, st.st_size, st.st_mtime_ns, sha, "submitted")
    ledger.close()


def test_a_rules_folder_mask_deleted_after_planning_holds_the_job_until_it_is_back(harness):
    mask = harness.rules_dir / "masks" / "left.png"
    save_mask(mask)
    harness.rule(masked_rule("masks/left.png"))
    make_image(harness.drop / "pot.png")
    seed_plan(harness, "pot.png")
    mask.rename(mask.with_suffix(".bak"))
    harness.start()
    slow_backoff(harness)

    reason = held_reason(harness, "pot.png")
    assert str(mask.resolve()) in reason and "does not exist" in reason, reason
    assert "put the mask there" in reason, reason
    assert (harness.drop / "pot.png").exists(), "the input stays where it is"
    assert not harness.ledger.quarantine()
    assert not list(harness.quarantine_dir.rglob("*.png")), "nothing is put aside"

    mask.with_suffix(".bak").rename(mask)
    manifest = done_manifest(harness, "pot")
    assert '"status": "done"' in manifest.read_text()
    assert len(harness.ledger.plans("pot.png")) == 1


def test_a_per_photo_mask_not_made_yet_holds_the_photo_and_it_runs_once_the_mask_exists(
    harness,
):
    harness.rule(masked_rule("masks/{stem}.png"))
    harness.start()
    slow_backoff(harness)
    make_image(harness.drop / "lamp.png")

    reason = held_reason(harness, "lamp.png")
    expected = harness.rules_dir.resolve() / "masks" / "lamp.png"
    assert str(expected) in reason and "does not exist" in reason, reason
    assert not (harness.out / "r" / "lamp").exists(), "no failure manifest for a fixable fault"
    assert (harness.drop / "lamp.png").exists()

    save_mask(harness.rules_dir / "masks" / "lamp.png")
    manifest = done_manifest(harness, "lamp")
    assert '"status": "done"' in manifest.read_text()
    assert [j["state"] for j in harness.ledger.jobs("lamp.png")] == ["done"]


def test_a_sidecar_mask_that_has_not_arrived_holds_the_photo_and_its_arrival_runs_it_once(
    harness,
):
    harness.rule(masked_rule("sidecar"))
    harness.start()
    slow_backoff(harness)
    make_image(harness.drop / "vase.png")

    reason = held_reason(harness, "vase.png")
    assert "vase.mask.png does not exist next to vase.png" in reason, reason
    assert "add vase.mask.png beside the photo" in reason, reason
    assert (harness.drop / "vase.png").exists()

    save_mask(harness.drop / "vase.mask.png")
    manifest = done_manifest(harness, "vase")
    assert '"status": "done"' in manifest.read_text()
    # The plan made without the mask is replaced by the one made with it: it never runs,
    # leaves nothing held and puts nothing in quarantine.
    harness.wait(
        lambda: not [j for j in harness.ledger.jobs("vase.png") if j["state"] == "held"],
        30,
        "the plan made without the mask to be superseded",
    )
    states = sorted(p["state"] for p in harness.ledger.plans("vase.png"))
    assert states.count("done") == 1, states
    assert not harness.ledger.quarantine()
    assert (harness.drop / "vase.png").exists()


def test_a_mask_that_arrives_undecodable_is_the_inputs_fault_not_a_hold(harness):
    harness.rule(masked_rule("sidecar"))
    harness.start()
    make_image(harness.drop / "cup.png")
    held_reason(harness, "cup.png")  # no mask yet: held

    (harness.drop / "cup.mask.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png at all")
    failed = harness.wait(
        lambda: [j for j in harness.ledger.jobs("cup.png") if j["state"] == "failed"],
        60,
        "the photo planned with the broken mask to fail",
    )
    assert "cup.mask.png" in failed[0]["error"], failed[0]["error"]
    assert "does not exist" not in failed[0]["error"]
    harness.wait(
        lambda: not [j for j in harness.ledger.jobs("cup.png") if j["state"] == "held"],
        30,
        "nothing left held",
    )


# -- rules waiting for their reference folder ------------------------------------------------

PLAIN = """\
    name: plain
    match: {source: drop}
    prompt: "{stem}"
    steps: [{name: one, model: stub, seeds: [1]}]
    output: {sink: out, path: "{rule}/{stem}/{step}-{variant}.{ext}"}
    """

LOOKS = """\
    name: looks
    match: {source: drop, include: ["**/look-*.png"]}
    prompt: "{stem}"
    steps: [{name: one, model: stub, seeds: [1], references: ["%s"]}]
    output: {sink: out, path: "{rule}/{stem}/{step}-{variant}.{ext}"}
    """


def manifest_of(out: Path, rule: str, stem: str, timeout: float = 60) -> str:
    path = out / rule / stem / "manifest.json"
    wait_for(lambda: path.exists(), timeout, f"{rule}/{stem}'s manifest")
    return path.read_text()


def test_a_rule_whose_reference_folder_is_missing_at_start_waits_and_runs_the_gap_once_it_exists(
    tmp_path, darkroom
):
    daemon = darkroom(PLAIN)
    looks = tmp_path / "rules" / "looks.yaml"
    looks.write_text(textwrap.dedent(LOOKS % "refs/*.png"))
    daemon.start()  # not refused: the other rules run
    assert "rule looks waits: refs/*.png matches no file yet" in daemon.text()
    assert str(looks) in daemon.text()

    make_image(tmp_path / "drop" / "look-1.png", color=(10, 10, 10))  # dropped during the gap
    assert '"status": "done"' in manifest_of(tmp_path / "out", "plain", "look-1")
    assert not (tmp_path / "out" / "looks").exists()

    make_image(tmp_path / "rules" / "refs" / "face.png", color=(0, 255, 0))  # no SIGHUP
    assert '"status": "done"' in manifest_of(tmp_path / "out", "looks", "look-1")
    assert "rule looks accepted: refs/*.png now found" in daemon.text()
    # Offered again to every rule, it was not planned twice for the one that ran already.
    plans = LedgerView(tmp_path / "state").plans("look-1.png")
    assert sorted(p["rule"] for p in plans) == ["looks", "plain"], [dict(p) for p in plans]

    make_image(tmp_path / "drop" / "look-2.png", color=(20, 20, 20))  # after: as usual
    assert '"status": "done"' in manifest_of(tmp_path / "out", "looks", "look-2")


def test_a_new_rule_naming_a_reference_folder_not_mounted_yet_is_accepted_once_it_is(
    tmp_path, darkroom
):
    daemon = darkroom(PLAIN, extra="reference_dirs: {brand: brand}\n")
    daemon.start()
    # A new rule file (the watcher reloads it) names a folder that does not exist yet.
    (tmp_path / "rules" / "looks.yaml").write_text(textwrap.dedent(LOOKS % "brand:faces/*.png"))
    wait_for(lambda: "rule looks waits" in daemon.text(), 60, "the new rule to wait")
    assert "brand:faces/*.png matches no file yet" in daemon.text()
    assert not daemon.events("rules not reloaded; the previous rules keep running")
    make_image(tmp_path / "drop" / "look-3.png", color=(30, 30, 30))
    assert '"status": "done"' in manifest_of(tmp_path / "out", "plain", "look-3")

    make_image(tmp_path / "brand" / "faces" / "logo.png", color=(255, 0, 0))
    assert '"status": "done"' in manifest_of(tmp_path / "out", "looks", "look-3")
    assert "rule looks accepted: brand:faces/*.png now found" in daemon.text()


def test_a_rule_with_a_real_mistake_beside_a_missing_reference_is_still_refused(harness):
    harness.rule(PLAIN, "plain.yaml")
    harness.start()
    broken = LOOKS.replace("model: stub", "model: no-such-model") % "refs/*.png"
    harness.rule(broken, "looks.yaml")
    error = harness.wait(lambda: harness.app.rules_error, 30, "the reload to be refused")
    assert "no-such-model" in str(error)
    assert "looks" not in harness.app.waiting_rules
