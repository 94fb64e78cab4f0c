"""Sheet tiles for video outputs (a film strip from the poster) and cost captions."""

from __future__ import annotations

from typing import Any

from PIL import Image

from daemon.outputs.captions import clip_text, cost_text
from daemon.outputs.sheet import FILM, film_band
from daemon.types import OutputRecord

from .conftest import layout_of, render_of


def _video_manifest(make_manifest: Any, **extra: Any) -> dict[str, Any]:
    manifest = make_manifest([("explore", "sd-turbo", 2)])
    out = {
        "path": "r/a/animate-svd-0.mp4",
        "kind": "video",
        "poster": "r/a/animate-svd-0.png",
        "step": "animate",
        "model": "svd",
        "variant": 0,
        "seed": 7,
        "frames": 25,
        "fps": 12,
        "duration": 2.1,
        "seconds": 3.2,
        **extra,
    }
    manifest["steps"].append({"name": "animate", "model": "svd", "state": "done", "outputs": [out]})
    return manifest


def _clip(**fields: Any) -> OutputRecord:
    return OutputRecord(
        path="r/s/a.mp4", step="animate", model="svd", variant=0, seed=7, kind="video", **fields
    )


def test_clip_and_cost_text() -> None:
    assert clip_text(_clip(duration=2.1, frames=25)) == "2.1 s, 25 frames"
    assert clip_text(_clip(frames=25, fps=12)) == "2.1 s, 25 frames"
    assert clip_text(_clip(frames=1)) == "1 frame"
    assert clip_text(_clip()) == "video"
    assert cost_text(0.004) == "$0.004"
    assert cost_text(0.25) == "$0.25"
    assert cost_text(None) is None and cost_text("n/a") is None


def test_video_tile_uses_poster_and_clip_length(
    make_manifest: Any, assert_layout_sound: Any
) -> None:
    layout = layout_of(_video_manifest(make_manifest), tile=256)
    assert_layout_sound(layout)
    (video,) = [t for t in layout.tiles if t.kind == "video"]
    assert video.path == "r/a/animate-svd-0.png"  # the poster goes through open_image
    assert video.label == "animate · svd · seed 7 · 2.1 s, 25 frames"
    assert "2.1 s, 25 frames" in " ".join(line.text for line in video.captions)


def test_video_without_poster_is_a_placeholder_not_a_failure(make_manifest: Any) -> None:
    manifest = _video_manifest(make_manifest, poster=None)
    layout = layout_of(manifest, tile=128)
    (video,) = [t for t in layout.tiles if t.kind == "video"]
    assert video.path is None and "no poster" in (video.reason or "")
    render_of(manifest, lambda p: Image.new("RGB", (64, 48), "white"), tile=128, workers=1)


def test_video_strip_drawn_between_sprocket_bands(make_manifest: Any) -> None:
    manifest = _video_manifest(make_manifest)
    strip = Image.new("RGB", (400, 80), (0, 200, 0))  # a 5-frame strip, pure green

    def open_image(path: str) -> Image.Image:
        return strip.copy() if path.endswith("svd-0.png") else Image.new("RGB", (64, 48), "white")

    tile = 256
    image = render_of(manifest, open_image, tile=tile, workers=1)
    (video,) = [t for t in layout_of(manifest, tile=tile).tiles if t.kind == "video"]
    box = video.image
    band = film_band(tile)
    assert image.getpixel((box.x0 + 1, box.y0 + 1)) == FILM  # the top band, between holes
    assert image.getpixel((box.x0 + 1, box.y1 - 2)) == FILM
    r, g, b = image.getpixel((box.x0 + tile // 2, box.y0 + tile // 2))
    assert g > 150 and r < 60 and b < 60  # the strip is in the middle, full width
    r, g, b = image.getpixel((box.x0 + 2, box.y0 + tile // 2))
    assert g > 150
    assert band < tile // 8


def test_costs_in_captions_and_header(make_manifest: Any, assert_layout_sound: Any) -> None:
    manifest = make_manifest([("explore", "kontext", 2)])
    for out in manifest["steps"][0]["outputs"]:
        out["cost"] = 0.004
    layout = layout_of(manifest, tile=256)
    assert_layout_sound(layout)
    outputs = [t for t in layout.tiles if t.kind == "output"]
    assert all(t.label.endswith(" · $0.004") for t in outputs)
    key = next(b for b in layout.blocks if b.role == "key")
    assert "$0.008 est." in key.text


def test_no_cost_no_change(make_manifest: Any) -> None:
    layout = layout_of(make_manifest([("explore", "sd-turbo", 1)]), tile=256)
    assert "$" not in " ".join(t.label for t in layout.tiles)


def test_three_model_compare_dimensions(make_manifest: Any, assert_layout_sound: Any) -> None:
    """Three models x 4 variants: three adjacent rows of four, prompt shown once."""
    manifest = make_manifest(
        [("explore", "sd-turbo", 4), ("explore", "sdxl-turbo", 4), ("explore", "kontext", 4)],
        step_prompt="a different prompt for the compare",
    )
    layout = layout_of(manifest, tile=256)
    assert_layout_sound(layout)
    assert (layout.rows, layout.columns) == (3, 4)
    assert [b.role for b in layout.blocks].count("group-prompt") == 1
    assert layout.size[0] == 16 + 256 + 25 + 4 * 256 + 3 * 8 + 16
    print("three-model compare sheet:", layout.size)
