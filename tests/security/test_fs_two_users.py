"""Two users, the real daemon: the uploader (uid 65534, nobody) owns nothing but what it
writes into a shared drop folder; it plants a quarantine folder of its own with a symlink to
a 0600 file, and a processed "folder" that is a symlink out of the drop folder. The daemon
(root here) refuses both, leaves the victim and the inputs alone, and still processes the
legitimate upload."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from PIL import Image

from tests.reliability.conftest import LedgerView, darkroom, wait_for  # noqa: F401

NOBODY = 65534

RULE_MOVE = """\
name: r
match: {source: drop, include: ["**/*"]}
prompt: "{stem}"
steps:
  - {name: one, model: stub, variants: 1, seeds: [1]}
output: {sink: out, on_success: move}
"""

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root to act as a second user (setuid to nobody)",
)


def _png() -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (64, 64), (30, 140, 200))
    for x in range(64):
        image.putpixel((x, x), (x * 4, 0, 0))
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _as_nobody(drop: Path, victim: Path, stolen: Path, good: bytes) -> None:
    """In a forked child that setuid()s to nobody, plant the traps and upload two files.
    The drop folder is opened first: nobody cannot search the test's private tmp folders,
    but works relative to the descriptor like an uploader inside its share."""
    drop_fd = os.open(drop, os.O_RDONLY | os.O_DIRECTORY)
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.mkdir(".quarantine", 0o777, dir_fd=drop_fd)
            quarantine_fd = os.open(".quarantine", os.O_RDONLY | os.O_DIRECTORY, dir_fd=drop_fd)
            os.symlink(victim, "bad.png.reason.json", dir_fd=quarantine_fd)
            os.symlink(stolen, ".processed", dir_fd=drop_fd)
            for name, data in (("good.png", good), ("bad.png", b"not a picture at all\n" * 20)):
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=drop_fd)
                os.write(fd, data)
                os.close(fd)
            code = 0
        finally:
            os._exit(code)
    os.close(drop_fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the uploader's child failed"


def test_the_daemon_refuses_an_uploaders_folders_and_still_processes_its_upload(
    darkroom,  # noqa: F811
    tmp_path: Path,
):
    daemon = darkroom(RULE_MOVE, source_extra=", truncated_grace: 1")
    drop = tmp_path / "drop"
    drop.chmod(0o777)  # a shared drop folder: the uploader may create anything in it
    victim = tmp_path / "private" / "victim.key"
    victim.parent.mkdir()
    victim.write_text("the operator's secret")
    victim.chmod(0o600)
    stolen = tmp_path / "stolen"
    stolen.mkdir()
    _as_nobody(drop, victim, stolen, _png())
    assert (drop / ".quarantine").stat().st_uid == NOBODY
    assert (drop / "good.png").stat().st_uid == NOBODY

    daemon.start()
    ledger = LedgerView(tmp_path / "state")
    try:
        wait_for(
            lambda: ledger.outcome("good.png") == "done" and ledger.outcome("bad.png") == "failed",
            120,
            "good.png done and bad.png failed",
        )
        # Both plans are closed (moved/quarantined or not) once "source finished" is logged.
        wait_for(
            lambda: all(
                daemon.events("source finished", key=key) for key in ("good.png", "bad.png")
            ),
            60,
            "both inputs to be finished",
        )
    finally:
        daemon.stop()

    # The victim is untouched, nothing left the drop folder, nothing was written for nobody.
    assert victim.read_text() == "the operator's secret"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert list(stolen.iterdir()) == [], "the processed input was moved out of the drop folder"
    assert (drop / "good.png").exists() and (drop / "bad.png").exists()
    assert sorted(os.listdir(drop / ".quarantine")) == ["bad.png.reason.json"]
    assert (drop / ".quarantine" / "bad.png.reason.json").is_symlink()
    # The daemon said why, naming the folder and the owner, at start and at each use.
    refused = {e["role"]: e for e in daemon.events("folder refused", source="drop")}
    assert set(refused) == {"quarantine", "processed"}, daemon.text()[-3000:]
    assert refused["quarantine"]["path"] == str(drop / ".quarantine")
    assert f"belongs to uid {NOBODY}" in refused["quarantine"]["reason"]
    assert refused["processed"]["path"] == str(drop / ".processed")
    assert "is a symlink" in refused["processed"]["reason"]
    [quarantine] = daemon.events("cannot quarantine", key="bad.png")
    assert "hint: remove" in quarantine["reason"]
    [move] = daemon.events("cannot move source after success", key="good.png")
    assert ".processed is a symlink" in move["reason"]
    # The legitimate upload was processed all the same.
    manifests = list((tmp_path / "out").rglob("manifest.json"))
    assert manifests, "good.png produced no manifest"
    [row] = [r for r in ledger.quarantine() if r["key"] == "bad.png"]
    assert row["reason"]
