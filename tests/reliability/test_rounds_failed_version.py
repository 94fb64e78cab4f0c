"""A new version of an asset that fails: the folder's top level matches the manifest beside it.

Version 1 of photo.png completes; version 2 fails (a model error, or bytes so bad the input is
quarantined). The manifest then describes version 2 (failed), so version 1's files leave the
top level for rounds/1/ (checked byte for byte), exactly as a successful version 2 would
archive them; the manifest and page say which version they are and link them. A held version
2 (an environment fault) and a superseded one (version 3 arrived) leave version 1 where it
is; kill -9 while archiving loses nothing and the next start finishes the job.
"""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import pytest

from tests.conftest import make_image
from tests.reliability.conftest import LedgerView, temp_files, tree, wait_for
from tests.reliability.test_disk_full import FullDisk
from tests.unit.test_runner import build, drain, png, ruleset

# One step, two seeds; the stub fails (a model error that no retry can fix) only while the
# marker file is missing: version 1 runs with it, version 2 without.
FAILING_RULE = """\
name: r
match: {source: drop}
prompt: "{stem}"
steps:
  - {name: one, model: stub, variants: 2, seeds: [1, 2], params: {stub_fail: invalid, stub_fail_once: 'MARKER'}}
output: {sink: out}
"""

KEY = "photo.png"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def replace_source(tmp_path: Path, data: bytes) -> str:
    """A new version of drop/photo.png, written whole then renamed in (as uploaders do)."""
    staged = tmp_path / "staged.png"
    staged.write_bytes(data)
    staged.rename(tmp_path / "drop" / KEY)
    return sha(data)


def image_bytes(tmp_path: Path, color: tuple[int, int, int]) -> bytes:
    return make_image(tmp_path / f"made-{color[0]}.png", color=color).read_bytes()


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def outputs_of(m: dict) -> dict[str, str]:
    """Output path -> recorded sha256."""
    return {o["path"]: o["sha256"] for s in m["steps"] for o in s["outputs"]}


def wait_manifest_of(folder: Path, source_sha: str, timeout: float = 60) -> dict:
    def ready() -> dict | None:
        try:
            m = manifest(folder)
        except (OSError, ValueError):
            return None
        return m if m["source"]["sha256"] == source_sha else None

    return wait_for(ready, timeout, f"the manifest of source {source_sha[:8]}")  # type: ignore[return-value]


def assert_previous_round_kept(out: Path, folder: Path, v1: dict, v2: dict) -> None:
    """v1's files are under rounds/1/ with their recorded bytes, the top level holds only what
    v2's manifest lists (plus its views), and the manifest says where v1 went."""
    top = [p for p in tree(folder) if "/" not in p]
    listed = {Path(p).name for p in outputs_of(v2)}
    stale = [p for p in top if p.startswith("one-") and p not in listed]
    assert not stale, f"version 1's files still at the top level: {stale} ({top})"
    thumbs = [p for p in tree(folder) if p.startswith("thumbs/")]
    assert thumbs == sorted(f"thumbs/{Path(n).stem}.webp" for n in listed), thumbs
    [kept] = v2["rounds"]
    assert kept["round"] == 1 and kept["status"] == "done", kept
    assert kept["source_sha256"] == v1["source"]["sha256"]
    record = json.loads((out / kept["manifest"]).read_text())
    assert record["plan_id"] == v1["plan_id"], "rounds/1/round.json is not version 1's record"
    by_name = {Path(p).name: h for p, h in outputs_of(v1).items()}
    assert sorted(Path(p).name for p in kept["outputs"]) == sorted(by_name)
    for path in kept["outputs"]:
        assert "/rounds/1/" in path
        assert sha((out / path).read_bytes()) == by_name[Path(path).name], path
    assert not temp_files(out)


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["model-error", "bad-bytes"])
def test_a_failed_new_version_moves_the_previous_round_under_rounds(tmp_path, darkroom, failure):
    marker = tmp_path / "model-ok"
    marker.touch()
    daemon = darkroom(FAILING_RULE.replace("MARKER", str(marker)))
    daemon.start()
    out, folder = tmp_path / "out", tmp_path / "out" / "r" / KEY
    first = image_bytes(tmp_path, (200, 80, 40))
    v1 = wait_manifest_of(folder, replace_source(tmp_path, first))
    assert v1["status"] == "done"

    if failure == "model-error":
        marker.unlink()  # the model now refuses every request
        second = image_bytes(tmp_path, (10, 10, 200))
    else:  # a PNG header, then garbage: an input fault once the upload is proven finished
        second = first[:40] + b"\0" * 300 + b"IEND\xaeB`\x82"
    v2 = wait_manifest_of(folder, replace_source(tmp_path, second))
    ledger = LedgerView(tmp_path / "state")
    wait_for(lambda: ledger.outcome(KEY) not in (None, "active"), 60, "version 2 to settle")
    v2 = manifest(folder)

    assert v2["status"] == "failed", v2
    assert outputs_of(v2) == {}
    assert_previous_round_kept(out, folder, v1, v2)
    page = (folder / "index.html").read_text()
    assert "This version failed" in page and "rounds/1/one-0.png" in page
    assert (tmp_path / "drop" / ".quarantine" / KEY).read_bytes() == second
    assert daemon.stop() == 0


