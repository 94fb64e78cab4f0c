"""Drop images into a watched folder; get variants, manifests and sheets, exactly once."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import make_image
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.slow

RULE = """\
name: explore
match:
  source: drop
  include: ["**/*.jpg", "**/*.png"]
prompt: "{stem}, watercolor illustration"
steps:
  - name: explore
    model: tiny
    variants: 2
    seed: 100
    strength: 0.6
    steps: 2
output:
  sink: out
"""
IGNORED = "no rule matches; ignored (darkroom match explains why)"


def write_slowly(src: Path, dst: Path, chunks: int = 8, pause: float = 0.3) -> None:
    data = src.read_bytes()
    size = len(data) // chunks + 1
    with open(dst, "wb") as fh:
        for i in range(0, len(data), size):
            fh.write(data[i : i + size])
            fh.flush()
            time.sleep(pause)


def manifest(out: Path, stem: str) -> dict | None:
    # The default output folder is {rule}/{dir}/{stem}.{source_ext}.
    path = next(iter(out.glob(f"explore/{stem}.*/manifest.json")), out / "missing")
    return json.loads(path.read_text()) if path.exists() else None


def test_drop_three_images_restart_and_a_corrupt_one(tmp_path, daemon_factory):
    daemon = daemon_factory(RULE)
    daemon.start()
    drop, out, staging = tmp_path / "drop", tmp_path / "out", tmp_path / "staging"

    # 1. A plain copy, a slow chunked write (~2.4 s, longer than the quiet period) and a
    #    temp-name upload renamed into place.
    make_image(drop / "plain.png", (64, 64))
    slow_src = make_image(staging / "slow.jpg", (128, 64))
    writer = threading.Thread(target=write_slowly, args=(slow_src, drop / "slow.jpg"))
    writer.start()
    make_image(staging / "renamed.jpg", (64, 96))
    shutil.copy(staging / "renamed.jpg", drop / "renamed.jpg.part")
    # The scenario: the temp name sits still for longer than the quiet period. The wait only
    # gives a wrong daemon time to take it (asserted below); it cannot fail a right one.
    time.sleep(1.0)
    os.rename(drop / "renamed.jpg.part", drop / "renamed.jpg")
    writer.join()

    stems = {
        "plain": (64, 64),
        "slow": (64, 32),
        "renamed": (40, 64),
    }  # fitted within 64 px, multiples of 8
    wait_for(lambda: all(manifest(out, s) for s in stems), 120, "three manifests")

    started = Counter(e["key"] for e in daemon.events("job started"))
    assert started == {"plain.png": 1, "slow.jpg": 1, "renamed.jpg": 1}
    assert not daemon.events("queued", key="renamed.jpg.part")
    for stem, size in stems.items():
        m = manifest(out, stem)
        assert m["status"] == "done"
        assert m["rule"]["prompt"] == f"{stem}, watercolor illustration"
        outputs = m["steps"][0]["outputs"]
        assert [o["seed"] for o in outputs] == [100, 101]
        for o in outputs:
            image = Image.open(out / o["path"])
            image.load()
            assert image.size == size
            assert o["model"] == "tiny" and o["model_id"] == "random:sd-tiny"
        sheet = Image.open(out / m["sheet"])
        assert sheet.width > sheet.height > 0
    # The slow file was hashed only once complete: its manifest has the full file's hash.
    assert (
        manifest(out, "slow")["source"]["sha256"]
        == hashlib.sha256(slow_src.read_bytes()).hexdigest()
    )

    # 2. SIGTERM stops cleanly; a restart reprocesses nothing.
    assert daemon.stop() == 0
    assert daemon.events("stopped")
    assert not list(out.rglob(".*.tmp")), "temp files left in the sink"
    # After the stop: views written just after the last manifest (index, board) are done.
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    # A file no rule takes, there before the restart: the startup scan finds it with the
    # others, so once it is logged as ignored the others have been looked at too.
    make_image(drop / "barrier.webp", (16, 16))
    daemon.start()
    wait_for(
        lambda: daemon.events(IGNORED, key="barrier.webp"), 60, "the startup scan to be decided"
    )
    assert not daemon.events("job started")
    assert not daemon.events("queued")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes

    # 3. A corrupt JPEG fails with a readable reason; a good file after it still succeeds.
    jpeg = slow_src.read_bytes()
    (drop / "corrupt.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    wait_for(lambda: daemon.events("queued", key="corrupt.jpg"), 60, "corrupt.jpg queued")
    make_image(drop / "after.png", (64, 64), color=(10, 200, 30))
    wait_for(
        lambda: manifest(out, "after") and manifest(out, "corrupt"),
        60,
        "corrupt and after manifests",
    )
    bad = manifest(out, "corrupt")
    assert bad["status"] == "failed"
    reason = bad["steps"][0]["error"]
    assert "corrupt.jpg" in reason and "cannot decode" in reason
    assert bad["steps"][0]["attempts"] == 1  # a bad input is not retried
    assert manifest(out, "after")["status"] == "done"
    assert daemon.proc.poll() is None

    status = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "status", "--config", str(daemon.config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert "failed 1" in status.stdout and "corrupt.jpg" in status.stdout
    assert daemon.stop() == 0
