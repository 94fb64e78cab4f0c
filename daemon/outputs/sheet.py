"""Review sheets: one image showing a source beside what each model step made of it.

A sheet is computed in two passes so that its geometry can be tested without looking at pixels:

    layout_sheet(manifest, tile)  ->  SheetLayout     where every tile, caption line and text
                                                      block goes (pure arithmetic + font metrics)
    render_sheet(manifest, open_image, tile)  ->  PIL image drawn from that layout

Shape of a sheet (``tile`` = side of the square image cell)::

    +--------------------------------------------------------------+
    | rule name                                                    |  header band
    | shoots/a.jpg · 640x480 px · done                             |
    | prompt: a watercolor painting of a, soft light ...           |
    +--------------------------------------------------------------+
    | [source ] | explore: <group prompt, when it differs>         |
    |  caption  | [v0] [v1] [v2] [v3]          <- explore, sd-turbo   |
    |           | [v0] [v1] [v2] [v3]          <- explore, sdxl-turbo |
    |           | [failed: CUDA out of mem…]   <- refine, tiny        |
    +--------------------------------------------------------------+

Every tile is captioned underneath ("explore · sd-turbo · seed 42 · 0.41 s"); the arrows above
are annotation, not drawn.

One row per manifest step (a compare step is several adjacent steps with the same name, one per
model: they form a group and their prompt is shown once above it), one column per variant.
Images keep their aspect ratio, letterboxed in the square. Failed steps and failed variants get a
dark red tile with the wrapped reason; a step without outputs that has not failed (queued,
running) gets a grey "pending" tile.

A video output (``kind: "video"``, or a .mp4/.webm/... path) is drawn as film: its ``poster``
(a strip of frames, a PNG in the same sink, read through ``open_image``) between two sprocket
bands, captioned with the clip length ("2.1 s, 25 frames") instead of the compute time. An
output's ``cost`` (estimated USD) is added to its caption ("$0.004"), and the total to the
header's key line ("$0.12 est.").

``open_image(path)`` is the only seam to storage: it gets ``"source"`` (:data:`SOURCE`) or an
output's ``path`` and returns a PIL image. It is called from a small thread pool (decoding releases
the GIL), so it must be thread-safe. An image that cannot be read becomes a failure tile; the sheet
is still produced. Nothing here writes files: the caller encodes the returned image.

:func:`thumbnail` / :func:`fit_image` turn any image Pillow reads into a small RGB tile: JPEG
decoded at reduced size with ``draft()``, EXIF orientation applied, 16-bit greyscale scaled down
(Pillow's own conversion clips it to white), alpha and palette transparency composited onto a
neutral grey, CMYK and tagged RGB converted to sRGB through the embedded ICC profile when
LittleCMS is available.
"""

from __future__ import annotations

import functools
import io
import os
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, Literal

import structlog
from PIL import ExifTags, Image, ImageDraw, ImageFont, ImageOps, features

from daemon.outputs.colour import has_transparency, icc_to_srgb, to_rgb

__all__ = [
    "SOURCE",
    "Box",
    "PlacedTile",
    "SheetLayout",
    "TextBlock",
    "TextLine",
    "fit_image",
    "clip_text",
    "cost_text",
    "font",
    "is_video",
    "layout_sheet",
    "render_sheet",
    "thumbnail",
    "to_rgb",
    "total_cost",
    "wrap_text",
]

log = structlog.get_logger("darkroom.sheet")

SOURCE = "source"  # the path open_image() receives for the source image
ELLIPSIS = "…"
SEP = " · "
MIN_TILE = 48
MAX_CAPTION_LINES = 3
MAX_PROMPT_LINES = 4
MAX_NEGATIVE_LINES = 2
MAX_GROUP_PROMPT_LINES = 2

TileKind = Literal["source", "output", "video", "failed", "pending"]
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".m4v")

# Colours (RGB).
BACKGROUND = (245, 245, 242)
HEADER_BAND = (229, 229, 224)
LETTERBOX = (200, 200, 198)  # also the neutral background under transparent pixels
INK = (28, 28, 28)
MUTED_INK = (80, 80, 80)
FAILED_FILL = (112, 22, 22)
FAILED_INK = (255, 232, 232)
PENDING_FILL = (168, 168, 164)
PENDING_INK = (30, 30, 30)
FILM = (24, 24, 24)  # the sprocket bands of a video tile
FILM_HOLE = (236, 236, 230)


