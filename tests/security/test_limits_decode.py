"""Issue 15, bounded inputs: sources are decoded in a child process and come back reduced to
what the plan needs, so the daemon's main process stays small while near-limit images flow;
ordinary images give exactly the same pixels; a decoder child that dies holds the job (the
machine's fault) and never quarantines the input."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image, ImageCms

from daemon.errors import InputError
from tests.conftest import make_image
from tests.reliability.conftest import (  # noqa: F401 - fixtures
    darkroom,
    harness,
    vm_hwm_kib,
    wait_for,
)

RULE = """\
name: r
match: {source: drop}
prompt: "{stem}"
steps:
  - {name: one, model: stub, variants: 1, seeds: [1]}
output: {sink: out}
"""


def rgba_with_profile() -> bytes:
    image = Image.new("RGBA", (96, 64), (10, 200, 90, 255))
    for x in range(96):
        image.putpixel((x, x % 64), (x * 2, 40, 250 - x, x % 256))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    image.save(buffer, "PNG", icc_profile=srgb)
    return buffer.getvalue()


def test_the_child_gives_exactly_the_pixels_of_an_in_process_decode():
    from daemon.execution.decoder import ProcessDecoder, decode_source

    data = rgba_with_profile()
    decoder = ProcessDecoder()
    try:
        child = decoder.decode(data, "a.png")
        assert decoder.pids(), "no decoder child process"
        assert os.getpid() not in decoder.pids()
    finally:
        decoder.close()
    here = decode_source(data, "a.png")
    assert child.rgb.mode == "RGB" and child.rgb.tobytes() == here.rgb.tobytes()
    assert child.image.getchannel("A").tobytes() == here.image.getchannel("A").tobytes()
    assert child.icc == here.icc and child.icc is not None
    assert child.source_size == (96, 64)


def test_bad_bytes_are_still_the_files_fault():
    from daemon.execution.decoder import ProcessDecoder

    decoder = ProcessDecoder()
    try:
        with pytest.raises(InputError, match="not an image"):
            decoder.decode(b"just text, not a picture" * 10, "x.jpg")
        with pytest.raises(InputError, match="empty"):
            decoder.decode(b"", "e.jpg")
    finally:
        decoder.close()


def test_a_huge_source_comes_back_reduced_with_its_real_size():
    from daemon.execution.decoder import decode_source

    buffer = io.BytesIO()
    Image.new("RGB", (9000, 6000), (30, 60, 90)).save(buffer, "JPEG", quality=80)
    decoded = decode_source(buffer.getvalue(), "big.jpg")
    assert decoded.source_size == (9000, 6000)
    assert 2048 <= max(decoded.rgb.size) < 4096, decoded.rgb.size
    assert decoded.rgb.size == (2250, 1500)  # a whole factor: the aspect ratio is kept


def test_a_killed_decoder_holds_the_job_and_never_quarantines_the_input(harness, monkeypatch):  # noqa: F811
    """The decoder child is SIGKILLed as it starts on the image (DARKROOM_FAULT=in-decoder,
    as the OOM killer would): the job is held with the reason and the input stays; once
    children stop dying, the held job runs to the end."""
    harness.rule(RULE)
    make_image(harness.drop / "good.png")
    monkeypatch.setenv("DARKROOM_FAULT", "in-decoder")
    harness.start()
    held = harness.wait(
        lambda: [j for j in harness.ledger.jobs("good.png") if j["state"] == "held"],
        60,
        "the job to be held",
    )
    assert "decoder process died" in held[0]["error"], held[0]["error"]
    assert (harness.drop / "good.png").exists()
    assert not harness.ledger.quarantine()
    monkeypatch.delenv("DARKROOM_FAULT")  # children started from now on live
    harness.wait(lambda: harness.settled("good.png") == "done", 60, "the held job to finish")
    assert (harness.drop / "good.png").exists()
    assert not harness.ledger.quarantine()
    assert not (harness.quarantine_dir / "good.png").exists()


def test_near_limit_images_leave_the_main_process_small(darkroom, tmp_path: Path):  # noqa: F811
    """Two 80 MP images through the real daemon: its main process's peak RSS stays under
    300 MiB (decoding one in the main process takes it past 1 GB)."""
    daemon = darkroom(RULE)
    daemon.start()
    for name in ("first", "second"):
        staging = tmp_path / f".{name}.jpg"
        Image.new("RGB", (10328, 7746), (90, 120, 150)).save(staging, "JPEG", quality=85)
        staging.rename(tmp_path / "drop" / f"{name}.jpg")
    for name in ("first", "second"):
        manifest = tmp_path / "out" / "r" / f"{name}.jpg" / "manifest.json"
        wait_for(manifest.exists, 300, f"{name}.jpg's manifest")
        assert json.loads(manifest.read_text())["status"] == "done"
    peak_mib = vm_hwm_kib(daemon.pid) / 1024
    assert peak_mib < 300, f"the main process peaked at {peak_mib:.0f} MiB"
