"""Honest labels (issue 19): every output says it is AI-made with the IPTC Digital Source
Type in its XMP (read back with an XML parser, as tools do), GIF and mp4 carry the record
too, and ``darkroom inspect`` reads images and videos."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from backends import video_io
from backends.base import Video
from daemon.outputs import imaging, provenance

TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
IPTC_EXT = "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}"
RECORD = {"prompt": "a lamp", "seed": 7, "model": "sd-turbo", "digital_source_type": COMPOSITE}


def xmp_of(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data))
    packet = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    assert packet, f"no XMP packet in the {image.format}"
    return packet.encode() if isinstance(packet, str) else packet


def digital_source_type(xmp: bytes) -> str | None:
    body = xmp[xmp.index(b"<x:xmpmeta") : xmp.index(b"</x:xmpmeta>") + len(b"</x:xmpmeta>")]
    found = ET.fromstring(body).find(f".//{IPTC_EXT}DigitalSourceType")
    return None if found is None else found.text


@pytest.mark.parametrize("path", ["v.jpg", "v.png", "v.webp"])
def test_image_outputs_carry_the_iptc_digital_source_type(path):
    data, _ = imaging.encode(Image.new("RGB", (32, 24), (90, 120, 200)), path, RECORD)
    assert digital_source_type(xmp_of(data)) == COMPOSITE
    assert provenance.read(data)["digital_source_type"] == COMPOSITE


@pytest.mark.parametrize(
    "task, from_image, input_type, expected",
    [
        ("img2img", True, None, COMPOSITE),  # a photo the model reworked
        ("kontext", True, None, COMPOSITE),
        ("inpaint", True, None, COMPOSITE),
        ("ip-adapter", True, None, COMPOSITE),
        ("svd", True, None, COMPOSITE),
        ("img2img", False, None, TRAINED),  # text alone
        ("img2img", True, TRAINED, TRAINED),  # reworking an image made from text
        ("rendition", True, None, None),  # a resized photo claims nothing
        ("rendition", True, COMPOSITE, COMPOSITE),  # a resized AI output keeps its label
    ],
)
def test_the_label_follows_what_the_model_was_given(task, from_image, input_type, expected):
    got = provenance.digital_source_type(task, from_image=from_image, input_type=input_type)
    assert got == expected


def clip() -> Video:
    frames = [Image.new("RGB", (32, 18), (40 * i, 80, 160)) for i in range(4)]
    return Video(frames=frames, fps=8)


@pytest.mark.parametrize("fmt", ["webp", "gif"])
def test_animated_outputs_carry_the_record(fmt):
    data = video_io.encode_video(clip(), fmt, RECORD, xmp=provenance.xmp_packet(RECORD))
    assert provenance.read(data) == RECORD
    if fmt == "webp":
        assert digital_source_type(xmp_of(data)) == COMPOSITE


def inspect(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", "inspect", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow  # the darkroom CLI as a subprocess, and ffmpeg
def test_mp4_provenance_is_read_back_by_darkroom_inspect(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    path = tmp_path / "animate-0.mp4"
    path.write_bytes(video_io.encode_video(clip(), "mp4", RECORD))
    tags = video_io.read_mp4_tags(path.read_bytes())
    assert "compositeWithTrainedAlgorithmicMedia" in tags["description"]
    assert video_io.probe(path.read_bytes(), "mp4")["frames"] == 4  # still a playable clip
    run = inspect(path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == RECORD


@pytest.mark.slow
def test_inspect_an_mp4_without_provenance_says_so(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    path = tmp_path / "plain.mp4"
    path.write_bytes(video_io.encode_video(clip(), "mp4"))
    run = inspect(path)
    assert run.returncode == 1
    assert f"no Darkroom provenance in {path}" in run.stderr