# --------------------------------------------------------------------------- geometry


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


@dataclass(frozen=True)
class TextBlock:
    """Header and group-prompt text: ``box`` is the band reserved for it; lines lie inside."""

    role: Literal["title", "key", "prompt", "negative", "group-prompt"]
    box: Box
    lines: tuple[TextLine, ...]
    text: str  # the full text before wrapping/truncation


@dataclass(frozen=True)
class PlacedTile:
    kind: TileKind
    cell: Box  # image square + caption area; tiles never overlap each other
    image: Box  # the tilextile square the picture is letterboxed into
    label: str  # the full caption text before wrapping
    captions: tuple[TextLine, ...]  # caption lines, under the image, inside ``cell``
    path: str | None = None  # what open_image() receives; None for failed/pending tiles
    reason: str | None = None  # failure/pending text shown inside the image square
    reason_lines: tuple[TextLine, ...] = ()
    row: int = -1  # -1 for the source tile
    column: int = 0
    step: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class SheetLayout:
    size: tuple[int, int]
    tile: int
    margin: int
    gap: int
    caption_height: int  # height of the caption area under every image square
    header: Box
    blocks: tuple[TextBlock, ...]
    tiles: tuple[PlacedTile, ...]
    rows: int
    columns: int

    @property
    def cell_size(self) -> tuple[int, int]:
        return (self.tile, self.tile + self.caption_height)

    @property
    def source(self) -> PlacedTile:
        return next(t for t in self.tiles if t.kind == "source")

    def boxes(self) -> list[Box]:
        """Every top-level box: the header band, group-prompt bands and tile cells."""
        return (
            [self.header]
            + [b.box for b in self.blocks if b.role == "group-prompt"]
            + [t.cell for t in self.tiles]
        )


# --------------------------------------------------------------------------- text


AnyFont = ImageFont.FreeTypeFont | ImageFont.ImageFont


@functools.lru_cache(maxsize=32)
def font(size: int) -> AnyFont:
    """Pillow's bundled scalable font at ``size`` px, or the bitmap default without FreeType."""
    if features.check("freetype2"):
        return ImageFont.load_default(size=size)
    return ImageFont.load_default_imagefont()


def _size_of(f: AnyFont, fallback: int) -> int:
    return int(getattr(f, "size", fallback))


@functools.lru_cache(maxsize=32)
def _line_height(size: int) -> int:
    f = font(size)
    if isinstance(f, ImageFont.FreeTypeFont):
        ascent, descent = f.getmetrics()
        return ascent + descent + max(2, size // 5)
    return int(f.getbbox("ÁÉgjy|")[3]) + 3


def _clean(text: Any) -> str:
    """One line of printable text: control characters and newlines become spaces."""
    s = unicodedata.normalize("NFC", "" if text is None else str(text))
    s = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in s)
    return " ".join(s.split())


def _fits(f: AnyFont, text: str, width: int) -> bool:
    """Whether the ink of ``text`` is at most ``width`` wide (a negative left bearing counts:
    :func:`_place_lines` shifts such a line right by it)."""
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
    pieces = []
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
    text = _clean(text)
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


