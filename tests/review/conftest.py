"""Fixtures for review-sheet tests: manifest builders, awkward image files, a layout checker."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from daemon.outputs import sheet as sheet_drawing
from daemon.outputs.manifest import Manifest
from daemon.outputs.sheet_layout import SheetLayout, layout_sheet
from daemon.outputs.text import font

RULE_PROMPT = "a watercolor painting of a, soft light"


def build_manifest(
    rows: Sequence[tuple[str, str, int]],
    *,
    rule_prompt: str = RULE_PROMPT,
    step_prompt: str | None = None,
    key: str = "shoots/a.jpg",
    size: tuple[int, int] = (640, 480),
    status: str = "done",
) -> dict[str, Any]:
    """A manifest with one step per (step name, model, variant count) row."""
    steps = []
    for name, model, variants in rows:
        outputs = [
            {
                "path": f"product-lifestyle/a/{name}-{model}-{v}.png",
                "step": name,
                "model": model,
                "model_id": f"test/{model}",
                "variant": v,
                "seed": 42 + v,
                "width": 512,
                "height": 384,
                "sha256": "0" * 64,
                "input": "source",
                "seconds": 0.41,
                "params": {"strength": 0.5, "steps": 2},
            }
            for v in range(variants)
        ]
        steps.append(
            {
                "name": name,
                "model": model,
                "model_id": f"test/{model}",
                "prompt": step_prompt if step_prompt is not None else rule_prompt,
                "state": "done",
                "error": None,
                "seconds": 1.8,
                "outputs": outputs,
            }
        )
    return {
        "darkroom_version": "0.1.0",
        "source": {
            "source": "drop",
            "key": key,
            "uri": f"/abs/{key}",
            "sha256": "f" * 64,
            "size": 1234,
            "width": size[0],
            "height": size[1],
        },
        "rule": {
            "name": "product-lifestyle",
            "digest": "ab12",
            "prompt": rule_prompt,
            "negative_prompt": None,
        },
        "status": status,
        "steps": steps,
    }


def as_manifest(data: dict[str, Any]) -> Manifest:
    """A manifest written in a test as JSON data, parsed as the daemon reads one."""
    return Manifest.model_validate(data)


def layout_of(manifest: dict[str, Any], tile: int = 256) -> SheetLayout:
    """The sheet layout of a manifest written as JSON data."""
    return layout_sheet(as_manifest(manifest), tile=tile)


def render_of(
    manifest: dict[str, Any], open_image: Callable[[str], Image.Image], **kw: Any
) -> Image.Image:
    """The sheet drawn for a manifest written as JSON data."""
    return sheet_drawing.render_sheet(as_manifest(manifest), open_image, **kw)


def check_layout(layout: SheetLayout) -> None:
    """The invariants every layout must hold: nothing overlaps, all text inside its container."""
    width, height = layout.size
    sheet = (0, 0, width, height)
    boxes = layout.boxes()
    for box in boxes:
        assert 0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height, (box, sheet)
    _assert_disjoint(boxes)
    for block in layout.blocks:
        # header text sits in the header band; a group prompt band is itself a top-level box
        container = block.box if block.role == "group-prompt" else layout.header
        assert container.contains(block.box), block
        for line in block.lines:
            assert block.box.contains(line.box), (block.role, line)
            _assert_measured(line)
        _assert_disjoint([line.box for line in block.lines])
    _assert_disjoint([b.box for b in layout.blocks if b.role != "group-prompt"])
    for tile in layout.tiles:
        assert tile.cell.contains(tile.image)
        assert tile.image.width == tile.image.height == layout.tile
        for line in tile.captions:
            assert tile.cell.contains(line.box), (tile.label, line)
            assert line.box.y0 >= tile.image.y1, (tile.label, line)  # under the image
            _assert_measured(line)
        for line in tile.reason_lines:
            assert tile.image.contains(line.box), (tile.reason, line)
            _assert_measured(line)
        _assert_disjoint([line.box for line in tile.captions])
        _assert_disjoint([line.box for line in tile.reason_lines])


def _assert_disjoint(boxes: Sequence[Any]) -> None:
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)


def _assert_measured(line: Any) -> None:
    """A line's box is exactly what the font reports for its text at its origin."""
    left, top, right, bottom = font(line.size).getbbox(line.text)
    x, y = line.xy
    assert (line.box.x0, line.box.y0, line.box.x1, line.box.y1) == (
        x + left,
        y + top,
        x + right,
        y + bottom,
    )