@pytest.mark.slow
def test_a_crash_after_the_failed_manifest_is_finished_on_the_next_start(tmp_path, darkroom):
    """kill -9 between the failed round's manifest and moving the previous round away: every
    file is in one place or both, and the next start retires what is left."""
    marker = tmp_path / "model-ok"
    marker.touch()
    daemon = darkroom(FAILING_RULE.replace("MARKER", str(marker)))
    daemon.start()
    out, folder = tmp_path / "out", tmp_path / "out" / "r" / KEY
    v1 = wait_manifest_of(folder, replace_source(tmp_path, image_bytes(tmp_path, (200, 80, 40))))
    assert daemon.stop() == 0

    marker.unlink()
    daemon.start(env={"DARKROOM_FAULT": "after-manifest"})
    second = replace_source(tmp_path, image_bytes(tmp_path, (10, 10, 200)))
    assert daemon.wait_exit(60) == -signal.SIGKILL
    v2 = manifest(folder)
    assert v2["source"]["sha256"] == second and v2["status"] == "failed"
    for path, recorded in outputs_of(v1).items():  # findable: in place, or kept, or both
        kept = folder / "rounds" / "1" / Path(path).name
        assert any(p.exists() and sha(p.read_bytes()) == recorded for p in (out / path, kept))

    daemon.start()
    ledger = LedgerView(tmp_path / "state")
    wait_for(lambda: ledger.outcome(KEY) not in (None, "active"), 60, "the plan to be closed")
    assert sorted(p["state"] for p in ledger.plans(KEY)) == ["done", "failed"]
    assert_previous_round_kept(out, folder, v1, manifest(folder))
    assert daemon.stop() == 0


@pytest.mark.slow
def test_a_crash_while_archiving_loses_nothing_and_the_next_start_finishes(tmp_path, darkroom):
    """kill -9 at the first write of version 2 (the archive's first copy), then an archive a
    crash left half done (one file copied): the next start completes rounds/1/, never a
    second rounds/2/, and version 2 commits over it."""
    daemon = darkroom()
    daemon.start()
    out, folder = tmp_path / "out", tmp_path / "out" / "r" / KEY
    v1 = wait_manifest_of(folder, replace_source(tmp_path, image_bytes(tmp_path, (200, 80, 40))))
    assert daemon.stop() == 0

    daemon.start(env={"DARKROOM_FAULT": "after-temp-write"})
    second = replace_source(tmp_path, image_bytes(tmp_path, (10, 10, 200)))
    assert daemon.wait_exit(60) == -signal.SIGKILL
    assert temp_files(folder / "rounds"), "the crash should have hit the archive's first copy"
    assert manifest(folder) == v1, "the crash changed the committed round"
    for path, recorded in outputs_of(v1).items():
        assert sha((out / path).read_bytes()) == recorded, f"{path} changed before its copy"
    # What a crash one copy later leaves: the round's record and its first file.
    (folder / "rounds" / "1").mkdir(parents=True, exist_ok=True)
    (folder / "rounds" / "1" / "round.json").write_bytes((folder / "manifest.json").read_bytes())
    (folder / "rounds" / "1" / "one-0.png").write_bytes((folder / "one-0.png").read_bytes())

    daemon.start()
    v2 = wait_manifest_of(folder, second)
    assert v2["status"] == "done"
    assert_previous_round_kept(out, folder, v1, v2)
    assert not (folder / "rounds" / "2").exists(), tree(folder)
    assert daemon.stop() == 0


