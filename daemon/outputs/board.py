"""The campaign board: per rule, every source x model as a grid of small thumbnails, with
filters by decision and folder, that opens fast however many sources there are.

Layout in the sink, next to the root index::

    boards/<rule>/index.html           the board (static; works from file://, a bucket, a server)
    boards/<rule>/board.js             totals, models, folders, and how many chunks there are
    boards/<rule>/chunks/000000.js     rows, CHUNK_ROWS sources each, in the order first seen
    boards/<rule>/slots.json           manifest path -> chunk (read by writers only)
    <source folder>/thumbs/<name>.webp  a THUMB_SIDE px picture of each output

The data are JavaScript files that call ``darkroomBoard(...)`` rather than JSON, so a page
opened from ``file://`` can load them with ``<script>`` tags (browsers refuse ``fetch`` there).
The board loads the newest chunk first and older ones as the reader scrolls, so its first view
costs the page, ``board.js``, one chunk and the thumbnails on screen, whatever the total.
A filter loads every chunk (a few MB at 10,000 sources), only when asked.

Writers (the finalizer of each plan, and decisions) update one chunk, then ``slots.json``,
then ``board.js`` - each a compare-and-swap on the sink, retried from the top when another
writer won - so daemons sharing a sink never lose each other's rows. A row is replaced in
place, so totals per chunk are recomputed, never counted twice.
"""

from __future__ import annotations

import io
import json
import posixpath
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog
from PIL import Image

from daemon.errors import WriteConflict
from daemon.outputs.captions import is_video
from daemon.outputs.htmldoc import escape
from daemon.outputs.manifest import Manifest
from daemon.outputs.paths import page_path_for
from daemon.outputs.thumbnails import fit_image
from daemon.sinks.base import Sink

__all__ = [
    "BOARD_DIR",
    "CHUNK_ROWS",
    "THUMB_SIDE",
    "board_row",
    "board_dir_for",
    "build_board",
    "thumb_path_for",
    "update_board",
    "write_thumbs",
]

log = structlog.get_logger("darkroom.review")

BOARD_DIR = "boards"
CHUNK_ROWS = 200
THUMB_SIDE = 128
THUMB_QUALITY = 70

_lock = threading.Lock()

# A decision as one short code in the rows (they are the bulk of the bytes): approved "a",
# rejected "r", undecided ""; a star adds "*". A failed output is "x".
DecisionCode = str


def thumb_path_for(output_path: str) -> str:
    """``a/b/explore-0.png`` -> ``a/b/thumbs/explore-0.webp``: the output's board picture,
    in its own asset's folder."""
    folder, name = posixpath.split(output_path)
    return posixpath.join(folder, "thumbs", posixpath.splitext(name)[0] + ".webp")


