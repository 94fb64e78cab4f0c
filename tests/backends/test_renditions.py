"""RenditionBackend: exact sizes, crop vs pad, watermark placement; no torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backends import InvalidRequest, ModelSpec, Request, backend_class
from backends.profiles import PROFILES
from backends.renditions import PRESETS, RenditionBackend


@pytest.fixture
def backend() -> RenditionBackend:
    return RenditionBackend(ModelSpec(task="rendition", model="none"), Path("unused"))


def stripes(width: int = 400, height: int = 200) -> Image.Image:
    """Left half red, right half blue, a green column in the centre."""
    image = Image.new("RGB", (width, height), (220, 0, 0))
    image.paste((0, 0, 220), (width // 2, 0, width, height))
    image.paste((0, 200, 0), (width // 2 - 5, 0, width // 2 + 5, height))
    return image


def test_registered() -> None:
    assert backend_class("rendition") is RenditionBackend


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("fit", ["crop", "pad"])
def test_presets_give_exact_sizes(backend, preset: str, fit: str) -> None:
    params = {**PROFILES[preset]["defaults"], "fit": fit}
    result = backend.run(
        Request(images=[stripes(), stripes(123, 457)], prompt="", seeds=[1, 2], params=params)
    )
    assert [im.size for im in result.images] == [PRESETS[preset]] * 4
    assert all(im.mode == "RGB" for im in result.images)
    assert result.images[0].tobytes() == result.images[1].tobytes()  # deterministic per seed


def test_custom_size_wins_over_preset(backend) -> None:
    result = backend.run(
        Request(
            images=[stripes()],
            prompt="",
            seeds=[1],
            params={"preset": "square-1080", "width": 300, "height": 100},
        )
    )
    assert result.images[0].size == (300, 100)


def test_crop_cuts_the_centre_and_pad_keeps_everything(backend) -> None:
    square = {"width": 200, "height": 200}
    crop = np.asarray(
        backend.run(
            Request(images=[stripes()], prompt="", seeds=[1], params={**square, "fit": "crop"})
        ).images[0]
    )
    # 400x200 -> 200x200 centre: columns 100..300 of the source, still red | green | blue
    assert tuple(crop[100, 20]) == (220, 0, 0) and tuple(crop[100, 180]) == (0, 0, 220)
    assert crop[100, 100][1] > 150  # the centre column survives
    assert not (crop == 255).all(axis=2).any()  # no padding
    pad = np.asarray(
        backend.run(
            Request(
                images=[stripes()],
                prompt="",
                seeds=[1],
                params={**square, "fit": "pad", "background": "#000000"},
            )
        ).images[0]
    )
    # 400x200 -> 200x100 band in the middle, black above and below
    assert (pad[:45] == 0).all() and (pad[-45:] == 0).all()
    assert tuple(pad[100, 5]) == (220, 0, 0) and tuple(pad[100, 195]) == (0, 0, 220)


def test_pad_background_colour(backend) -> None:
    out = backend.run(
        Request(
            images=[stripes()],
            prompt="",
            seeds=[1],
            params={"preset": "story-1080x1920", "fit": "pad", "background": "#336699"},
        )
    ).images[0]
    assert out.getpixel((540, 5)) == (0x33, 0x66, 0x99)


@pytest.fixture
def logo(tmp_path: Path) -> Path:
    mark = Image.new("RGBA", (100, 50), (0, 0, 0, 0))
    mark.paste((255, 255, 0, 255), (10, 10, 90, 40))  # opaque yellow box, transparent border
    path = tmp_path / "logo.png"
    mark.save(path)
    return path


def _yellow(image: Image.Image) -> np.ndarray:
    a = np.asarray(image, dtype=np.int16)
    return (a[..., 0] > 150) & (a[..., 1] > 150) & (a[..., 2] < 100)


@pytest.mark.parametrize(
    ("position", "quadrant"),
    [
        ("bottom-right", (1, 1)),
        ("bottom-left", (1, 0)),
        ("top-right", (0, 1)),
        ("top-left", (0, 0)),
    ],
)
def test_watermark_sits_in_its_corner(backend, logo: Path, position: str, quadrant) -> None:
    grey = Image.new("RGB", (300, 300), (90, 90, 90))
    out = backend.run(
        Request(
            images=[grey],
            prompt="",
            seeds=[1],
            params={
                "width": 1200,
                "height": 628,
                "watermark": str(logo),
                "watermark_position": position,
                "watermark_opacity": 1.0,
                "watermark_scale": 0.2,
            },
        )
    ).images[0]
    ys, xs = np.nonzero(_yellow(out))
    assert len(xs) > 0
    row, col = quadrant
    assert ((ys < 628 / 2) if row == 0 else (ys > 628 / 2)).all()
    assert ((xs < 1200 / 2) if col == 0 else (xs > 1200 / 2)).all()
    # 0.2 of the width: the logo is 240 px wide, its opaque box 80% of that
    assert 180 <= xs.max() - xs.min() + 1 <= 200
    # opacity blends the logo into the picture
    faint = backend.run(
        Request(
            images=[grey],
            prompt="",
            seeds=[1],
            params={
                "width": 1200,
                "height": 628,
                "watermark": str(logo),
                "watermark_position": position,
                "watermark_scale": 0.2,
                "watermark_opacity": 0.3,
            },
        )
    ).images[0]
    assert not _yellow(faint).any()
    assert np.asarray(faint, dtype=np.int16)[ys[0], xs[0]][2] < 90  # tinted toward yellow


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "rendition needs a size: set preset"),
        ({"preset": "poster"}, "unknown rendition preset 'poster'"),
        ({"width": 100}, "set both width and height"),
        ({"width": 8, "height": 100}, "width 8 must be in [16, 8192]"),
        ({"width": 100.5, "height": 100}, "width must be a whole number"),
        ({"preset": "square-1080", "fit": "stretch"}, "fit 'stretch' must be one of crop, pad"),
        (
            {"preset": "square-1080", "background": "blurple"},
            "background 'blurple' is not a colour",
        ),
        ({"preset": "square-1080", "watermark_position": "centre"}, "watermark_position 'centre'"),
        ({"preset": "square-1080", "watermark_opacity": 2}, "watermark_opacity 2 must be"),
        (
            {"preset": "square-1080", "watermark": "/nope/logo.png"},
            "watermark /nope/logo.png cannot be read",
        ),
    ],
)
def test_invalid_params_say_what_to_change(backend, params, message) -> None:
    with pytest.raises(InvalidRequest) as info:
        backend.run(Request(images=[stripes()], prompt="", seeds=[1], params=params))
    assert message in str(info.value)


def test_transparent_input_is_flattened_onto_the_background(backend) -> None:
    clear = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    out = backend.run(
        Request(
            images=[clear],
            prompt="",
            seeds=[1],
            params={"width": 50, "height": 50, "background": "white"},
        )
    ).images[0]
    assert out.getpixel((25, 25)) == (255, 255, 255)


def test_my_backend_modules_do_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import backends.reference, backends.upscale, backends.renditions, backends.lora\n"
        "import sys\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers', 'transformers'})\n"
        "assert not heavy, heavy\n"
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=repo, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
