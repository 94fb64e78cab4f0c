"""Text laid out in pixel boxes: the font, measuring, wrapping, ellipsizing and placing lines.

The review sheet and the daily digest draw with these, in the bundled font (:data:`FONT_FILE`).
Every measure is the font's own ink box (``getbbox``), so a layout can be checked without
looking at pixels.
"""

from __future__ import annotations

import functools
import io
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from PIL import ImageFont, features

__all__ = [
    "ELLIPSIS",
    "FONT_FILE",
    "AnyFont",
    "Box",
    "TextLine",
    "clean_text",
    "drawable",
    "font",
    "line_height",
    "place_lines",
    "wrap_text",
]

ELLIPSIS = "…"

log = structlog.get_logger("darkroom.sheet")


@dataclass(frozen=True)
class Box:
    """A half-open pixel rectangle [x0, x1) x [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def overlaps(self, other: Box) -> bool:
        return (
            self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1
        )

    def contains(self, other: Box) -> bool:
        return (
            self.x0 <= other.x0
            and self.y0 <= other.y0
            and other.x1 <= self.x1
            and other.y1 <= self.y1
        )

    def as_tuple(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), the form ``Image.crop`` takes."""
        return (self.x0, self.y0, self.x1, self.y1)

    def inclusive(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1 - 1, y1 - 1), the form ``ImageDraw.rectangle`` takes."""
        return (self.x0, self.y0, self.x1 - 1, self.y1 - 1)


@dataclass(frozen=True)
class TextLine:
    """One drawn line: ``xy`` is the draw origin (left/ascender anchor), ``box`` its ink box as
    measured with ``font(size).getbbox``."""

    text: str
    xy: tuple[int, int]
    box: Box
    size: int


AnyFont = ImageFont.FreeTypeFont | ImageFont.ImageFont


# Bundled with the package (see fonts/README.md for its source and licence): Latin with its
# accents, Greek, Cyrillic, CJK, kana and Hangul. Pillow's own default font has ASCII only, and
# draws every other letter of a file name or prompt as a box.
FONT_FILE = Path(__file__).with_name("fonts") / "WenQuanYiMicroHei.ttf"


@functools.lru_cache(maxsize=1)
def _font_bytes() -> bytes | None:
    """The bundled font file, read once per process (None, logged, when it cannot be read)."""
    try:
        return FONT_FILE.read_bytes()
    except OSError as exc:
        log.warning(
            "sheet font missing: letters beyond ASCII will draw as boxes",
            font=str(FONT_FILE),
            reason=str(exc),
            fix="reinstall darkroom (the font is package data)",
        )
        return None


@functools.lru_cache(maxsize=32)
def font(size: int) -> AnyFont:
    """The bundled font at ``size`` px; Pillow's default when it is missing, the bitmap
    default without FreeType."""
    if not features.check("freetype2"):
        return ImageFont.load_default_imagefont()
    data = _font_bytes()
    if data is not None:
        try:
            return ImageFont.truetype(io.BytesIO(data), size)
        except OSError as exc:
            log.warning("sheet font unreadable", font=str(FONT_FILE), reason=str(exc))
    return ImageFont.load_default(size=size)


def _size_of(f: AnyFont, fallback: int) -> int:
    return int(getattr(f, "size", fallback))


@functools.lru_cache(maxsize=32)
def line_height(size: int) -> int:
    f = font(size)
    if isinstance(f, ImageFont.FreeTypeFont):
        ascent, descent = f.getmetrics()
        return ascent + descent + max(2, size // 5)
    return int(f.getbbox("ÁÉgjy|")[3]) + 3


# A code point no font draws: what the sheet font's .notdef box looks like.
_NO_GLYPH = "\U000f0000"


def _ink(f: ImageFont.FreeTypeFont, text: str) -> tuple[tuple[int, int], bytes]:
    mask = f.getmask(text)
    return mask.size, bytes(mask)


@functools.lru_cache(maxsize=1)
def _plain_font() -> AnyFont:
    """The sheet font without text shaping: one glyph per code point, as the font has it
    (shaping would move a lone mark and make its box look unlike the font's box)."""
    data = _font_bytes()
    if data is None or not features.check("freetype2"):
        return font(32)
    return ImageFont.truetype(io.BytesIO(data), 32, layout_engine=ImageFont.Layout.BASIC)


@functools.lru_cache(maxsize=4096)
def drawable(char: str) -> bool:
    """Whether the sheet font has a glyph for ``char`` (else it draws its .notdef box)."""
    f = _plain_font()
    if not isinstance(f, ImageFont.FreeTypeFont):
        return char.isascii()
    return _ink(f, char) != _ink(f, _NO_GLYPH)


def _is_letter(category: str) -> bool:
    """Neither a mark nor a code point unknown to this Python (both may draw off the line)."""
    return category[0] != "M" and category != "Cn"


def clean_text(text: Any) -> str:
    """One line of printable text: control characters and newlines become spaces.

    Combining marks that would draw outside the line are dropped: one the font has no glyph
    for (its box would be stacked above the letter) and every mark after the first on a
    letter ("Zalgo" text). After NFC, accented letters are single code points and keep theirs.
    A code point this Python's Unicode tables do not know yet (``Cn``: U+1ACF, a mark since
    Unicode 15) counts as a mark: the text shaper may know it as one.
    """
    s = unicodedata.normalize("NFC", "" if text is None else str(text))
    kept: list[str] = []
    for c in s:
        category = unicodedata.category(c)
        if category in ("Cc", "Cf", "Zl", "Zp"):
            kept.append(" ")
            continue
        on_a_letter = bool(kept) and _is_letter(unicodedata.category(kept[-1]))
        if _is_letter(category) or (on_a_letter and drawable(c)):
            kept.append(c)
    return " ".join("".join(kept).split())


def _fits(f: AnyFont, text: str, width: int) -> bool:
    """Whether the ink of ``text`` is at most ``width`` wide (a negative left bearing counts:
    :func:`place_lines` shifts such a line right by it)."""
    left, _, right, _ = f.getbbox(text)
    return right - min(0, left) <= width


def _longest_prefix(f: AnyFont, text: str, width: int, suffix: str = "") -> int:
    """Largest n such that ``text[:n] + suffix`` fits (0 if none)."""
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _fits(f, text[:mid] + suffix, width):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _ellipsize(f: AnyFont, text: str, width: int) -> str:
    """``text`` marked as cut: "…" appended, characters dropped until it fits."""
    text = text.rstrip(" ·")
    if _fits(f, text + ELLIPSIS, width):
        return text + ELLIPSIS
    n = _longest_prefix(f, text, width, ELLIPSIS)
    out = text[:n].rstrip(" ·") + ELLIPSIS
    return out if _fits(f, out, width) else ""


def _break_token(f: AnyFont, token: str, width: int, limit: int) -> list[str]:
    """Split a token wider than ``width``: at spaces if it has any, else between characters.

    Stops after ``limit`` pieces that fit; whatever is left comes back as one last piece.
    """
    if " " in token:
        return wrap_text(token, f, width, max_lines=limit + 1)
    pieces: list[str] = []
    while token and len(pieces) < limit:
        n = max(1, _longest_prefix(f, token, width))
        pieces.append(token[:n])
        token = token[n:]
    return pieces + ([token] if token else [])


def wrap_text(text: str, f: AnyFont, width: int, max_lines: int, *, sep: str = " ") -> list[str]:
    """Greedy wrap of ``text`` into lines whose ink fits in ``width`` px.

    ``sep`` is where lines prefer to break (``" · "`` keeps caption fields together). Overlong
    tokens are split; beyond ``max_lines`` the last line is truncated with "…".
    """
    text = clean_text(text)
    if not text or max_lines < 1 or width < 1:
        return []
    tokens = [t.strip() for t in (text.split(sep) if sep.strip() else text.split())]
    tokens = [t for t in tokens if t]
    lines: list[str] = []
    current = ""
    truncated = False
    for token in tokens:
        candidate = f"{current}{sep}{token}" if current else token
        if _fits(f, candidate, width):
            current = candidate
            continue
        if current:
            lines.append(current)
        if _fits(f, token, width):
            current = token
        else:
            *full, current = _break_token(f, token, width, max_lines - len(lines))
            lines.extend(full)
        if len(lines) >= max_lines:
            truncated = True
            break
    else:
        if current:
            lines.append(current)
    if truncated or len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _ellipsize(f, lines[-1], width)
    return [line for line in lines if line]


def place_lines(lines: Sequence[str], size: int, x: int, y: int) -> tuple[TextLine, ...]:
    """Lay lines out top-down, left-aligned, from (x, y), one line height apart."""
    f, lh = font(size), line_height(size)
    placed = []
    for i, text in enumerate(lines):
        left, top, right, bottom = (int(v) for v in f.getbbox(text))
        lx = x - min(0, left)  # a negative left bearing must not poke out of the box
        ly = y + i * lh
        box = Box(lx + left, ly + top, lx + right, ly + bottom)
        placed.append(TextLine(text, (lx, ly), box, size))
    return tuple(placed)
