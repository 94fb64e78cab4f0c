"""Issue 16: a sheet costs the model nothing it needs. Its tiles are decoded and its PNG is
encoded on threads of lower scheduling priority than the daemon's (Linux nices threads one
by one), and the PNG is written with a cheap zlib level, losslessly."""

from __future__ import annotations

import io
import os
import sys
import threading

import pytest
from PIL import Image

from daemon.outputs import sheet as sheet_drawing
from daemon.outputs import sheet_png

from .conftest import render_of

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")


def own_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@linux_only
def test_tiles_are_decoded_at_a_lower_priority_than_the_daemon(make_manifest, synthetic_open_image):
    manifest = make_manifest([("explore", "sd-turbo", 3), ("explore", "flux", 3)])
    seen: list[int] = []

    def open_image(path: str) -> Image.Image:
        seen.append(own_niceness())
        return synthetic_open_image(path)

    caller = own_niceness()
    render_of(manifest, open_image, tile=96, workers=2)
    assert seen and min(seen) > caller, (caller, seen)
    assert own_niceness() == caller  # the caller's (the runner's) own priority is untouched


@linux_only
def test_the_sheet_png_is_encoded_at_a_lower_priority_and_losslessly(
    make_manifest, synthetic_open_image, monkeypatch
):
    manifest = make_manifest([("explore", "sd-turbo", 3), ("explore", "flux", 3)])
    image = render_of(manifest, synthetic_open_image, tile=96)
    assert image.height >= 2 * sheet_png._MIN_STRIP_ROWS  # compressed in strips
    niceness: list[int] = []
    deflate = sheet_png._deflate

    def recording_deflate(data, last):
        niceness.append(own_niceness())
        return deflate(data, last)

    monkeypatch.setattr(sheet_png, "_deflate", recording_deflate)
    caller = own_niceness()
    data = sheet_drawing.encode_sheet(image)
    assert len(niceness) >= 2 and min(niceness) > caller, (caller, niceness)
    assert own_niceness() == caller
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "PNG" and decoded.convert("RGB").tobytes() == image.tobytes()


@pytest.mark.parametrize("size", [(1, 1), (3, 200), (517, 131), (1200, 900)])
def test_the_sheet_png_decodes_to_the_same_pixels_at_any_size(size):
    """Odd widths, one row, strips of unequal height: a standard PNG every reader takes."""
    noise = Image.effect_noise(size, 64).convert("RGB")
    flat = Image.new("RGB", size, (245, 245, 242))
    image = Image.blend(noise, flat, 0.5)
    data = sheet_png.encode_png(image, threads=3)
    decoded = Image.open(io.BytesIO(data))
    decoded.load()
    assert decoded.mode == "RGB" and decoded.size == size
    assert decoded.tobytes() == image.tobytes()