def _place_lines(lines: Sequence[str], size: int, x: int, y: int) -> tuple[TextLine, ...]:
    """Lay lines out top-down, left-aligned, from (x, y), one line height apart."""
    f, lh = font(size), _line_height(size)
    placed = []
    for i, text in enumerate(lines):
        left, top, right, bottom = (int(v) for v in f.getbbox(text))
        lx = x - min(0, left)  # a negative left bearing must not poke out of the box
        ly = y + i * lh
        box = Box(lx + left, ly + top, lx + right, ly + bottom)
        placed.append(TextLine(text, (lx, ly), box, size))
    return tuple(placed)


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Metrics:
    tile: int
    margin: int
    gap: int
    source_gap: int
    pad: int
    caption_size: int
    title_size: int
    prompt_size: int

    @classmethod
    def for_tile(cls, tile: int) -> _Metrics:
        caption = max(10, round(tile / 18))
        return cls(
            tile=tile,
            margin=max(8, tile // 16),
            gap=max(4, tile // 32),
            source_gap=max(12, tile // 10),
            pad=max(3, caption // 3),
            caption_size=caption,
            title_size=round(caption * 1.5),
            prompt_size=caption + max(1, caption // 7),
        )


@dataclass(frozen=True)
class _Entry:
    kind: TileKind
    label: str
    path: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class _Row:
    name: str
    model: str
    prompt: str
    entries: tuple[_Entry, ...]


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _seconds(value: Any) -> str | None:
    s = _num(value)
    if s is None:
        return None
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def cost_text(value: Any) -> str | None:
    """ "$0.004" / "$0.12" for an estimated USD cost; None when there is none."""
    c = _num(value)
    if c is None or c < 0:
        return None
    return f"${c:.3f}" if c < 0.1 else f"${c:.2f}"


def is_video(output: Mapping[str, Any]) -> bool:
    """An output that is a clip (``kind: video``, or a video file suffix)."""
    if output.get("kind") == "video":
        return True
    return str(output.get("path") or "").lower().endswith(VIDEO_SUFFIXES)


def clip_text(output: Mapping[str, Any]) -> str:
    """A clip's length: "2.1 s, 25 frames" (duration from frames / fps when not given)."""
    frames, fps, duration = (_num(output.get(k)) for k in ("frames", "fps", "duration"))
    if duration is None and frames and fps:
        duration = frames / fps
    parts = []
    if duration is not None:
        parts.append(f"{duration:.1f} s")
    if frames is not None:
        parts.append(f"{int(frames)} frame" + ("" if int(frames) == 1 else "s"))
    return ", ".join(parts) or "video"


def total_cost(manifest: Mapping[str, Any]) -> float | None:
    """The sum of every output's ``cost``, or None when no output has one."""
    costs = [
        _num(o.get("cost"))
        for step in manifest.get("steps") or []
        for o in step.get("outputs") or []
    ]
    known = [c for c in costs if c is not None]
    return sum(known) if known else None


def _variant_key(indexed: tuple[int, Mapping[str, Any]]) -> tuple[float, int]:
    i, out = indexed
    v = _num(out.get("variant"))
    return (v if v is not None else float(i), i)


def _rows(manifest: Mapping[str, Any]) -> list[_Row]:
    rows = []
    for step in manifest.get("steps") or []:
        name = _clean(step.get("name")) or "step"
        model = _clean(step.get("model") or step.get("model_id")) or "?"
        state = _clean(step.get("state")) or "pending"
        entries: list[_Entry] = []
        outputs = sorted(enumerate(step.get("outputs") or []), key=_variant_key)
        for _, out in outputs:
            o_step = _clean(out.get("step")) or name
            o_model = _clean(out.get("model")) or model
            path = out.get("path")
            if out.get("error") or not path:
                v = out.get("variant")
                label = SEP.join(
                    [o_step, o_model] + ([f"variant {v}"] if v is not None else []) + ["failed"]
                )
                reason = _clean(out.get("error")) or "no output file recorded"
                entries.append(_Entry("failed", label, reason=reason))
                continue
            fields = [o_step, o_model]
            if out.get("seed") is not None:
                fields.append(f"seed {out.get('seed')}")
            if is_video(out):
                fields.append(clip_text(out))
            elif (secs := _seconds(out.get("seconds"))) is not None:
                fields.append(secs)
            if (cost := cost_text(out.get("cost"))) is not None:
                fields.append(cost)
            if is_video(out):
                poster = out.get("poster")
                label = SEP.join(f for f in fields if f)
                if poster:
                    entries.append(_Entry("video", label, path=str(poster)))
                else:
                    entries.append(_Entry("video", label, reason="video (no poster image)"))
                continue
            entries.append(_Entry("output", SEP.join(fields), path=str(path)))
        error = _clean(step.get("error"))
        if state == "failed" and (error or not entries):
            reason = error or "failed (no reason recorded)"
            entries.append(_Entry("failed", SEP.join([name, model, "failed"]), reason=reason))
        elif not entries:
            reason = "no outputs" if state == "done" else state
            entries.append(_Entry("pending", SEP.join([name, model, state]), reason=reason))
        rows.append(_Row(name, model, _clean(step.get("prompt")), tuple(entries)))
    return rows


def _groups(rows: list[_Row]) -> list[list[_Row]]:
    groups: list[list[_Row]] = []
    for row in rows:
        if groups and groups[-1][0].name == row.name:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def _group_prompt(group: list[_Row], rule_prompt: str) -> str:
    prompts = list(dict.fromkeys(r.prompt for r in group if r.prompt))
    differing = [p for p in prompts if p != rule_prompt]
    if not differing:
        return ""
    if len(prompts) == 1:
        return f"{group[0].name}: {prompts[0]}"
    per_model = [f"{r.model}: {r.prompt}" for r in group if r.prompt]
    return f"{group[0].name}: " + " | ".join(dict.fromkeys(per_model))


def _source_label(source: Mapping[str, Any]) -> str:
    w, h = source.get("width"), source.get("height")
    return f"{SOURCE}{SEP}{w}x{h}" if w and h else SOURCE


def _reason_lines(reason: str, image: Box, m: _Metrics) -> tuple[TextLine, ...]:
    size, lh = m.caption_size, _line_height(m.caption_size)
    width = image.width - 2 * m.pad
    max_lines = max(1, (image.height - 2 * m.pad) // lh)
    lines = wrap_text(reason, font(size), width, max_lines)
    return _place_lines(lines, size, image.x0 + m.pad, image.y0 + m.pad)


def _block(
    role: Any, text: str, size: int, max_lines: int, x: int, y: int, width: int, prefix: str = ""
) -> TextBlock:
    lines = wrap_text(prefix + text, font(size), width, max_lines)
    placed = _place_lines(lines, size, x, y)
    return TextBlock(role, Box(x, y, x + width, y + len(lines) * _line_height(size)), placed, text)


def layout_sheet(manifest: Mapping[str, Any], tile: int = 256) -> SheetLayout:
    """Where everything on the sheet goes, for ``tile``-pixel square image cells."""
    if tile < MIN_TILE:
        raise ValueError(f"tile must be at least {MIN_TILE} px, got {tile}")
    m = _Metrics.for_tile(tile)
    rule = manifest.get("rule") or {}
    source = manifest.get("source") or {}
    rule_prompt = _clean(rule.get("prompt"))
    groups = _groups(_rows(manifest))
    columns = max([1] + [len(r.entries) for g in groups for r in g])
    grid_x = m.margin + tile + m.source_gap
    width = grid_x + columns * tile + (columns - 1) * m.gap + m.margin
    inner = width - 2 * m.margin

    # Header band: rule name, source key line, prompt, negative prompt.
    blocks: list[TextBlock] = []
    y = m.margin
    key_fields = [_clean(source.get("key") or source.get("uri")) or "?"]
    if source.get("width") and source.get("height"):
        key_fields.append(f"{source['width']}x{source['height']} px")
    if manifest.get("status"):
        key_fields.append(_clean(manifest["status"]))
    if (cost := cost_text(total_cost(manifest))) is not None:
        key_fields.append(f"{cost} est.")
    header_texts: list[tuple[Any, str, int, int, str]] = [
        ("title", _clean(rule.get("name")) or "(no rule)", m.title_size, 1, ""),
        ("key", SEP.join(key_fields), m.caption_size, 1, ""),
        ("prompt", rule_prompt, m.prompt_size, MAX_PROMPT_LINES, "prompt: "),
        (
            "negative",
            _clean(rule.get("negative_prompt")),
            m.caption_size,
            MAX_NEGATIVE_LINES,
            "negative: ",
        ),
    ]
    for role, text, size, max_lines, prefix in header_texts:
        if not text:
            continue
        block = _block(role, text, size, max_lines, m.margin, y, inner, prefix)
        blocks.append(block)
        y = block.box.y1 + m.pad
    header = Box(0, 0, width, y - m.pad + m.margin)

    # Caption area height: uniform, sized for the longest caption (at most MAX_CAPTION_LINES).
    cap_font, cap_lh = font(m.caption_size), _line_height(m.caption_size)
    cap_width = tile - 2 * m.pad
    labels = [_source_label(source)] + [e.label for g in groups for r in g for e in r.entries]
    wrapped = {
        label: wrap_text(label, cap_font, cap_width, MAX_CAPTION_LINES, sep=SEP) for label in labels
    }
    caption_lines = max(1, max(len(v) for v in wrapped.values()))
    caption_height = 2 * m.pad + caption_lines * cap_lh
    cell_h = tile + caption_height

    def place(kind: TileKind, x: int, y: int, label: str, **kw: Any) -> PlacedTile:
        image = Box(x, y, x + tile, y + tile)
        captions = _place_lines(wrapped[label], m.caption_size, x + m.pad, image.y1 + m.pad)
        reason = kw.get("reason")
        reason_lines = _reason_lines(reason, image, m) if reason else ()
        return PlacedTile(
            kind,
            Box(x, y, x + tile, y + cell_h),
            image,
            label,
            captions,
            reason_lines=reason_lines,
            **kw,
        )

    top = header.y1 + m.margin
    tiles = [place("source", m.margin, top, labels[0], path=SOURCE)]
    y = top
    row_index = 0
    for group in groups:
        text = _group_prompt(group, rule_prompt)
        if text:
            block = _block(
                "group-prompt",
                text,
                m.caption_size,
                MAX_GROUP_PROMPT_LINES,
                grid_x,
                y,
                width - m.margin - grid_x,
            )
            blocks.append(block)
            y = block.box.y1 + m.gap
        for row in group:
            for col, entry in enumerate(row.entries):
                x = grid_x + col * (tile + m.gap)
                tiles.append(
                    place(
                        entry.kind,
                        x,
                        y,
                        entry.label,
                        path=entry.path,
                        reason=entry.reason,
                        row=row_index,
                        column=col,
                        step=row.name,
                        model=row.model,
                    )
                )
            y += cell_h + m.gap
            row_index += 1
        y += m.gap  # a little more air between groups
    bottom = max(tiles[0].cell.y1, y - 2 * m.gap if groups else top)
    return SheetLayout(
        size=(width, bottom + m.margin),
        tile=tile,
        margin=m.margin,
        gap=m.gap,
        caption_height=caption_height,
        header=header,
        blocks=tuple(blocks),
        tiles=tuple(tiles),
        rows=row_index,
        columns=columns,
    )


# --------------------------------------------------------------------------- images

_ORIENTATION = ExifTags.Base.Orientation


def _target(size: tuple[int, int], box: int, upscale: bool) -> tuple[int, int]:
    w, h = size
    scale = box / max(w, h)
    if scale > 1 and not upscale:
        return size
    return (max(1, round(w * scale)), max(1, round(h * scale)))


def fit_image(im: Image.Image, size: int, *, upscale: bool = True) -> Image.Image:
    """A new RGB image fitting in ``size``x``size``, upright (EXIF), display-ready.

    ``im`` is consumed: a lazily opened JPEG gets ``draft``-ed and loaded at reduced scale.
    On a JPEG that has not been loaded yet this decodes at reduced scale (``draft``): the cost is
    then mostly entropy decoding, not IDCT + full-size resampling.
    """
    if im.format == "JPEG":
        im.draft("RGB", (size, size))  # no-op once loaded; keeps the result >= size
    orientation = im.getexif().get(_ORIENTATION, 1)
    if orientation in range(2, 9):
        im = ImageOps.exif_transpose(im)
    icc = im.info.get("icc_profile")
    if im.mode in ("RGB", "L", "CMYK") and not has_transparency(im):
        small = im.resize(
            _target(im.size, size, upscale), Image.Resampling.LANCZOS, reducing_gap=3.0
        )
        out = small.convert("RGB") if small.mode == "L" else icc_to_srgb(small, icc)
    else:
        flat = to_rgb(im, LETTERBOX)
        out = flat.resize(
            _target(flat.size, size, upscale), Image.Resampling.LANCZOS, reducing_gap=3.0
        )
    if out is im:
        out = out.copy()
    out.info = {}  # orientation and ICC are applied: nothing left to re-apply
    return out


def thumbnail(
    data_or_path: bytes | str | os.PathLike[str] | IO[bytes], size: int, *, upscale: bool = False
) -> Image.Image:
    """Decode an image file (bytes, path or binary file) straight to an RGB thumbnail."""
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes | bytearray) else data_or_path
    with Image.open(src) as im:
        return fit_image(im, size, upscale=upscale)


# --------------------------------------------------------------------------- rendering


def _load_tiles(
    paths: Iterable[str], open_image: Callable[[str], Image.Image], tile: int, workers: int
) -> dict[str, Image.Image | BaseException]:
    def load(path: str) -> Image.Image | BaseException:
        try:
            return fit_image(open_image(path), tile)
        except Exception as exc:  # one unreadable image must not cost the whole sheet
            log.warning("review sheet: cannot read %s: %s", path, exc, exc_info=True)
            return exc

    unique = list(dict.fromkeys(paths))
    if workers <= 1 or len(unique) <= 1:
        return {p: load(p) for p in unique}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="darkroom-sheet") as pool:
        return dict(zip(unique, pool.map(load, unique), strict=True))


def _draw_lines(
    draw: ImageDraw.ImageDraw, lines: Iterable[TextLine], fill: tuple[int, ...]
) -> None:
    for line in lines:
        draw.text(line.xy, line.text, font=font(line.size), fill=fill)


def _unreadable_reason(exc: BaseException) -> str:
    return _clean(f"cannot read image: {type(exc).__name__}: {exc}")


def film_band(tile: int) -> int:
    """Height of the sprocket band drawn above and below a video tile's frames."""
    return max(6, tile // 14)


def _draw_film(
    draw: ImageDraw.ImageDraw, sheet: Image.Image, box: Box, image: Image.Image | None
) -> None:
    """A video tile: dark film with sprocket holes top and bottom, the poster strip between."""
    draw.rectangle(box.inclusive(), fill=FILM)
    band = film_band(box.width)
    hole_w, hole_h = max(3, band // 2), max(2, band // 2)
    step = hole_w * 2
    for x in range(box.x0 + hole_w // 2, box.x1 - hole_w, step):
        for y in (box.y0 + (band - hole_h) // 2, box.y1 - band + (band - hole_h) // 2):
            draw.rectangle((x, y, x + hole_w - 1, y + hole_h - 1), fill=FILM_HOLE)
    if image is None:
        return
    inner_h = box.height - 2 * band
    if image.height > inner_h or image.width > box.width:
        image = image.copy()
        image.thumbnail((box.width, inner_h), Image.Resampling.LANCZOS)
    x = box.x0 + (box.width - image.width) // 2
    y = box.y0 + band + (inner_h - image.height) // 2
    sheet.paste(image, (x, y))


def render_sheet(
    manifest: Mapping[str, Any],
    open_image: Callable[[str], Image.Image],
    *,
    tile: int = 256,
    workers: int | None = None,
) -> Image.Image:
    """Draw the review sheet for ``manifest`` (see the module docstring)."""
    layout = layout_sheet(manifest, tile=tile)
    m = _Metrics.for_tile(tile)
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    images = _load_tiles((t.path for t in layout.tiles if t.path), open_image, tile, workers)

    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.rectangle(layout.header.inclusive(), fill=HEADER_BAND)
    for block in layout.blocks:
        fill = INK if block.role in ("title", "group-prompt") else MUTED_INK
        _draw_lines(draw, block.lines, fill)

    for placed in layout.tiles:
        box = placed.image
        inner = box.inclusive()
        image = images.get(placed.path) if placed.path else None
        if placed.kind == "video" and not isinstance(image, BaseException):
            _draw_film(draw, sheet, box, image if isinstance(image, Image.Image) else None)
            if image is None:
                _draw_lines(draw, placed.reason_lines, FILM_HOLE)
        elif isinstance(image, Image.Image):
            draw.rectangle(inner, fill=LETTERBOX)
            x = box.x0 + (box.width - image.width) // 2
            y = box.y0 + (box.height - image.height) // 2
            sheet.paste(image, (x, y))
        elif placed.kind == "pending":
            draw.rectangle(inner, fill=PENDING_FILL)
            _draw_lines(draw, placed.reason_lines, PENDING_INK)
        else:
            draw.rectangle(inner, fill=FAILED_FILL)
            lines = placed.reason_lines
            if isinstance(image, BaseException):
                lines = _reason_lines(_unreadable_reason(image), box, m)
            _draw_lines(draw, lines, FAILED_INK)
        fill = FAILED_FILL if placed.kind == "failed" else INK
        _draw_lines(draw, placed.captions, fill)
    return sheet
