"""Names and prompts in any language draw as letters on sheets, not as boxes (issue 18)."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from daemon.outputs.sheet import HEADER_BAND, INK
from daemon.outputs.text import FONT_FILE, font

from .conftest import layout_of, render_of

PHRASE = "Crème brûlée – Łódź – 東京の夜 – 서울"
MORE = "Ελληνικά Кириллица Tiếng Việt ÆØÅ ß ğ ş ı ひらがな カタカナ 繁體字 简体字"
NO_GLYPH = "\U000f0000"  # a private-use code point no font draws: its .notdef box
ROOT = Path(__file__).resolve().parents[2]


def _pixels(f: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> tuple:
    """What ``text`` looks like in ``f``: its mask's size and bytes."""
    mask = f.getmask(text)
    return mask.size, bytes(Image.Image()._new(mask).tobytes())


def _boxes(f: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> list[str]:
    """The characters of ``text`` that ``f`` draws as its .notdef box."""
    notdef = _pixels(f, NO_GLYPH)
    return [c for c in dict.fromkeys(text) if not c.isspace() and _pixels(f, c) == notdef]


@pytest.mark.parametrize("size", [10, 14, 21])
def test_sheet_font_has_a_glyph_for_every_letter(size):
    f = font(size)
    assert isinstance(f, ImageFont.FreeTypeFont)
    assert _boxes(f, PHRASE + MORE) == []
    # The check itself tells a box from a letter: a code point no font has is caught.
    assert _boxes(f, "a\U000f0001") == ["\U000f0001"]


def test_a_sheet_draws_accents_cjk_and_hangul_as_letters(make_manifest, synthetic_open_image):
    manifest = make_manifest([("explore", "sd-turbo", 1)], key=f"shoots/{PHRASE}.jpg")
    manifest["rule"]["name"] = PHRASE
    manifest["rule"]["prompt"] = f"{PHRASE}, {MORE}"
    layout = layout_of(manifest)
    sheet = render_of(manifest, synthetic_open_image)

    title = next(b for b in layout.blocks if b.role == "title")
    (line,) = title.lines
    assert line.text == PHRASE
    # What the sheet drew for the title is that text in the sheet font, pixel for pixel ...
    drawn = sheet.crop(line.box.as_tuple())
    expected = Image.new("RGB", sheet.size, HEADER_BAND)
    ImageDraw.Draw(expected).text(line.xy, line.text, font=font(line.size), fill=INK)
    assert drawn.tobytes() == expected.crop(line.box.as_tuple()).tobytes()
    # ... and no letter of it (nor of the prompt's lines) is the font's box.
    assert _boxes(font(line.size), line.text) == []
    for block in layout.blocks:
        for placed in block.lines:
            assert _boxes(font(placed.size), placed.text) == [], block.role
    # The key line and the prompt were drawn (not left blank).
    prompt = next(b for b in layout.blocks if b.role == "prompt")
    lo, hi = sheet.crop(prompt.lines[0].box.as_tuple()).convert("L").getextrema()
    assert hi - lo > 100


def test_the_font_ships_with_the_package_and_its_licence():
    assert FONT_FILE.is_file() and FONT_FILE.stat().st_size > 1_000_000
    fonts = FONT_FILE.parent
    assert (fonts / "LICENSE-Apache-2.0.txt").is_file()
    assert "Apache" in (fonts / "README.md").read_text()
    # pyproject's package data takes the font and its licence into the wheel.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["daemon"]
    for f in (FONT_FILE, fonts / "LICENSE-Apache-2.0.txt"):
        rel = f.relative_to(ROOT / "daemon").as_posix()
        assert any(fnmatch(rel, g) for g in globs), rel


def test_marks_the_font_lacks_or_stacks_of_marks_stay_inside_their_line(
    make_manifest, assert_layout_sound
):
    zalgo = "Z\u0351\u0352\u0357a\u0300\u0301\u0302\u0303l\u0308\u0309\u030ag\u030b\u030c\u030do"
    manifest = make_manifest([("explore", "sd-turbo", 1)], key=f"0\u08d4 {zalgo}.png")
    manifest["rule"]["prompt"] = f"{zalgo} {PHRASE} \u0915\u093f"
    layout = layout_of(manifest, tile=48)
    assert_layout_sound(layout)  # no line's ink reaches into the line above
    key = next(b for b in layout.blocks if b.role == "key")
    assert key.lines[0].text.startswith("0 Z")  # the box-less mark went, the letters stayed
    # Accented letters, CJK and Hangul are untouched.
    prompt = next(b for b in layout.blocks if b.role == "prompt")
    assert PHRASE in " ".join(line.text for line in prompt.lines).replace("prompt: ", "")


def test_a_mark_newer_than_pythons_unicode_tables_stays_inside_its_line(
    make_manifest, assert_layout_sound
):
    # U+1ACF became a combining mark in Unicode 15; Python 3.11 calls it unassigned (Cn),
    # while the text shaper may place it as a mark above the line (Hypothesis found it).
    manifest = make_manifest([("explore", "sd-turbo", 1)], key="hero.png")
    manifest["rule"]["prompt"] = "0\u1acf"
    manifest["steps"][0]["state"], manifest["steps"][0]["error"] = "failed", "0\u1acf"
    layout = layout_of(manifest, tile=48)
    assert_layout_sound(layout)
