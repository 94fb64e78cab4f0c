"""The daily digest: one index sheet per rule of everything processed on a day.

    build_digest(sink, day, *, rules=None, tile=256, columns=4) -> list[str]

reads the sink's ``index.json`` (see :mod:`daemon.outputs.index`), keeps the entries whose manifest
``created_at`` (UTC) falls on ``day``, and writes ``digests/<YYYY-MM-DD>/<rule>.png``: a grid of
one cell per source — its review sheet shrunk to ``tile`` px, or, without a sheet, its first
variants side by side — captioned with the source key, status, variant count and time.
Returns the sink paths written (none when nothing was processed that day).
"""

from __future__ import annotations

import datetime
import io
import re
from collections.abc import Iterable

import structlog
from PIL import Image, ImageDraw

from daemon.outputs.captions import cost_text
from daemon.outputs.index import IndexEntry, load_index
from daemon.outputs.sheet import BACKGROUND, FAILED_FILL, HEADER_BAND, INK, MUTED_INK
from daemon.outputs.text import font, wrap_text
from daemon.outputs.thumbnails import LETTERBOX, fit_image
from daemon.sinks.base import Sink

__all__ = ["build_digest", "digest_path"]

log = structlog.get_logger("darkroom.digest")


def digest_path(day: datetime.date, rule: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", rule).strip(".-") or "rule"
    return f"digests/{day.isoformat()}/{safe}.png"


def _cell_image(sink: Sink, entry: IndexEntry, tile: int) -> Image.Image | None:
    """The source's sheet shrunk to the tile, else its first two variants side by side."""
    if entry.sheet:
        try:
            with Image.open(io.BytesIO(sink.read(entry.sheet))) as im:
                return fit_image(im, tile)
        except Exception as exc:
            log.warning("digest: cannot read sheet %s: %s", entry.sheet, exc)
    thumbs = entry.thumbs[:2]
    pictures = []
    for path in thumbs:
        try:
            with Image.open(io.BytesIO(sink.read(path))) as im:
                pictures.append(fit_image(im, tile // max(1, len(thumbs))))
        except Exception as exc:
            log.warning("digest: cannot read %s: %s", path, exc)
    if not pictures:
        return None
    strip = Image.new(
        "RGB", (sum(p.width for p in pictures), max(p.height for p in pictures)), LETTERBOX
    )
    x = 0
    for p in pictures:
        strip.paste(p, (x, 0))
        x += p.width
    return strip


def _caption(entry: IndexEntry) -> list[str]:
    fields = [entry.status or "?", f"{entry.variants} variants"]
    if entry.approved:
        fields.append(f"{entry.approved} approved")
    if (cost := cost_text(entry.cost)) is not None:
        fields.append(cost)
    created = entry.created_at or ""
    if len(created) >= 16:
        fields.append(created[11:16] + " UTC")
    return [entry.key or entry.manifest, " · ".join(fields)]


def render_digest(
    sink: Sink,
    rule: str,
    day: datetime.date,
    entries: list[IndexEntry],
    *,
    tile: int = 256,
    columns: int = 4,
) -> Image.Image:
    """The digest image for one rule's entries (newest last)."""
    margin, gap, pad = max(8, tile // 16), max(6, tile // 24), 4
    cap_size = max(10, round(tile / 18))
    title_size = round(cap_size * 1.6)
    lh = cap_size + max(4, cap_size // 2)
    cap_h = 2 * lh + 2 * pad
    cols = max(1, min(columns, len(entries)))
    rows = (len(entries) + cols - 1) // cols
    header_h = margin * 2 + title_size + lh
    width = margin * 2 + cols * tile + (cols - 1) * gap
    height = header_h + margin + rows * (tile + cap_h) + (rows - 1) * gap + margin
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.rectangle((0, 0, width - 1, header_h - 1), fill=HEADER_BAND)
    title = wrap_text(rule, font(title_size), width - 2 * margin, 1)
    draw.text((margin, margin), title[0] if title else "", font=font(title_size), fill=INK)
    sub = f"{day.isoformat()} · {len(entries)} source" + ("" if len(entries) == 1 else "s")
    draw.text((margin, margin + title_size + 4), sub, font=font(cap_size), fill=MUTED_INK)
    for i, entry in enumerate(entries):
        r, c = divmod(i, cols)
        x = margin + c * (tile + gap)
        y = header_h + margin + r * (tile + cap_h + gap)
        picture = _cell_image(sink, entry, tile)
        if picture is None:
            draw.rectangle((x, y, x + tile - 1, y + tile - 1), fill=FAILED_FILL)
        else:
            draw.rectangle((x, y, x + tile - 1, y + tile - 1), fill=LETTERBOX)
            sheet.paste(
                picture, (x + (tile - picture.width) // 2, y + (tile - picture.height) // 2)
            )
        for j, text in enumerate(_caption(entry)):
            lines = wrap_text(text, font(cap_size), tile - 2 * pad, 1)
            if lines:
                fill = INK if j == 0 else MUTED_INK
                draw.text(
                    (x + pad, y + tile + pad + j * lh), lines[0], font=font(cap_size), fill=fill
                )
    return sheet


def build_digest(
    sink: Sink,
    day: datetime.date,
    *,
    rules: Iterable[str] | None = None,
    tile: int = 256,
    columns: int = 4,
) -> list[str]:
    """Write one digest PNG per rule for ``day``; returns the sink paths written."""
    wanted = set(rules) if rules is not None else None
    by_rule: dict[str, list[IndexEntry]] = {}
    for entry in load_index(sink):
        if entry.day != day.isoformat():
            continue
        rule = entry.rule or "(no rule)"
        if wanted is not None and rule not in wanted:
            continue
        by_rule.setdefault(rule, []).append(entry)
    written = []
    for rule in sorted(by_rule):
        entries = sorted(by_rule[rule], key=lambda e: (str(e.created_at), str(e.key)))
        image = render_digest(sink, rule, day, entries, tile=tile, columns=columns)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        path = digest_path(day, rule)
        sink.write(path, buffer.getvalue(), "image/png")
        written.append(path)
    return written
