"""Fixtures for review-sheet tests: manifest builders, awkward image files, a layout checker."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from daemon.sheet import SheetLayout, font

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
