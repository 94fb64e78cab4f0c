"""Provenance round trips (PNG iTXt + XMP, JPEG/WebP XMP) and ``darkroom inspect``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from daemon.outputs import provenance

INFO: dict[str, Any] = {
    "darkroom_version": "0.1.0",
    "prompt": 'a <lamp> & "quotes" — ünïcode ✓\nsecond line',
    "negative_prompt": "blurry, <bad>",
    "model": "sd-turbo",
    "model_id": "stabilityai/sd-turbo",
    "model_revision": "abc123",
    "profile": "sd-turbo",
    "seed": 42,
    "steps": 2,
    "strength": 0.55,
    "guidance": 0.0,
    "source_sha256": "f" * 64,
    "rule": "product-lifestyle",
    "step": "explore",
    "provider": "fal",
    "request_id": "req-1",
    "params": {"strength": 0.55, "steps": 2, "size": [512, 384]},
}
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


def encode(fmt: str, info: dict[str, Any] | None) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 100, 50)).save(buf, fmt, **provenance.save_kwargs(fmt, info))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_round_trip(fmt: str) -> None:
    assert provenance.read(encode(fmt, INFO)) == provenance.normalize(INFO)


@settings(max_examples=25, deadline=None)
@given(prompt=st.text(max_size=200), seed=st.integers(0, 2**63), fmt=st.sampled_from(list(FORMATS)))
def test_round_trip_any_text(prompt: str, seed: int, fmt: str) -> None:
    info = {"prompt": prompt, "seed": seed, "model": "m"}
    assert provenance.read(encode(fmt, info)) == info


def test_png_carries_a1111_parameters_and_xmp() -> None:
    im = Image.open(io.BytesIO(encode("PNG", INFO)))
    params = im.info["parameters"]
    lines = params.split("\n")
    assert lines[:2] == ['a <lamp> & "quotes" — ünïcode ✓', "second line"]
    assert lines[2] == "Negative prompt: blurry, <bad>"
    assert lines[3].startswith(
        "Steps: 2, CFG scale: 0.0, Seed: 42, Denoising strength: 0.55, Model: sd-turbo"
    )
    assert provenance.NAMESPACE in im.info["XML:com.adobe.xmp"]


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_xmp_has_readable_scalars(fmt: str) -> None:
    xmp = Image.open(io.BytesIO(encode(fmt, INFO))).info["xmp"]
    assert b"<darkroom:Seed>42</darkroom:Seed>" in xmp
    assert b"<darkroom:Prompt>a &lt;lamp&gt;" in xmp


def test_nothing_embedded_reads_none_and_legacy_exif_still_reads() -> None:
    for fmt in FORMATS:
        assert provenance.read(encode(fmt, None)) is None
    assert provenance.read(b"not an image") is None
    exif = Image.Exif()
    exif[0x010E] = json.dumps({"prompt": "old"})
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG", exif=exif)
    assert provenance.read(buf.getvalue()) == {"prompt": "old"}
    with pytest.raises(ValueError, match="BMP"):
        provenance.save_kwargs("BMP", INFO)


@pytest.mark.slow  # runs the darkroom CLI as a subprocess
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_inspect_cli(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"out{FORMATS[fmt]}"
    path.write_bytes(encode(fmt, INFO))
    run = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "inspect", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == provenance.normalize(INFO)


@pytest.mark.slow  # runs the darkroom CLI as a subprocess
def test_inspect_without_provenance(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    path.write_bytes(encode("PNG", None))
    run = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "inspect", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert f"no Darkroom provenance in {path}" in run.stderr
