"""Intake's header reader (daemon/intake/headers.py) answers as Pillow does, or not at all.

A rule's ``min_width`` or ``orientation`` decides on these facts, so a disagreement would
plan a file Pillow's reading says a rule does not take (or the reverse). Every generated
file, whole or damaged (cut short, a byte changed, bytes inserted in its header), gets
either no quick answer or Pillow's answer; the plain files drops are made of get a quick one.
"""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, TiffImagePlugin

from daemon.intake.facts import image_facts, pillow_facts
from daemon.intake.headers import _TIFF_UNIT, quick_facts
from daemon.rules.match import ImageFacts

_ICC = b"\0" * 128  # Pillow stores any bytes as the profile; a real one is not needed


def _exif(orientation: int | None, resolution: bool, make: bool) -> Image.Exif:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if resolution:  # what cameras and phones write in IFD0
        exif[0x011A] = TiffImagePlugin.IFDRational(72, 1)
        exif[0x011B] = TiffImagePlugin.IFDRational(72, 1)
        exif[0x0128] = 2
    if make:
        exif[0x010F] = "Darkroom phone"
        exif[0x0110] = "A model name longer than four bytes"
    return exif


@st.composite
def jpegs(draw: st.DrawFn) -> bytes:
    mode = draw(st.sampled_from(["RGB", "L", "CMYK"]))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    options: dict[str, object] = {
        "quality": draw(st.integers(20, 95)),
        "progressive": draw(st.booleans()),
    }
    if draw(st.booleans()):
        orientation = draw(st.none() | st.integers(0, 9))
        options["exif"] = _exif(orientation, draw(st.booleans()), draw(st.booleans()))
    if draw(st.booleans()):
        options["dpi"] = (draw(st.integers(1, 600)),) * 2
    if draw(st.booleans()):
        options["icc_profile"] = _ICC
    if draw(st.booleans()):
        options["comment"] = b"made for a test"
    if draw(st.booleans()):
        tag = draw(st.integers(0, 9))
        options["xmp"] = (
            f"<x:xmpmeta><tiff:Orientation>{tag}</tiff:Orientation></x:xmpmeta>".encode()
        )
    buffer = io.BytesIO()
    Image.new(mode, size, "white").save(buffer, "JPEG", **options)
    return buffer.getvalue()


@st.composite
def pngs(draw: st.DrawFn) -> bytes:
    mode = draw(st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    options: dict[str, object] = {}
    if draw(st.booleans()):
        options["dpi"] = (draw(st.integers(1, 600)),) * 2
    if draw(st.booleans()):
        options["exif"] = _exif(draw(st.integers(1, 8)), False, False)
    if draw(st.booleans()):
        options["icc_profile"] = _ICC
    if mode in ("L", "P", "RGB") and draw(st.booleans()):
        options["transparency"] = 0 if mode != "RGB" else (0, 0, 0)
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG", **options)
    return buffer.getvalue()


@st.composite
def damaged(draw: st.DrawFn, files: st.SearchStrategy[bytes]) -> bytes:
    data = draw(files)
    header = min(len(data), 400)  # where the facts are: damage there, mostly
    damage = draw(st.sampled_from(["none", "cut", "byte", "insert"]))
    if damage == "cut":
        return data[: draw(st.integers(0, len(data)))]
    if damage == "byte":
        at = draw(st.integers(0, header - 1))
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if damage == "insert":
        at = draw(st.integers(2, header))
        return data[:at] + draw(st.binary(min_size=1, max_size=24)) + data[at:]
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=damaged(jpegs()) | damaged(pngs()))
def test_a_quick_answer_is_always_pillows(data):
    quick = quick_facts(data)
    if quick is not None:
        assert quick == pillow_facts(data)


@pytest.mark.parametrize("orientation", [None, 1, 3, 6, 8])
def test_a_phone_like_jpeg_is_read_quickly_and_turned_upright(orientation):
    """EXIF with the resolution, make and model cameras write, an ICC profile, 40x30."""
    buffer = io.BytesIO()
    exif = _exif(orientation, resolution=True, make=True)
    Image.new("RGB", (40, 30)).save(buffer, "JPEG", exif=exif, icc_profile=_ICC)
    data = buffer.getvalue()
    upright = (30, 40) if orientation in (6, 8) else (40, 30)
    assert quick_facts(data) == ImageFacts("jpeg", *upright) == pillow_facts(data)


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "I;16"])
def test_a_plain_png_is_read_quickly(mode):
    buffer = io.BytesIO()
    Image.new(mode, (40, 30)).save(buffer, "PNG", dpi=(72, 72))
    data = buffer.getvalue()
    assert quick_facts(data) == ImageFacts("png", 40, 30) == pillow_facts(data)


def test_what_the_quick_reader_leaves_to_pillow_still_gets_its_facts():
    """A PNG with an orientation in eXIf, a GIF, a WebP: Pillow reads them."""
    cases = []
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buffer, "PNG", exif=_exif(6, False, False))
    cases.append((buffer.getvalue(), ImageFacts("png", 30, 40)))
    for kind, name in (("GIF", "gif"), ("WEBP", "webp")):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30)).save(buffer, kind)
        cases.append((buffer.getvalue(), ImageFacts(name, 40, 30)))
    for data, facts in cases:
        assert quick_facts(data) is None
        assert image_facts(data) == facts


def test_an_image_over_pillows_pixel_limit_is_left_to_pillow(monkeypatch):
    buffer = io.BytesIO()
    Image.new("L", (40, 30)).save(buffer, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert quick_facts(buffer.getvalue()) is None


def test_every_exif_field_type_pillow_reads_is_bounds_checked():
    """A field type Pillow reads but the reader does not know would let Pillow stop early on
    a value outside the data while the reader went on to the orientation."""
    dispatch = TiffImagePlugin.ImageFileDirectory_v2._load_dispatch
    assert {kind: unit for kind, (unit, _) in dispatch.items()}.items() <= _TIFF_UNIT.items()


@pytest.mark.filterwarnings("ignore:Tag data larger than file")
def test_an_exif_value_outside_the_data_is_left_to_pillow():
    """Pillow's versions differ on such a value (stop reading IFD0 there, or skip that one
    field): the orientation after it is Pillow's to find or not."""
    entries = [(0x010F, 2, 40, 0xFFFF), (0x0112, 3, 1, 6)]  # Make: 40 bytes, far away
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHII", tag, kind, count, value)
    tiff = b"II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0"
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buffer, "JPEG", exif=b"Exif\0\0" + tiff)
    data = buffer.getvalue()
    assert quick_facts(data) is None
    assert image_facts(data) == pillow_facts(data) is not None
