"""Decoding awkward files into tiles, and rendering sheets from them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageStat

from daemon.outputs.colour import to_rgb
from daemon.outputs.sheet import BACKGROUND, FAILED_FILL, SOURCE
from daemon.outputs.thumbnails import LETTERBOX, fit_image, thumbnail

from .conftest import layout_of, render_of


def mean(im: Image.Image) -> float:
    return ImageStat.Stat(im.convert("L")).mean[0]


def close(a, b, tol=24) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def picture(sheet: Image.Image, box) -> Image.Image:
    """The middle of an image square: inside the picture for any 4:3..3:4 letterboxed image."""
    w, h = box.width, box.height
    return sheet.crop((box.x0 + w // 3, box.y0 + h // 3, box.x1 - w // 3, box.y1 - h // 3))


# ------------------------------------------------------------------ thumbnail()


def test_sixteen_bit_png_is_scaled_not_clipped(png16_path: Path):
    naive = Image.open(png16_path).convert("RGB")
    assert mean(naive) > 250  # the Pillow behaviour this guards against
    thumb = thumbnail(png16_path, 128)
    assert thumb.mode == "RGB" and max(thumb.size) == 128
    assert 100 < mean(thumb) < 160  # a full-range ramp averages mid-grey
    lo, hi = thumb.convert("L").getextrema()
    assert lo < 20 and hi > 235


def test_cmyk_jpeg_comes_out_rgb_with_right_colours(cmyk_jpeg_path: Path):
    thumb = thumbnail(cmyk_jpeg_path, 160)
    assert thumb.mode == "RGB" and thumb.size == (160, 120)
    assert close(thumb.getpixel((20, 60)), (255, 0, 0), tol=40)
    assert close(thumb.getpixel((140, 60)), (0, 0, 255), tol=40)


def test_rgba_png_is_composited_on_neutral_grey(rgba_png_path: Path):
    thumb = thumbnail(rgba_png_path, 160)
    assert thumb.mode == "RGB"
    assert close(thumb.getpixel((20, 60)), LETTERBOX, tol=2)  # not black
    assert close(thumb.getpixel((140, 60)), (0, 0, 255), tol=2)


def test_exif_orientation_is_applied(exif_rotated_jpeg_path: Path):
    thumb = thumbnail(exif_rotated_jpeg_path, 160)
    assert thumb.size == (80, 160)  # displayed portrait
    assert close(thumb.getpixel((40, 20)), (255, 0, 0), tol=40)  # left of the stored image -> top
    assert close(thumb.getpixel((40, 140)), (0, 0, 255), tol=40)
    assert 0x0112 not in thumb.getexif()
    assert fit_image(thumb, 160).size == (80, 160)  # re-fitting does not rotate again


def test_jpeg_is_decoded_at_reduced_scale(tmp_path: Path):
    path = tmp_path / "big.jpg"
    Image.linear_gradient("L").resize((2048, 1536)).convert("RGB").save(path, quality=90)
    with Image.open(path) as im:
        thumb = fit_image(im, 192)
        assert im.size == (256, 192)  # draft: DCT-scaled by 1/8, never decoded at full size
    assert thumb.size == (192, 144)


@pytest.mark.parametrize("source", ["bytes", "path", "str", "file"])
def test_thumbnail_accepts_bytes_paths_and_files(tmp_path: Path, source: str):
    path = tmp_path / "a.png"
    Image.new("RGB", (64, 32), (10, 200, 30)).save(path)
    arg = {
        "bytes": path.read_bytes(),
        "path": path,
        "str": str(path),
        "file": io.BytesIO(path.read_bytes()),
    }[source]
    thumb = thumbnail(arg, 32)
    assert thumb.size == (32, 16) and close(thumb.getpixel((5, 5)), (10, 200, 30), tol=1)


def test_thumbnail_does_not_upscale_but_fit_image_does(tmp_path: Path):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (64, 48), "white").save(path)
    assert thumbnail(path, 256).size == (64, 48)
    assert fit_image(Image.open(path), 256).size == (256, 192)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: _palette_with_transparency(), LETTERBOX),
        (lambda: Image.new("LA", (8, 8), (0, 0)), LETTERBOX),
        (lambda: Image.new("LA", (8, 8), (90, 255)), (90, 90, 90)),
        (lambda: Image.new("1", (8, 8), 1), (255, 255, 255)),
        (lambda: Image.new("I", (8, 8), 40000), (155, 155, 155)),
        (lambda: Image.new("F", (8, 8), 0.5), (127, 127, 127)),
        (lambda: Image.new("YCbCr", (8, 8), (128, 128, 128)), (128, 128, 128)),
    ],
    ids=["P+transparency", "LA-clear", "LA-opaque", "1", "I-16bit-range", "F-unit", "YCbCr"],
)
def test_to_rgb_modes(make, expected):
    out = to_rgb(make(), LETTERBOX)
    assert out.mode == "RGB"
    assert close(out.getpixel((4, 4)), expected, tol=2)


def _palette_with_transparency() -> Image.Image:
    im = Image.new("P", (8, 8), 3)
    im.putpalette([0, 0, 0] * 256)
    im.info["transparency"] = 3
    return im


# ------------------------------------------------------------------ render_of()


@pytest.mark.parametrize(
    "fixture", ["png16_path", "cmyk_jpeg_path", "rgba_png_path", "exif_rotated_jpeg_path"]
)
def test_render_with_awkward_sources(request, make_manifest, synthetic_open_image, fixture):
    path: Path = request.getfixturevalue(fixture)

    def open_image(p: str) -> Image.Image:
        return Image.open(path) if p == SOURCE else synthetic_open_image(p)

    manifest = make_manifest([("explore", "sd-turbo", 2)])
    sheet = render_of(manifest, open_image, tile=128)
    layout = layout_of(manifest, tile=128)
    assert sheet.mode == "RGB" and sheet.size == layout.size
    middle = picture(sheet, layout.source.image)
    assert mean(middle) < 250  # not a white tile
    assert max(hi - lo for lo, hi in middle.getextrema()) > 40  # shows something, not flat
    if fixture == "exif_rotated_jpeg_path":
        box = layout.source.image
        # portrait: letterbox left and right, picture top red and bottom blue
        assert sheet.getpixel((box.x0 + 2, box.y0 + box.height // 2)) == LETTERBOX
        cx = box.x0 + box.width // 2
        assert close(sheet.getpixel((cx, box.y0 + 10)), (255, 0, 0), tol=40)
        assert close(sheet.getpixel((cx, box.y1 - 10)), (0, 0, 255), tol=40)


def test_render_draws_nothing_outside_the_layout(make_manifest, synthetic_open_image):
    manifest = make_manifest(
        [("explore", "sd-turbo", 3), ("explore", "sdxl-turbo", 2), ("refine", "tiny", 0)],
        step_prompt="a lemon, side light " * 20,
    )
    manifest["steps"][2].update(state="failed", error="CUDA out of memory " * 30)
    layout = layout_of(manifest, tile=128)
    sheet = render_of(manifest, synthetic_open_image, tile=128)

    masked = sheet.copy()
    draw = ImageDraw.Draw(masked)
    for box in layout.boxes():
        draw.rectangle(box.inclusive(), fill=BACKGROUND)
    assert masked.getextrema() == tuple((c, c) for c in BACKGROUND)  # only background left


def test_render_opens_each_image_once_and_marks_failures(make_manifest, synthetic_open_image):
    manifest = make_manifest([("explore", "sd-turbo", 2), ("refine", "tiny", 0)])
    manifest["steps"][1].update(state="failed", error="CUDA out of memory")
    sheet = render_of(manifest, synthetic_open_image, tile=128)
    layout = layout_of(manifest, tile=128)

    expected = [SOURCE] + [o["path"] for o in manifest["steps"][0]["outputs"]]
    assert sorted(synthetic_open_image.calls) == sorted(expected)
    (failed,) = [t for t in layout.tiles if t.kind == "failed"]
    box = failed.image
    assert sheet.getpixel((box.x1 - 3, box.y1 - 3)) == FAILED_FILL  # below the reason text
    # the reason text is drawn: light pixels on the red inside the first line's box
    first = failed.reason_lines[0].box
    assert mean(sheet.crop(first.as_tuple())) > mean(Image.new("RGB", (1, 1), FAILED_FILL)) + 15


def test_unreadable_image_becomes_a_failure_tile(make_manifest, synthetic_open_image):
    manifest = make_manifest([("explore", "sd-turbo", 2)])
    broken = manifest["steps"][0]["outputs"][1]["path"]

    def open_image(p: str) -> Image.Image:
        if p == broken:
            return Image.open(io.BytesIO(b"\xff\xd8\xff\xe0 not really a jpeg"))
        return synthetic_open_image(p)

    sheet = render_of(manifest, open_image, tile=128, workers=1)
    layout = layout_of(manifest, tile=128)
    tile = next(t for t in layout.tiles if t.path == broken)
    assert sheet.getpixel((tile.image.x1 - 3, tile.image.y1 - 3)) == FAILED_FILL


def test_render_is_the_same_with_and_without_threads(make_manifest, synthetic_open_image):
    manifest = make_manifest([("explore", "sd-turbo", 3), ("explore", "flux", 3)])
    one = render_of(manifest, synthetic_open_image, tile=96, workers=1)
    four = render_of(manifest, synthetic_open_image, tile=96, workers=4)
    assert one.tobytes() == four.tobytes()


def test_icc_tagged_rgb_is_colour_managed_and_bad_profiles_are_ignored(tmp_path: Path):
    ImageCms = pytest.importorskip("PIL.ImageCms")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    colour = (200, 120, 40)
    for name, icc in [("tagged.jpg", srgb), ("garbage.jpg", b"not an icc profile" * 8)]:
        path = tmp_path / name
        Image.new("RGB", (64, 48), colour).save(path, quality=95, icc_profile=icc)
        thumb = thumbnail(path, 32)
        assert thumb.mode == "RGB" and "icc_profile" not in thumb.info
        assert close(thumb.getpixel((16, 12)), colour, tol=6), name
