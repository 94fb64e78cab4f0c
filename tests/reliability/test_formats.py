"""Scenario 6: the format and colour matrix through the real pipeline (stub model: each
output is the upright RGB input blended half-and-half with the seed's colour)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps, features

from backends.stub import seed_colour

RULE = """\
name: r
match: {source: drop, include: ["**/*"], animated: ANIMATED}
prompt: "{stem}"
steps:
  - {name: one, model: stub, seeds: [1]}
output: {sink: out, path: "{rule}/{stem}/{step}-{variant}.png"}
"""
SIZE = (48, 32)  # multiples of 8 within the stub's max_side: no resize


def expected(upright_rgb: Image.Image) -> np.ndarray:
    solid = Image.new("RGB", upright_rgb.size, seed_colour(1))
    return np.asarray(Image.blend(upright_rgb, solid, 0.5), dtype=np.int16)


def output(harness, stem: str) -> Image.Image:
    image = Image.open(harness.out / "r" / stem / "one-0.png")
    image.load()
    return image


def pattern() -> Image.Image:
    """Asymmetric: a red top-left quarter, a blue bottom row, so any rotation shows."""
    image = Image.new("RGB", SIZE, (40, 160, 60))
    image.paste((230, 20, 20), (0, 0, SIZE[0] // 2, SIZE[1] // 2))
    image.paste((20, 20, 230), (0, SIZE[1] - 6, SIZE[0], SIZE[1]))
    return image


def fake_cmyk_profile() -> bytes:
    """An ICC blob whose header says CMYK (no CMYK profile ships with the system or Pillow,
    and LittleCMS cannot build one from Python): enough to check it is not carried."""
    header = bytearray(128)
    header[0:4] = (128 + 4).to_bytes(4, "big")
    header[12:16], header[16:20], header[20:24], header[36:40] = b"prtr", b"CMYK", b"Lab ", b"acsp"
    return bytes(header) + b"\0\0\0\0"


def test_format_and_colour_matrix(harness):
    harness.rule(RULE.replace("ANIMATED", "first_frame"))
    drop = harness.drop
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    cases: dict[str, np.ndarray] = {}
    icc: dict[str, bytes | None] = {}

    pattern().save(drop / "rgb-icc.png", icc_profile=srgb)
    cases["rgb-icc"], icc["rgb-icc"] = expected(pattern()), srgb
    pattern().save(drop / "rgb-icc-jpeg.jpg", quality=98, icc_profile=srgb)
    cases["rgb-icc-jpeg"], icc["rgb-icc-jpeg"] = expected(pattern()), srgb

    cmyk = Image.new("CMYK", SIZE, (0, 255, 255, 0))  # red ink
    cmyk.save(drop / "cmyk.jpg", quality=98, icc_profile=fake_cmyk_profile())
    cases["cmyk"], icc["cmyk"] = expected(Image.new("RGB", SIZE, (255, 0, 0))), None

    grey16 = Image.fromarray(np.full((SIZE[1], SIZE[0]), 30000, dtype=np.uint16))
    assert grey16.mode.startswith("I;16")
    grey16.save(drop / "sixteen.png")
    cases["sixteen"], icc["sixteen"] = expected(Image.new("RGB", SIZE, (117, 117, 117))), None

    palette = pattern().convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.info["transparency"] = palette.getpixel((0, 0))  # the red quarter is transparent
    palette.save(drop / "palette.png", transparency=palette.getpixel((0, 0)))
    flat = pattern()
    flat.paste((255, 255, 255), (0, 0, SIZE[0] // 2, SIZE[1] // 2))  # composited on white
    cases["palette"], icc["palette"] = expected(flat), None

    la = Image.new("LA", SIZE, (90, 255))
    la.save(drop / "la.png")
    cases["la"], icc["la"] = expected(Image.new("RGB", SIZE, (90, 90, 90))), None
    rgba = Image.new("RGBA", SIZE, (200, 100, 0, 255))
    rgba.save(drop / "rgba.png")
    cases["rgba"], icc["rgba"] = expected(Image.new("RGB", SIZE, (200, 100, 0))), None

    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        pattern().save(drop / f"orient{orientation}.jpg", quality=98, exif=exif)
        tagged = Image.open(drop / f"orient{orientation}.jpg")
        cases[f"orient{orientation}"] = expected(ImageOps.exif_transpose(tagged).convert("RGB"))
        icc[f"orient{orientation}"] = None

    if features.check("avif"):
        pattern().save(drop / "modern.avif", quality=100)
        cases["modern"], icc["modern"] = (
            expected(Image.open(drop / "modern.avif").convert("RGB")),
            None,
        )

    harness.start()
    stems = list(cases)
    harness.wait(
        lambda: all((harness.out / "r" / s / "manifest.json").exists() for s in stems),
        30,
        "every manifest: missing "
        + str([s for s in stems if not (harness.out / "r" / s / "manifest.json").exists()]),
    )
    problems = []
    for stem, want in cases.items():
        manifest = json.loads((harness.out / "r" / stem / "manifest.json").read_text())
        if manifest["status"] != "done":
            problems.append(f"{stem}: {manifest['status']} {manifest['steps'][0]['error']}")
            continue
        image = output(harness, stem)
        got = np.asarray(image.convert("RGB"), dtype=np.int16)
        if got.shape != want.shape:
            problems.append(
                f"{stem}: size {got.shape[1]}x{got.shape[0]}, expected {want.shape[1]}x{want.shape[0]}"
            )
            continue
        diff = np.abs(got - want).mean()
        if diff > 6:
            problems.append(
                f"{stem}: mean pixel difference {diff:.1f} from the expected upright image"
            )
        carried = image.info.get("icc_profile")
        if icc[stem] is not None and carried != icc[stem]:
            problems.append(f"{stem}: the source's ICC profile was not carried to the output")
    assert not problems, "\n".join(problems)
    # 16-bit must not come out white: the grey is mid-grey, not 255
    assert np.asarray(output(harness, "sixteen").convert("L")).mean() < 200


def test_unwanted_profiles_are_not_written(harness):
    """RGB outputs never carry a CMYK profile; keep_icc: false writes no profile."""
    harness.rule(RULE.replace("ANIMATED", "first_frame"))
    harness.rule(
        RULE.replace("ANIMATED", "first_frame")
        .replace("name: r", "name: bare")
        .replace("{rule}/{stem}", "bare/{stem}")
        .replace("output: {sink: out,", "output: {sink: out, keep_icc: false,")
        .replace('include: ["**/*"]', 'include: ["rgb-icc.png"]'),
        "bare.yaml",
    )
    Image.new("CMYK", SIZE, (0, 255, 255, 0)).save(
        harness.drop / "cmyk.jpg", icc_profile=fake_cmyk_profile()
    )
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    pattern().save(harness.drop / "rgb-icc.png", icc_profile=srgb)
    harness.start()
    harness.wait(
        lambda: harness.settled("cmyk.jpg") and harness.settled("rgb-icc.png"), 120, "both inputs"
    )
    assert (harness.out / "bare" / "rgb-icc" / "manifest.json").exists()
    problems = []
    if output(harness, "cmyk").info.get("icc_profile") == fake_cmyk_profile():
        problems.append("cmyk.jpg: its CMYK profile was written into an RGB output")
    bare = Image.open(harness.out / "bare" / "rgb-icc" / "one-0.png")
    if bare.info.get("icc_profile"):
        problems.append("rgb-icc.png under keep_icc: false: the output still carries a profile")
    assert not problems, problems


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", SIZE, colour) for colour in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        fmt,
        save_all=True,
        append_images=frames[1:],
        duration=100,
        loop=0,
        **({"lossless": True} if fmt == "WEBP" else {}),
    )
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["first_frame", "reject"])
def test_animated_gif_and_webp_follow_the_rule(harness, mode):
    harness.rule(RULE.replace("ANIMATED", mode))
    (harness.drop / "anim.gif").write_bytes(animated("GIF"))
    (harness.drop / "anim2.webp").write_bytes(animated("WEBP"))
    harness.start()
    for name, stem in (("anim.gif", "anim"), ("anim2.webp", "anim2")):
        harness.wait(
            lambda: (
                harness.settled(name)
                and (
                    mode == "first_frame"
                    or any(r["key"] == name for r in harness.ledger.quarantine())
                )
            ),
            120,
            name,
        )
        if mode == "first_frame":
            assert harness.outcome(name) == "done"
            got = np.asarray(output(harness, stem).convert("RGB"), dtype=np.int16)
            assert np.abs(got - expected(Image.new("RGB", SIZE, (250, 0, 0)))).mean() < 6, (
                "not the first frame"
            )
        else:
            assert harness.outcome(name) == "failed"
            [row] = [r for r in harness.ledger.quarantine() if r["key"] == name]
            assert "animated" in row["reason"] and "reject" in row["reason"]


def test_heic_if_supported(harness):
    pillow_heif = pytest.importorskip(
        "pillow_heif", reason="HEIC needs pillow-heif, which is not installed"
    )
    pillow_heif.register_heif_opener()
    harness.rule(RULE.replace("ANIMATED", "first_frame"))
    pattern().save(harness.drop / "phone.heic")
    harness.start()
    harness.wait(lambda: harness.settled("phone.heic"), 120, "phone.heic")
    assert harness.outcome("phone.heic") == "done"
