"""Inputs as teams bring them (issue 19, "Inputs"): phone HEIC and AVIF, deep TIFF/PNG, and
colour profiles that do not describe RGB. Each decodes through the path every job takes:
``imaging.decode`` -> ``imaging.to_rgb`` (the model's pixels) and ``imaging.output_icc`` (the
profile the outputs carry)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageCms, features

from daemon.intake.facts import image_facts
from daemon.outputs import imaging
from tests.formats.images import png_16bit, tiff_12bit

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
RED, GREEN = (220, 30, 40), (30, 160, 60)


def model_pixels(data: bytes, name: str) -> np.ndarray:
    return np.asarray(imaging.to_rgb(imaging.decode(data, name)), dtype=np.int16)


def phone_photo_heic() -> bytes:
    """What a phone writes: the sensor's landscape pixels, EXIF orientation 6 (rotate 90°
    clockwise to view) and an ICC profile. The top half of the upright photo is red."""
    pytest.importorskip("pillow_heif")
    import pillow_heif

    sensor = Image.new("RGB", (64, 32), GREEN)
    sensor.paste(RED, (0, 0, 32, 32))  # left half of the sensor = top half upright
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    pillow_heif.from_pillow(sensor).save(buffer, quality=95, exif=exif.tobytes(), icc_profile=SRGB)
    return buffer.getvalue()


def test_phone_heic_decodes_upright_with_its_colours_and_profile():
    data = phone_photo_heic()
    facts = image_facts(data)
    assert facts is not None and (facts.type, facts.width, facts.height) == ("heif", 32, 64)
    image = imaging.decode(data, "IMG_0001.HEIC")
    rgb = np.asarray(imaging.to_rgb(image), dtype=np.int16)
    assert rgb.shape == (64, 32, 3), "not upright: a portrait phone photo must stay portrait"
    assert np.abs(rgb[8, 16] - RED).max() < 12, "top of the upright photo is not red"
    assert np.abs(rgb[56, 16] - GREEN).max() < 12, "bottom of the upright photo is not green"
    assert imaging.output_icc(image, "IMG_0001.HEIC") == SRGB


def test_heic_without_its_plugin_is_a_configuration_fault_not_a_bad_file(tmp_path):
    path = tmp_path / "phone.heic"
    path.write_bytes(phone_photo_heic())
    # A fresh interpreter where pillow-heif cannot be imported: the daemon's environment
    # before the operator installs it.
    script = (
        "import sys; sys.modules['pillow_heif'] = None\n"
        "from daemon.errors import EnvironmentFault\n"
        "from daemon.outputs import imaging\n"
        f"data = open({str(path)!r}, 'rb').read()\n"
        "try:\n    imaging.decode(data, 'phone.heic')\n"
        "except EnvironmentFault as exc:\n    print('held:', exc)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "held:" in run.stdout and "pillow-heif" in run.stdout


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")
def test_avif_decodes():
    source = Image.new("RGB", (48, 32), GREEN)
    source.paste(RED, (0, 0, 24, 16))
    buffer = io.BytesIO()
    source.save(buffer, "AVIF", quality=95)
    data = buffer.getvalue()
    facts = image_facts(data)
    assert facts is not None and facts.type == "avif"
    rgb = model_pixels(data, "shot.avif")
    assert np.abs(rgb[4, 4] - RED).max() < 16 and np.abs(rgb[28, 40] - GREEN).max() < 16


GRADIENT_12BIT = (np.arange(16 * 64).reshape(16, 64) * 4 % 4096).astype(np.uint16)
# What an 8-bit rendering of the 12-bit gradient should be: the full 0..255 range.
EXPECTED_8BIT = np.rint(GRADIENT_12BIT * (255 / 4095))


def grey(data: bytes, name: str) -> np.ndarray:
    return model_pixels(data, name)[..., 0]


def test_true_12bit_tiff_is_not_black():
    got = grey(tiff_12bit(GRADIENT_12BIT), "scan.tif")
    assert got.max() >= 250, "a 12-bit TIFF scaled over 0..65535 comes out black"
    assert np.abs(got - EXPECTED_8BIT).max() <= 1


def test_16bit_tiff_declaring_max_sample_value_4095():
    buffer = io.BytesIO()
    Image.fromarray(GRADIENT_12BIT).save(buffer, "TIFF", tiffinfo={281: 4095})
    assert np.abs(grey(buffer.getvalue(), "cam.tif") - EXPECTED_8BIT).max() <= 1


def test_narrow_range_16bit_tiff_without_declaration_uses_its_value_range():
    buffer = io.BytesIO()
    Image.fromarray(GRADIENT_12BIT).save(buffer, "TIFF")
    got = grey(buffer.getvalue(), "narrow.tif")
    assert np.abs(got - EXPECTED_8BIT).max() <= 1


def test_full_range_16bit_png_keeps_its_tones():
    full = (np.arange(16 * 64).reshape(16, 64) * 64).astype(np.uint16)  # up to 65472
    got = grey(png_16bit(full), "full.png")
    assert np.abs(got - np.rint(full * (255 / 65535))).max() <= 1


def test_12bit_in_16bit_rgb_png_with_sbit_keeps_colour_and_brightness():
    rgb12 = np.stack([GRADIENT_12BIT, GRADIENT_12BIT // 2, np.full_like(GRADIENT_12BIT, 4095)], -1)
    got = model_pixels(png_16bit(rgb12, significant_bits=12), "cam.png")
    expected = np.rint(rgb12 * (255 / 4095))
    assert got[..., 2].min() >= 254, "a 12-bit white channel must be white, not 1/16 grey"
    assert np.abs(got - expected).max() <= 1


def lab_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()


def tagged_png(mode: str, icc: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (16, 16), 128 if mode == "L" else (128, 64, 32)).save(
        buffer, "PNG", icc_profile=icc
    )
    return buffer.getvalue()


def gray_icc() -> bytes:
    """An ICC profile whose colour space is GRAY (header bytes 16..20), as grey scans carry
    (LittleCMS cannot build one from Python: an sRGB profile relabelled)."""
    profile = bytearray(SRGB)
    profile[16:20] = b"GRAY"
    return bytes(profile)


PROFILES = {
    "grey": gray_icc,
    "lab": lab_profile,
    "unparsable": lambda: b"\x00\x00\x00\x10not an icc profile at all",
}


@pytest.mark.parametrize("what", list(PROFILES))
def test_non_rgb_or_broken_profiles_never_reach_rgb_outputs(what):
    icc = PROFILES[what]()
    image = imaging.decode(tagged_png("L", icc), f"{what}.png")
    assert image.info.get("icc_profile") == icc, "the test file must carry the profile"
    assert imaging.output_icc(image, f"{what}.png") is None
    rgb = imaging.to_rgb(image)
    out, _ = imaging.encode(rgb, "out.jpg", None, icc_profile=imaging.output_icc(image))
    assert Image.open(io.BytesIO(out)).info.get("icc_profile") is None


def test_an_rgb_profile_still_travels():
    image = imaging.decode(tagged_png("RGB", SRGB), "rgb.png")
    assert imaging.output_icc(image, "rgb.png") == SRGB