def board_dir_for(rule: str) -> str:
    """``boards/<rule>``; a rule name is a safe file name already, anything else is made one."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", rule).strip(".-") or "rule"
    return posixpath.join(BOARD_DIR, safe)


def write_thumbs(sink: Sink, manifest: Manifest, open_tile: Callable[[str], Image.Image]) -> int:
    """Write each output's board picture (clips: their poster); returns how many. ``open_tile``
    gives a picture of a sink path (the sheet's tile reader: no second decode when it has one).
    A picture that cannot be made is skipped: the board shows the output's name instead."""
    written = 0
    for output in manifest.written():
        picture = output.poster if is_video(output) else output.path
        if not picture:
            continue
        try:
            small = fit_image(open_tile(str(picture)), THUMB_SIDE, upscale=False)
            buffer = io.BytesIO()
            small.save(buffer, "WEBP", quality=THUMB_QUALITY, method=2)
            sink.write(thumb_path_for(str(output.path)), buffer.getvalue(), "image/webp")
            written += 1
        except Exception as exc:  # a view: degrade, never fail the plan
            log.warning("board thumbnail failed", output=output.path, error=str(exc))
    return written


def _code(manifest: Manifest, path: str | None, failed: bool) -> DecisionCode:
    if failed or not path:
        return "x"
    decision = manifest.decision_for(path)
    if decision is None:
        return ""
    code = {"approved": "a", "rejected": "r"}.get(decision.decision or "", "")
    return code + ("*" if decision.starred else "")


def board_row(manifest: Manifest, manifest_path: str, board_dir: str) -> dict[str, Any]:
    """One source's row, compact: links relative to the board's folder."""

    def link(path: str) -> str:
        return posixpath.relpath(path, board_dir)

    cells: dict[str, list[list[str]]] = {}
    for step, output in manifest.outputs():
        model = output.model or step.model or "?"
        failed = bool(output.error) or not output.path
        thumb = "" if failed else link(thumb_path_for(str(output.path)))
        name = (
            posixpath.basename(str(output.path))
            if output.path
            else (output.step or step.name or "?")
        )
        cells.setdefault(model, []).append([thumb, name, _code(manifest, output.path, failed)])
    key = manifest.source.key or ""
    return {
        "m": manifest_path,
        "p": link(page_path_for(manifest_path)),
        "k": key,
        "d": posixpath.dirname(key),
        "s": manifest.status or "",
        "t": manifest.created_at or "",
        "c": [[model, outs] for model, outs in cells.items()],
    }


def _summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    counts = {"approved": 0, "rejected": 0, "starred": 0, "failed": 0, "outputs": 0}
    folders: dict[str, int] = {}
    models: list[str] = []
    for row in rows:
        folders[row["d"]] = folders.get(row["d"], 0) + 1
        for model, outs in row["c"]:
            if model not in models:
                models.append(model)
            for _, _, code in outs:
                counts["outputs"] += 1
                counts["approved"] += code.startswith("a")
                counts["rejected"] += code.startswith("r")
                counts["starred"] += code.endswith("*")
                counts["failed"] += code == "x"
    return {"rows": len(rows), "counts": counts, "folders": folders, "models": models}


def _js(call: str, data: Any) -> bytes:
    # "</" cannot end the script early when the page inlines it; keys and names are escaped.
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    return f"darkroomBoard.{call}({text});\n".encode()


def _parse_js(data: bytes) -> Any:
    text = data.decode()
    return json.loads(text[text.index("(") + 1 : text.rindex(")")])


def _chunk_path(board_dir: str, n: int) -> str:
    return posixpath.join(board_dir, "chunks", f"{n:06d}.js")


def _write_board_meta(
    sink: Sink, board_dir: str, rule: str, summaries: list[dict[str, Any]], version: str | None
) -> None:
    counts: dict[str, int] = {}
    folders: dict[str, int] = {}
    models: list[str] = []
    for s in summaries:
        for k, v in s["counts"].items():
            counts[k] = counts.get(k, 0) + v
        for k, v in s["folders"].items():
            folders[k] = folders.get(k, 0) + v
        models += [m for m in s["models"] if m not in models]
    meta = {
        "version": 1,
        "rule": rule,
        "chunks": len(summaries),
        "chunk_rows": CHUNK_ROWS,
        "total": sum(s["rows"] for s in summaries),
        "counts": counts,
        "folders": dict(sorted(folders.items())),
        "models": models,
        "summaries": summaries,  # per chunk, so a writer recomputes only its own
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    sink.write_if(
        posixpath.join(board_dir, "board.js"), _js("meta", meta), "text/javascript",
        replacing=version,
    )  # fmt: skip


def update_board(
    sink: Sink, manifest: Manifest, manifest_path: str, *, attempts: int = 100
) -> None:
    """Put this manifest's row on its rule's board (replacing its earlier row)."""
    rule = manifest.rule.name or "(no rule)"
    board_dir = board_dir_for(rule)
    row = board_row(manifest, manifest_path, board_dir)
    meta_path = posixpath.join(board_dir, "board.js")
    slots_path = posixpath.join(board_dir, "slots.json")
    with _lock:
        for attempt in range(attempts):
            try:
                _update_once(sink, board_dir, rule, row, meta_path, slots_path)
                break
            except WriteConflict:
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        else:
            raise WriteConflict(f"{sink.location(meta_path)}: {attempts} writers won in a row")
        _write_page_once(sink, board_dir, rule)


def _update_once(
    sink: Sink, board_dir: str, rule: str, row: dict[str, Any], meta_path: str, slots_path: str
) -> None:
    meta_version = sink.version(meta_path)
    meta = _parse_js(sink.read(meta_path)) if meta_version is not None else None
    summaries: list[dict[str, Any]] = list(meta["summaries"]) if meta else []
    slots_version = sink.version(slots_path)
    slots: dict[str, int] = json.loads(sink.read(slots_path)) if slots_version else {}
    chunk = slots.get(row["m"])
    if chunk is None:
        chunk = (
            len(summaries) - 1
            if summaries and summaries[-1]["rows"] < CHUNK_ROWS
            else len(summaries)
        )
    chunk_path = _chunk_path(board_dir, chunk)
    chunk_version = sink.version(chunk_path)
    rows: list[dict[str, Any]] = _parse_js(sink.read(chunk_path))["rows"] if chunk_version else []
    rows = [r for r in rows if r["m"] != row["m"]]
    place = next((i for i, r in enumerate(rows) if r["t"] > row["t"]), len(rows))
    rows.insert(place, row)
    sink.write_if(
        chunk_path, _js("chunk", {"n": chunk, "rows": rows}), "text/javascript",
        replacing=chunk_version,
    )  # fmt: skip
    if slots.get(row["m"]) != chunk:
        slots[row["m"]] = chunk
        sink.write_if(
            slots_path, json.dumps(slots).encode(), "application/json", replacing=slots_version
        )
    while len(summaries) <= chunk:
        summaries.append(_summary([]))
    summaries[chunk] = _summary(rows)
    _write_board_meta(sink, board_dir, rule, summaries, meta_version)


def build_board(sink: Sink, rule: str, rows: Iterable[dict[str, Any]]) -> int:
    """Write a whole board from ``rows`` (oldest first), replacing what is there: the
    rebuild path, and how the benchmark makes a 10,000-source board. Returns the row count."""
    board_dir = board_dir_for(rule)
    summaries: list[dict[str, Any]] = []
    slots: dict[str, int] = {}
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        n = len(summaries)
        sink.write(_chunk_path(board_dir, n), _js("chunk", {"n": n, "rows": batch}))
        summaries.append(_summary(batch))
        slots.update((r["m"], n) for r in batch)

    for row in rows:
        batch.append(row)
        if len(batch) == CHUNK_ROWS:
            flush()
            batch = []
    if batch:
        flush()
    sink.write(posixpath.join(board_dir, "slots.json"), json.dumps(slots).encode())
    meta_path = posixpath.join(board_dir, "board.js")
    _write_board_meta(sink, board_dir, rule, summaries, sink.version(meta_path))
    _write_page_once(sink, board_dir, rule, force=True)
    return len(slots)


def _write_page_once(sink: Sink, board_dir: str, rule: str, *, force: bool = False) -> None:
    """The board's page is the same for every update: written once (and on a new version)."""
    path = posixpath.join(board_dir, "index.html")
    html = render_board_page(rule).encode()
    if force or not sink.exists(path) or sink.read(path) != html:
        sink.write(path, html, "text/html; charset=utf-8")


def render_board_page(rule: str) -> str:
    """The board's static page; its script reads ``board.js`` and the chunks."""
    from daemon.outputs.board_page import BOARD_CSS, BOARD_JS

    title = f"{rule} · board"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="darkroom">\n<link rel="icon" href="data:,">\n'
        f"<title>{escape(title)}</title>\n<style>{BOARD_CSS}</style>\n</head>\n<body>\n"
        f'<header><nav><a href="../../index.html">all sources</a></nav>'
        f'<h1>{escape(rule)} <span class="muted">· board</span></h1>'
        '<p id="totals" class="muted">loading…</p>'
        '<form id="filters" onsubmit="return false">'
        '<label>show <select id="decision"><option value="">all</option>'
        '<option value="a">approved</option><option value="r">rejected</option>'
        '<option value="*">starred</option><option value="u">undecided</option>'
        '<option value="x">failed</option></select></label> '
        '<label>folder <select id="folder"><option value="">all</option></select></label> '
        '<label>file <input id="search" type="search" placeholder="name contains"></label>'
        "</form></header>\n"
        '<main><table id="board"><thead><tr id="models"><th>source</th></tr></thead>'
        '<tbody id="rows"></tbody></table>'
        '<p id="more" class="muted"></p></main>\n'
        f"<script>{BOARD_JS}</script>\n"
        '<script src="board.js"></script>\n</body>\n</html>\n'
    )
