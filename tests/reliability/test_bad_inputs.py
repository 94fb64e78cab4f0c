"""Scenario 5 (and the quarantine feature): bad inputs end quarantined with a clear reason
within seconds, after a bounded number of attempts, while good files keep flowing."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib

import pytest
from PIL import Image

from tests.conftest import make_image

RULE_ALL = """\
name: r
match: {source: drop, include: ["**/*"]}
prompt: "{stem}"
steps:
  - {name: one, model: stub, variants: 2, seeds: [1, 2]}
output: {sink: out}
"""


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\0" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def encoded(fmt: str, size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, (120, 30, 200))
    for x in range(size[0]):
        image.putpixel((x, x % size[1]), (x * 3 % 256, 0, 0))
    image.save(buffer, fmt)
    return buffer.getvalue()


BAD = {
    "empty.jpg": (b"", "empty"),
    "truncated.jpg": (encoded("JPEG", (256, 256))[:600], "cannot decode"),
    "truncated.png": (encoded("PNG", (256, 256))[:300], "cannot decode"),
    "text.jpg": (b"this is not a picture, just text with a .jpg name\n" * 20, "not an image"),
    "drawing.svg": (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "not an image",
    ),
    "bomb200.png": (png_declaring(20_000, 10_000), "decompression bomb"),
    "bomb120.png": (png_declaring(12_000, 10_000), "decompression bomb"),
    "absurd.png": (png_declaring(2**31 - 1, 2**31 - 1), ""),
    "zero-size.png": (png_declaring(0, 0), ""),
}


@pytest.mark.slow  # runs `darkroom status` as a subprocess
def test_bad_inputs_are_quarantined_with_a_reason_and_the_daemon_keeps_going(harness, tmp_path):
    harness.rule(RULE_ALL)
    # Truncated and empty files are held in place for truncated_grace first (they may be
    # uploads in progress, tests/trust/test_uploads.py); here they are simply bad.
    harness.start(max_attempts=3, source_extra=", truncated_grace: 0.5")
    (harness.drop / "x.jpg").mkdir()  # a directory with an image's name is not an input
    for name, (data, _) in BAD.items():
        (harness.drop / name).write_bytes(data)
    make_image(harness.drop / "good.png")

    # Generous for a busy machine; how fast is bench/ business, not a test's.
    # Ended, and quarantined (the plan ends just before its input is put aside).
    harness.wait(
        lambda: (
            all(harness.settled(k) for k in [*BAD, "good.png"])
            and set(BAD) <= {row["key"] for row in harness.ledger.quarantine()}
        ),
        120,
        "every input to end: " + str({k: harness.outcome(k) for k in [*BAD, "good.png"]}),
    )
    assert harness.outcome("good.png") == "done"
    assert harness.app.runner.stopping.is_set() is False

    quarantined = {row["key"]: row for row in harness.ledger.quarantine()}
    for name, (_, reason) in BAD.items():
        assert harness.outcome(name) == "failed", name
        assert name in quarantined, f"{name} not in the ledger's quarantine table"
        row = quarantined[name]
        assert reason in row["reason"], (name, row["reason"])
        moved = harness.quarantine_dir / name
        assert row["location"] == str(moved)
        assert moved.exists() and not (harness.drop / name).exists(), name
        record = json.loads((harness.quarantine_dir / f"{name}.reason.json").read_text())
        assert record["key"] == name and record["rule"] == "r" and reason in record["reason"]
        assert 1 <= record["attempts"] <= 3 and record["at"].endswith("Z"), record
        for job in harness.ledger.jobs(name):
            assert job["attempts"] == 1, (
                f"{name}: a bad input is not worth a retry ({job['attempts']})"
            )
    assert harness.ledger.plans("x.jpg") == [] and (harness.drop / "x.jpg").is_dir()

    # darkroom status lists them, with reasons
    status = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "status", "--config", str(harness.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert "quarantined:" in status.stdout
    for name in BAD:
        assert f"drop:{name} -> {harness.quarantine_dir / name}" in status.stdout, status.stdout

    # a fixed file dropped again under the same name is processed normally
    (harness.drop / "text.jpg").write_bytes(encoded("JPEG"))
    harness.wait(
        lambda: any(p["state"] == "done" for p in harness.ledger.plans("text.jpg")),
        20,
        "the fixed text.jpg",
    )
    assert (harness.out / "r" / "text.jpg" / "manifest.json").exists()


def _start_with_unreadable(harness, make_unreadable):
    from daemon.errors import InputError
    from daemon.sources.folder import FolderSource

    def sources(settings):
        source = FolderSource.from_config("drop", settings.sources["drop"])
        real_read = source.read

        def read(key, etag=None):
            if make_unreadable and key == "locked.png":
                raise InputError(f"{source.root}/{key}: permission denied")
            return real_read(key, etag)

        source.read = read
        return {"drop": source}

    harness.rule(RULE_ALL)
    harness.start(source_factory=sources if make_unreadable else None)
    path = harness.drop / "locked.png"
    make_image(path)
    if not make_unreadable:
        os.chmod(path, 0)
    make_image(harness.drop / "good.png")
    harness.wait(lambda: harness.settled("good.png"), 20, "good.png")
    harness.wait(
        lambda: harness.settled("locked.png"), 15, "locked.png to end with a recorded outcome"
    )
    assert "permission denied" in harness.ledger.quarantine()[0]["reason"]


@pytest.mark.skipif(
    os.geteuid() == 0, reason="running as root: chmod 000 does not stop root from reading"
)
def test_unreadable_file_is_quarantined_not_retried_forever(harness):
    _start_with_unreadable(harness, make_unreadable=False)


def test_unreadable_file_simulated_at_the_source_seam(harness):
    """The same, for root: the source's read refuses the file as EACCES would."""
    _start_with_unreadable(harness, make_unreadable=True)