@pytest.fixture(scope="session")
def make_manifest() -> Callable[..., dict[str, Any]]:
    return build_manifest


@pytest.fixture(scope="session")
def assert_layout_sound() -> Callable[[SheetLayout], None]:
    return check_layout


@pytest.fixture
def synthetic_open_image() -> Callable[[str], Image.Image]:
    """open_image that makes a distinct 4:3 picture for every path, and records the calls."""
    calls: list[str] = []

    def open_image(path: str) -> Image.Image:
        calls.append(path)
        shade = sum(path.encode()) % 200 + 20
        im = Image.linear_gradient("L").resize((512, 384)).convert("RGB")
        return Image.blend(im, Image.new("RGB", im.size, (shade, 90, 255 - shade)), 0.5)

    open_image.calls = calls  # type: ignore[attr-defined]
    return open_image


# ------------------------------------------------------------------ awkward image files


@pytest.fixture
def png16_path(tmp_path: Path) -> Path:
    """16-bit greyscale PNG, a full-range horizontal ramp (opens as mode I;16)."""
    ramp = Image.linear_gradient("L").rotate(90).resize((320, 240))
    im = ramp.convert("I").point(lambda v: v * 257).convert("I;16")
    path = tmp_path / "deep.png"
    im.save(path)
    assert Image.open(path).mode == "I;16"
    return path


@pytest.fixture
def cmyk_jpeg_path(tmp_path: Path) -> Path:
    """CMYK JPEG: left half pure red (0, 255, 255, 0), right half pure blue."""
    im = Image.new("CMYK", (320, 240), (0, 255, 255, 0))
    im.paste((255, 255, 0, 0), (160, 0, 320, 240))
    path = tmp_path / "print.jpg"
    im.save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    return path


@pytest.fixture
def rgba_png_path(tmp_path: Path) -> Path:
    """RGBA PNG: left half fully transparent (black RGB underneath), right half opaque blue."""
    im = Image.new("RGBA", (320, 240), (0, 0, 0, 0))
    im.paste((0, 0, 255, 255), (160, 0, 320, 240))
    path = tmp_path / "cutout.png"
    im.save(path)
    return path


@pytest.fixture
def exif_rotated_jpeg_path(tmp_path: Path) -> Path:
    """Stored landscape 320x160 (left red, right blue) with EXIF orientation 6 (rotate 90° CW),
    so it displays as portrait 160x320 with red on top."""
    im = Image.new("RGB", (320, 160), (255, 0, 0))
    im.paste((0, 0, 255), (160, 0, 320, 160))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    im.save(path, quality=95, exif=exif.tobytes())
    return path


# ------------------------------------------------------------------ a real review sink

EVIL_PROMPT = 'a <script>alert("x")</script> & "quoted" <b>bold</b> lamp'
COMPARE_MODELS = ("sd-turbo", "sdxl-turbo", "kontext")


