"""Scenario 9: the sink's disk is full (injected ENOSPC at fsync, and a real tiny tmpfs
where this runs as root and may mount): no partial output is visible, the job is held (the
environment's fault: no attempt spent, the input stays), nothing is marked done; when space
returns the source completes once."""

from __future__ import annotations

import errno
import os
import subprocess
import uuid

import pytest

from tests.conftest import make_image
from tests.reliability.conftest import check_output_set, temp_files, tree


class FullDisk:
    """``os.fsync`` fails with ENOSPC for files under ``root`` (whose name matches
    ``only``) while ``full`` is set, as a full disk fails the flush of a written file."""

    def __init__(self, monkeypatch, root, only: str = ""):
        self.root, self.only, self.full, self.hits = str(root), only, True, 0
        real = os.fsync

        def fsync(fd):
            try:
                path = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                path = ""
            if self.full and path.startswith(self.root) and self.only in os.path.basename(path):
                self.hits += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


def test_enospc_on_outputs_leaves_nothing_partial_and_retries_later(harness, monkeypatch):
    harness.rule()
    disk = FullDisk(monkeypatch, harness.out)
    harness.start(max_attempts=10, retry_backoff=0.2)
    make_image(harness.drop / "photo.png")
    harness.wait(lambda: disk.hits >= 2, 20, "two tries to hit the full disk")
    harness.wait(
        lambda: any(j["state"] == "held" for j in harness.ledger.jobs("photo.png")),
        20,
        "the job to be held",
    )
    [job] = harness.ledger.jobs("photo.png")
    assert job["state"] in ("held", "queued", "running"), dict(job)
    assert "disk full" in (job["error"] or "") or "No space" in (job["error"] or ""), dict(job)
    assert harness.ledger.plans("photo.png")[0]["state"] == "active"
    assert [p for p in tree(harness.out) if not p.startswith(".")] == [] or not (
        harness.out / "r" / "photo.png" / "manifest.json"
    ).exists()
    assert not [p for p in tree(harness.out) if p.endswith(".png")], tree(harness.out)
    assert not temp_files(harness.out)
    assert (harness.drop / "photo.png").exists(), "a sink problem must not quarantine the input"

    disk.full = False
    harness.wait(lambda: harness.settled("photo.png"), 20, "the retry after space returns")
    check_output_set(harness.out, harness.state, "r/photo.png", "photo.png")


def test_enospc_on_the_manifest_is_retried_and_the_daemon_keeps_working(harness, monkeypatch):
    harness.rule()
    disk = FullDisk(monkeypatch, harness.out, only="manifest.json")
    harness.start(max_attempts=10, retry_backoff=0.2)
    make_image(harness.drop / "photo.png")
    harness.wait(lambda: disk.hits >= 1, 20, "the manifest write to hit ENOSPC")
    assert harness.ledger.plans("photo.png")[0]["state"] == "active", (
        "not done without its manifest"
    )
    assert not (harness.out / "r" / "photo.png" / "manifest.json").exists()
    # The page and preview may still be mid-write (a hidden temp file): none may stay.
    harness.wait(lambda: not temp_files(harness.out), 20, "no temp files left behind")
    disk.full = False
    make_image(harness.drop / "next.png", color=(5, 5, 5))
    harness.wait(
        lambda: harness.settled("photo.png") and harness.settled("next.png"),
        20,
        "the manifest retried and the next file processed",
    )
    check_output_set(harness.out, harness.state, "r/photo.png", "photo.png")
    check_output_set(harness.out, harness.state, "r/next.png", "next.png")


def test_real_tiny_tmpfs_sink(harness, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "darkroom-test", str(harness.out)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        filler = harness.out / f"filler-{uuid.uuid4().hex}"
        try:
            with open(filler, "wb") as fh:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
        except OSError:
            pass
        harness.rule()
        harness.start(max_attempts=10, retry_backoff=0.2)
        make_image(harness.drop / "photo.png")
        harness.wait(
            lambda: any(j["state"] == "held" for j in harness.ledger.jobs("photo.png")),
            20,
            "the job to be held on the full tmpfs",
        )
        assert harness.ledger.plans("photo.png")[0]["state"] == "active"
        assert not temp_files(harness.out)
        filler.unlink()
        harness.wait(lambda: harness.settled("photo.png"), 30, "the retry after space returns")
        check_output_set(harness.out, harness.state, "r/photo.png", "photo.png")
    finally:
        harness.stop()
        subprocess.run(["umount", "-l", str(harness.out)], capture_output=True)