def test_a_held_new_version_leaves_the_previous_round_in_place(harness, monkeypatch):
    """An environment fault (the sink's disk is full) holds version 2: version 1 stays at the
    top level, described by its own manifest, until version 2 resumes and commits."""
    harness.rule()
    disk = FullDisk(monkeypatch, harness.out, only="one-")
    disk.full = False
    harness.start(max_attempts=10)
    folder = harness.out / "r" / KEY
    v1 = wait_manifest_of(folder, replace_source(harness.root, png(color=(200, 80, 40))), 30)
    before = {p: (folder / p).read_bytes() for p in tree(folder) if "/" not in p}

    disk.full = True
    second = replace_source(harness.root, png(color=(10, 10, 200)))
    harness.wait(
        lambda: any(j["state"] == "held" for j in harness.ledger.jobs(KEY)), 30, "a held job"
    )
    assert manifest(folder) == v1
    assert {p: (folder / p).read_bytes() for p in before} == before
    assert not [p for p in tree(folder) if p.startswith("rounds/") and p.endswith(".png")]

    disk.full = False  # space is back: the held job resumes by itself
    v2 = wait_manifest_of(folder, second, 30)
    harness.wait(lambda: harness.settled(KEY) == "done", 30, "version 2 done")
    v2 = manifest(folder)
    assert v2["status"] == "done"
    assert_previous_round_kept(harness.out, folder, v1, v2)


def test_a_superseded_new_version_commits_no_round_of_its_own(tmp_path):
    """Version 2 is replaced by version 3 before it is read: nothing of version 2 reaches the
    folder, version 1 stays in place meanwhile, and version 3's manifest lists one earlier
    round (version 1), not a failed one in between."""
    ledger, source, sink, runner, intake = build(tmp_path, ruleset())
    first, second, third = png(color=(200, 0, 0)), png(color=(0, 200, 0)), png(color=(0, 0, 200))
    source.put(KEY, first)
    drain(intake, runner)
    v1 = json.loads(sink.read(f"r/{KEY}/manifest.json"))
    top_v1 = {p: sink.read(p) for p in outputs_of(v1)}

    source.put(KEY, second)
    intake.handle(intake.queue.get())  # version 2 is planned...
    source.put(KEY, third)  # ...and replaced before its job reads it
    while runner.step():
        pass
    assert json.loads(sink.read(f"r/{KEY}/manifest.json")) == v1
    assert {p: sink.read(p) for p in top_v1} == top_v1
    assert source.quarantined == {}

    drain(intake, runner)
    v3 = json.loads(sink.read(f"r/{KEY}/manifest.json"))
    assert v3["source"]["sha256"] == sha(third) and v3["status"] == "done"
    assert [(r["round"], r["source_sha256"]) for r in v3["rounds"]] == [(1, sha(first))]
    ledger.close()


def test_a_rounds_folder_that_already_holds_other_files_is_never_overwritten(tmp_path):
    """Something already sits at rounds/1/ (a hand-made copy, an older daemon's round): the
    earlier round is kept under rounds/2/ and that file keeps its bytes."""
    ledger, source, sink, runner, intake = build(tmp_path, ruleset())
    source.put(KEY, png(color=(200, 0, 0)))
    drain(intake, runner)
    sink.write(f"r/{KEY}/rounds/1/one-0.png", b"someone else's file")
    source.put(KEY, png(color=(0, 200, 0)))
    drain(intake, runner)

    assert sink.read(f"r/{KEY}/rounds/1/one-0.png") == b"someone else's file"
    [kept] = json.loads(sink.read(f"r/{KEY}/manifest.json"))["rounds"]
    assert kept["round"] == 2 and all("/rounds/2/" in p for p in kept["outputs"]), kept
    ledger.close()
