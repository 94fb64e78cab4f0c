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
    manifest = make_manifest([("explore", "sd-turbo", 2)])
    image = render_of(manifest, synthetic_open_image, tile=96)
    niceness: list[int] = []
    save = Image.Image.save

    def recording_save(self: Image.Image, fp, format=None, **params):  # noqa: A002
        niceness.append(own_niceness())
        return save(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", recording_save)
    caller = own_niceness()
    data = sheet_drawing.encode_sheet(image)
    assert niceness and niceness[0] > caller
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "PNG" and decoded.convert("RGB").tobytes() == image.tobytes()
