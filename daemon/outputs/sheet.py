"""Review sheets: one image showing a source beside what each model step made of it.

    render_sheet(manifest, open_image, tile) -> PIL image

drawn from the geometry :func:`daemon.outputs.sheet_layout.layout_sheet` computes (tested
without looking at pixels). Shape of a sheet (``tile`` = side of the square image cell)::

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
are annotation, not drawn. Images keep their aspect ratio, letterboxed in the square. Failed
steps and failed variants get a dark red tile with the wrapped reason; a step without outputs
that has not failed (queued, running) gets a grey "pending" tile.

A video output (``kind: "video"``, or a .mp4/.webm/... path) is drawn as film: its ``poster``
(a strip of frames, a PNG in the same sink, read through ``open_image``) between two sprocket
bands, captioned with the clip length ("2.1 s, 25 frames") instead of the compute time. An
output's ``cost`` (estimated USD) is added to its caption ("$0.004"), and the total to the
header's key line ("$0.12 est.").

``open_image(path)`` is the only seam to storage: it gets ``"source"`` (:data:`SOURCE`) or an
output's ``path`` and returns a PIL image. It is called from a small thread pool (decoding releases
the GIL), so it must be thread-safe. An image that cannot be read becomes a failure tile; the sheet
is still produced. Nothing here writes files: the caller encodes the returned image with
:func:`encode_sheet`, and makes its tiles with :func:`thumbnail` (re-exported here for that).

Sheets are made in the daemon's main process while the worker runs the model on the same
machine: the decode threads and the encode run at a lower scheduling priority
(:data:`NICENESS`, Linux), so they take the cores the model leaves idle, not the model's.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import structlog
from PIL import Image, ImageDraw

from daemon.outputs import sheet_png
from daemon.outputs.manifest import Manifest
from daemon.outputs.sheet_layout import SOURCE, Metrics, layout_sheet, reason_lines
from daemon.outputs.text import Box, TextLine, clean_text, font
from daemon.outputs.thumbnails import LETTERBOX, fit_image, thumbnail

__all__ = [
    "BACKGROUND",
    "FAILED_FILL",
    "HEADER_BAND",
    "INK",
    "LETTERBOX",
    "MUTED_INK",
    "SOURCE",
    "TILE",
    "encode_sheet",
    "film_band",
    "render_sheet",
    "thumbnail",
]

log = structlog.get_logger("darkroom.sheet")

# Colours (RGB).
BACKGROUND = (245, 245, 242)
HEADER_BAND = (229, 229, 224)
INK = (28, 28, 28)
MUTED_INK = (80, 80, 80)
FAILED_FILL = (112, 22, 22)
FAILED_INK = (255, 232, 232)
PENDING_FILL = (168, 168, 164)
PENDING_INK = (30, 30, 30)
FILM = (24, 24, 24)  # the sprocket bands of a video tile
FILM_HOLE = (236, 236, 230)


# Side of a sheet's image cell, px. Readers decode a tile at this size (a JPEG at 1/8 scale
# for a 4000 px photo: entropy decoding only), not larger.
TILE = 256
# How much nicer than the daemon the sheet threads run (Linux applies nice per thread).
NICENESS = 10
# zlib level of the sheet PNG (daemon.outputs.sheet_png): 1 writes a 64-tile sheet of photos
# in a fraction of level 6's time for about the same size (bench/sheet_bench.py).
SHEET_PNG_LEVEL = sheet_png.LEVEL


def _lower_priority() -> None:
    """Run this (pool) thread at a lower priority: the model's cores stay the model's."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: the default priority
        pass


def encode_sheet(image: Image.Image) -> bytes:
    """The sheet as PNG bytes (:mod:`daemon.outputs.sheet_png`: one filter, strips
    deflated in parallel), on a lower-priority thread (the strip threads it starts inherit
    its priority: Linux threads take their creator's nice value)."""
    with ThreadPoolExecutor(1, "darkroom-sheet-encode", initializer=_lower_priority) as pool:
        return pool.submit(sheet_png.encode_png, image).result()


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
    with ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="darkroom-sheet", initializer=_lower_priority
    ) as pool:
        return dict(zip(unique, pool.map(load, unique), strict=True))


def _draw_lines(
    draw: ImageDraw.ImageDraw, lines: Iterable[TextLine], fill: tuple[int, ...]
) -> None:
    for line in lines:
        draw.text(line.xy, line.text, font=font(line.size), fill=fill)


def _unreadable_reason(exc: BaseException) -> str:
    return clean_text(f"cannot read image: {type(exc).__name__}: {exc}")


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
    manifest: Manifest,
    open_image: Callable[[str], Image.Image],
    *,
    tile: int = TILE,
    workers: int | None = None,
) -> Image.Image:
    """Draw the review sheet for ``manifest`` (see the module docstring)."""
    layout = layout_sheet(manifest, tile=tile)
    m = Metrics.for_tile(tile)
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
                lines = reason_lines(_unreadable_reason(image), box, m)
            _draw_lines(draw, lines, FAILED_INK)
        fill = FAILED_FILL if placed.kind == "failed" else INK
        _draw_lines(draw, placed.captions, fill)
    return sheet