def _picture(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    im = Image.linear_gradient("L").resize(size).convert("RGB")
    tint = ((seed * 67) % 255, (seed * 131) % 255, (seed * 29) % 255)
    return Image.blend(im, Image.new("RGB", size, tint), 0.5)


def _png(im: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _mp4(frames: int, fps: int) -> bytes:
    """An H.264 clip, encoded the way the runner encodes videos (imageio-ffmpeg)."""
    from backends.base import Video
    from backends.video_io import encode_video

    return encode_video(Video([_picture(i, (64, 48)) for i in range(frames)], fps), "mp4")


def build_review_sink(root: Path) -> tuple[Any, dict[str, Any], str]:
    """A FolderSink at ``root`` holding one processed source: a three-model compare step with
    4 variants each (one failed, with costs), an animated WebP step and a video step, written
    the way the runner writes them. Returns (sink, manifest, manifest path)."""
    import io
    import json

    from daemon.sinks.folder import FolderSink

    sink = FolderSink("review", root)
    base = "product-lifestyle/lamp"
    steps = []
    for m_i, model in enumerate(COMPARE_MODELS):
        outputs = []
        for v in range(4):
            path = f"{base}/explore-{model}-{v}.png"
            out: dict[str, Any] = {
                "path": path,
                "step": "explore",
                "model": model,
                "model_id": f"test/{model}",
                "variant": v,
                "seed": 100 + v,
                "width": 96,
                "height": 72,
                "input": "source",
                "seconds": 0.25,
                "params": {"strength": 0.55, "steps": 2},
                "sha256": "0" * 64,
            }
            if model == "kontext":
                out.update(cost=0.004, provider="fal", request_id=f"req-{v}")
            if model == "sdxl-turbo" and v == 3:
                out["error"] = "CUDA out of memory <while> decoding"
            else:
                sink.write(path, _png(_picture(m_i * 10 + v)), "image/png")
            outputs.append(out)
        steps.append(
            {
                "name": "explore",
                "model": model,
                "model_id": f"test/{model}",
                "prompt": EVIL_PROMPT,
                "negative_prompt": "blurry",
                "seeds": [100, 101, 102, 103],
                "state": "done",
                "error": None,
                "attempts": 1,
                "seconds": 1.0,
                "outputs": outputs,
            }
        )
    # an animated WebP
    frames = [_picture(40 + i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0)
    sink.write(f"{base}/wiggle-anim-0.webp", buf.getvalue(), "image/webp")
    steps.append(
        {
            "name": "wiggle",
            "model": "anim",
            "prompt": EVIL_PROMPT,
            "state": "done",
            "seeds": [7],
            "outputs": [
                {
                    "path": f"{base}/wiggle-anim-0.webp",
                    "step": "wiggle",
                    "model": "anim",
                    "variant": 0,
                    "seed": 7,
                    "width": 96,
                    "height": 72,
                    "seconds": 0.3,
                }
            ],
        }
    )
    # a clip with its poster strip
    poster = Image.new("RGB", (64 * 5, 48))
    for i in range(5):
        poster.paste(_picture(60 + i, (64, 48)), (64 * i, 0))
    sink.write(f"{base}/animate-svd-0.poster.png", _png(poster), "image/png")
    clip = _mp4(25, 12) or b""
    video_path = f"{base}/animate-svd-0.mp4"
    if clip:
        sink.write(video_path, clip, "video/mp4")
    video = {
        "path": video_path,
        "kind": "video",
        "poster": f"{base}/animate-svd-0.poster.png",
        "frames": 25,
        "fps": 12,
        "duration": 2.1,
        "step": "animate",
        "model": "svd",
        "variant": 0,
        "seed": 9,
        "width": 64,
        "height": 48,
        "seconds": 3.2,
    }
    if not clip:  # no imageio-ffmpeg: record it the way the runner records a failed variant
        video["error"] = "no encoder"
    steps.append(
        {
            "name": "animate",
            "model": "svd",
            "prompt": EVIL_PROMPT,
            "state": "done",
            "seeds": [9],
            "outputs": [video],
        }
    )
    steps.append(
        {
            "name": "refine",
            "model": "tiny",
            "prompt": EVIL_PROMPT,
            "state": "failed",
            "error": "input explore had no outputs",
            "outputs": [],
        }
    )
    manifest = {
        "darkroom_version": "0.1.0",
        "source": {
            "source": "drop",
            "key": "shoots/lamp.jpg",
            "uri": "/drop/shoots/lamp.jpg",
            "size": 1234,
            "sha256": "f" * 64,
            "width": 96,
            "height": 72,
        },
        "rule": {
            "name": "product-lifestyle",
            "digest": "ab12",
            "prompt": EVIL_PROMPT,
            "negative_prompt": "blurry",
        },
        "status": "partial",
        "steps": steps,
        "sheet": f"{base}/sheet.png",
        "created_at": "2025-03-04T10:11:12Z",
    }
    manifest_path = f"{base}/manifest.json"

    def open_image(path: str) -> Image.Image:
        if path == sheet_drawing.SOURCE:
            return _picture(1)
        return Image.open(io.BytesIO(sink.read(path)))

    sheet_png = render_of(manifest, open_image, tile=96, workers=1)
    sink.write(manifest["sheet"], _png(sheet_png), "image/png")
    sink.write_manifest(manifest_path, json.dumps(manifest, indent=2).encode())
    return sink, manifest, manifest_path


@pytest.fixture
def review_sink(tmp_path: Path) -> tuple[Any, dict[str, Any], str]:
    return build_review_sink(tmp_path / "out")


@pytest.fixture
def source_picture() -> Image.Image:
    return _picture(1, (320, 240))
