"""The output root's index: ``index.json`` (one entry per source) and the ``index.html`` page.

    index_entry(manifest, *, manifest_path) -> IndexEntry   the summary of one manifest
    load_index(sink) -> list[IndexEntry]                     read (or rebuild) index.json
    update_index(sink, entry) -> list[IndexEntry]            replace one entry, rewrite both
    render_index(entries) -> str                             the root page (pure)

``index.json`` is ``{"version": 1, "entries": [...]}``, one entry per manifest path, replaced
on republish. A missing or unreadable index is rebuilt from the manifests the sink can list.
Updates are a compare-and-swap on ``index.json`` (S3: IfMatch; folders: a lock file), retried
until they win, so daemons and threads sharing one root never lose each other's entries. The
daily digest reads the same entries.
"""

from __future__ import annotations

import bisect
import datetime
import heapq
import json
import posixpath
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from pydantic import BaseModel, ConfigDict, Field

from daemon.errors import WriteConflict
from daemon.outputs.board import thumb_path_for
from daemon.outputs.captions import cost_text, is_video
from daemon.outputs.htmldoc import escape, page_document
from daemon.outputs.manifest import Manifest, parse_manifest
from daemon.outputs.paths import INDEX_HTML, INDEX_JSON, page_path_for, rel
from daemon.sinks.base import Sink

__all__ = [
    "INDEX_HTML",
    "INDEX_JSON",
    "IndexEntry",
    "index_entry",
    "load_index",
    "render_index",
    "update_index",
]

log = structlog.get_logger("darkroom.review")

_index_lock = threading.Lock()


class IndexEntry(BaseModel):
    """One source in the output root's index (what the index page and the digest show)."""

    model_config = ConfigDict(frozen=True, extra="allow")  # entries older daemons wrote

    manifest: str
    page: str | None = None
    sheet: str | None = None
    rule: str | None = None
    key: str | None = None
    source_sha256: str | None = None
    status: str | None = None
    created_at: str | None = None
    version: int | str | None = None
    models: list[str] = Field(default_factory=list)
    variants: int = 0
    failed: int = 0
    approved: int = 0
    rejected: int = 0
    cost: float | None = None
    thumbs: list[str] = Field(default_factory=list)  # up to 4 output pictures (posters for clips)
    updated_at: str | None = None

    @property
    def day(self) -> str:
        """The UTC date it was made (``YYYY-MM-DD``), or "" when unknown."""
        return (self.created_at or "")[:10]


def index_entry(manifest: Manifest, *, manifest_path: str) -> IndexEntry:
    """The summary of one manifest that ``index.json`` keeps."""
    outputs = [o for _, o in manifest.outputs()]
    good = manifest.written()
    decisions = [d.decision for d in manifest.decisions.values()]
    thumbs = [str(o.poster if is_video(o) else o.path) for o in good if not is_video(o) or o.poster]
    failed_without_outputs = sum(1 for s in manifest.steps if s.failed and not s.outputs)
    return IndexEntry(
        manifest=manifest_path,
        page=page_path_for(manifest_path),
        sheet=manifest.sheet,
        rule=manifest.rule.name,
        key=manifest.source.key or manifest.source.uri,
        source_sha256=manifest.source.sha256,
        status=manifest.status,
        created_at=manifest.created_at,
        version=manifest.version,
        models=list(dict.fromkeys(s.model for s in manifest.steps if s.model)),
        variants=len(good),
        failed=len(outputs) - len(good) + failed_without_outputs,
        approved=decisions.count("approved"),
        rejected=decisions.count("rejected"),
        cost=manifest.total_cost(),
        thumbs=thumbs[:4],
        updated_at=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def _list_manifests(sink: Sink) -> list[str]:
    """Sink paths of every manifest in the sink."""
    skip = ("approved/", "digests/")
    return sorted(
        p
        for p in sink.list("")
        if p.endswith("manifest.json")
        and not p.startswith(skip)
        and not any(part.startswith(".") for part in p.split("/"))
    )


def _rebuild(sink: Sink) -> list[IndexEntry]:
    entries = []
    for path in _list_manifests(sink):
        try:
            manifest = parse_manifest(sink.read(path))
        except Exception as exc:  # one bad manifest must not stop the index
            log.warning("skipping unreadable manifest %s: %s", path, exc)
            continue
        entries.append(index_entry(manifest, manifest_path=path))
    return entries


def load_index(sink: Sink, *, rebuild: bool = True) -> list[IndexEntry]:
    """The entries of the sink's ``index.json``; rebuilt from the manifests when it is
    missing or unreadable (and ``rebuild``)."""
    try:
        if sink.exists(INDEX_JSON):
            data = json.loads(sink.read(INDEX_JSON))
            entries = data.get("entries") if isinstance(data, dict) else None
            if isinstance(entries, list) and all(
                isinstance(e, dict) and e.get("manifest") for e in entries
            ):
                return [IndexEntry.model_validate(e) for e in entries]
            log.warning("index.json has an unexpected shape: rebuilding it")
    except Exception as exc:
        log.warning("index.json unreadable (%s): rebuilding it", exc)
    return _rebuild(sink) if rebuild else []


@dataclass
class _Read:
    """``index.json`` as this process last read or wrote it: the entries by manifest path,
    their order in the file, and each entry's JSON (one entry changes per update: the rest
    is written again as it was)."""

    version: str | None
    entries: dict[str, IndexEntry]
    fragments: dict[str, str]
    order: list[tuple[str, str, str]]  # _order of every entry, sorted

    @classmethod
    def of(cls, version: str | None, entries: Sequence[IndexEntry]) -> _Read:
        by_manifest = {e.manifest: e for e in entries}
        fragments = {m: _fragment(e) for m, e in by_manifest.items()}
        return cls(version, by_manifest, fragments, sorted(map(_order, by_manifest.values())))

    def with_entry(self, entry: IndexEntry) -> _Read:
        """A copy with ``entry`` in (in place of the one for the same manifest)."""
        order = list(self.order)
        earlier = self.entries.get(entry.manifest)
        if earlier is not None:
            del order[bisect.bisect_left(order, _order(earlier))]
        bisect.insort(order, _order(entry))
        entries = {**self.entries, entry.manifest: entry}
        fragments = {**self.fragments, entry.manifest: _fragment(entry)}
        return _Read(None, entries, fragments, order)

    def sorted_entries(self) -> list[IndexEntry]:
        return [self.entries[manifest] for _, _, manifest in self.order]

    def data(self) -> bytes:
        """``{"version": 1, "entries": [...]}``, one entry per line."""
        lines = ",\n".join([self.fragments[manifest] for _, _, manifest in self.order])
        return ('{"version": 1, "entries": [\n' + lines + "\n]}\n").encode()


def _order(e: IndexEntry) -> tuple[str, str, str]:
    return (e.rule or "", e.created_at or "", e.manifest)


def _fragment(e: IndexEntry) -> str:
    return json.dumps(e.model_dump(), default=str)


# Per sink (its index's location): what was last read or written there. An update whose
# version check finds that very version merges into it instead of parsing the whole index
# again: at 10,000 sources a parse and dump per finished plan took 0.8 s of the runner's
# time, and the runner finishes a plan per model call.
_last_read: dict[str, _Read] = {}


def _read(sink: Sink, version: str | None, *, rebuild: bool = True) -> _Read:
    """The index at ``version`` (just asked for): the copy kept from last time when it is
    that version, else read (or rebuilt, when missing or unreadable and ``rebuild``)."""
    kept = _last_read.get(sink.location(INDEX_JSON))
    if kept is not None and version is not None and kept.version == version:
        return kept
    if version is None:
        return _Read.of(None, _rebuild(sink) if rebuild else [])
    return _Read.of(version, load_index(sink, rebuild=rebuild))


def update_index(sink: Sink, entry: IndexEntry, *, attempts: int = 200) -> list[IndexEntry]:
    """Put ``entry`` into ``index.json`` (replacing the one for the same manifest) and
    regenerate ``index.html``; returns the entries written.

    ``index.json`` is read and written as a compare-and-swap (:meth:`Sink.write_if`): when
    another daemon (or thread) wrote it in between, it is read again and the entry merged
    again, so no writer's entry is lost. ``index.html`` is then rendered from the latest
    ``index.json`` until that is still the latest once the page is written."""
    with _index_lock:
        for attempt in range(attempts):
            version = sink.version(INDEX_JSON)
            after = _read(sink, version).with_entry(entry)
            data = after.data()
            try:
                sink.write_if(INDEX_JSON, data, "application/json", replacing=version)
                break
            except WriteConflict:
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # let the other writer finish
        else:
            raise WriteConflict(
                f"{sink.location(INDEX_JSON)}: {attempts} writers in a row changed it first;"
                f" the entry for {entry.manifest} is added at its next publish"
            )
        after.version = sink.version_of(data)
        _last_read[sink.location(INDEX_JSON)] = after
        _write_page(sink, after)
    return after.sorted_entries()


def _write_page(sink: Sink, written: _Read | None = None, attempts: int = 20) -> None:
    """``index.html`` from the latest ``index.json`` (rendered again when it moved on meanwhile,
    so the last writer's page shows every entry). ``written``: the index just written (its
    version, when the sink can tell, saves asking for it)."""
    for _ in range(attempts):
        version: str | None
        if written is not None and written.version is not None:
            version, index = written.version, written
        else:
            version = sink.version(INDEX_JSON)
            index = _read(sink, version, rebuild=False)
        written = None
        sink.write(
            INDEX_HTML,
            render_index(list(index.entries.values())).encode(),
            "text/html; charset=utf-8",
        )
        if sink.version(INDEX_JSON) == version:
            return


def _shown_key(e: IndexEntry) -> str:
    """How a row names its source: the key under its source ("shoots/a.jpg"). An entry written
    without a key holds the server's path or URI instead: its file name only, never the path."""
    key = str(e.key or "")
    if key.startswith("/") or "://" in key or (len(key) > 2 and key[1:3] in (":\\", ":/")):
        return posixpath.basename(key.replace("\\", "/")) or "?"
    return key or "?"


def _picture(e: IndexEntry) -> str:
    """A small picture of the source's first output: its board thumbnail (a few KB), falling
    back to the sheet where there is none (sinks written before boards, clips). A root index
    with hundreds of sources then loads KB per row, not a whole sheet."""
    sheet = rel(e.sheet, INDEX_HTML) if e.sheet else None
    first = e.thumbs[0] if e.thumbs else None
    thumb = rel(thumb_path_for(first), INDEX_HTML) if first else None
    if thumb is None and sheet is None:
        return '<span class="muted">no picture</span>'
    # htmldoc's script swaps in data-fallback when the thumbnail does not load.
    fallback = f' data-fallback="{escape(sheet)}"' if thumb and sheet else ""
    return (
        f'<img class="thumb" src="{escape(thumb or sheet)}"{fallback} '
        f'alt="{escape(_shown_key(e))}" loading="lazy">'
    )


def _row(e: IndexEntry) -> str:
    link = rel(e.page, INDEX_HTML) if e.page else None
    shown = _shown_key(e)
    thumb = _picture(e)
    if link:
        thumb = f'<a href="{escape(link)}">{thumb}</a>'
        key = f'<a href="{escape(link)}">{escape(shown)}</a>'
    else:
        key = escape(shown)
    counts = [f"{e.variants} variants"]
    if e.failed:
        counts.append(f"{e.failed} failed")
    if e.approved:
        counts.append(f"{e.approved} approved")
    if e.rejected:
        counts.append(f"{e.rejected} rejected")
    if e.cost is not None:
        counts.append(f"{cost_text(e.cost)} est.")
    badge = "failed" if e.status == "failed" else "state"
    return (
        f'<tr><td>{thumb}</td><td>{key}<br><span class="muted">{escape(", ".join(e.models))}</span></td>'
        f'<td>{escape(e.day)}<br><span class="muted">{escape(e.created_at)}</span></td>'
        f'<td><span class="badge {badge}">{escape(e.status)}</span></td>'
        f"<td>{escape(' · '.join(counts))}</td></tr>"
    )


INDEX_ROWS_PER_RULE = 50  # the newest; the rule's board has them all


def render_index(entries: Sequence[IndexEntry], *, title: str = "Darkroom review") -> str:
    """The output root's index page: per rule, a link to its board and its newest sources.

    Links are relative to the root. A source several rules took is one source, several runs.
    """
    from daemon.outputs.board import board_dir_for

    by_rule: dict[str, list[IndexEntry]] = {}
    for entry in entries:
        by_rule.setdefault(entry.rule or "(no rule)", []).append(entry)
    sections = []
    for rule in sorted(by_rule):
        items = by_rule[rule]
        newest = heapq.nlargest(
            INDEX_ROWS_PER_RULE, items, key=lambda e: (e.created_at or "", str(e.key))
        )
        rows = "".join(_row(e) for e in newest)
        board = rel(f"{board_dir_for(rule)}/index.html", INDEX_HTML)
        hidden = len(items) - INDEX_ROWS_PER_RULE
        rest = (
            f'<p class="muted">and {hidden} older on <a href="{escape(board)}">the board</a></p>'
            if hidden > 0
            else ""
        )
        sections.append(
            f'<section class="step" id="rule-{escape(rule)}"><h2>{escape(rule)} '
            f'<span class="muted">· {len(items)} sources · <a href="{escape(board)}">board</a>'
            "</span></h2>"
            '<table class="index"><thead><tr><th>picture</th><th>source</th><th>date</th><th>status</th><th>variants</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>{rest}</section>"
        )
    if not sections:
        sections.append('<p class="muted">Nothing processed yet.</p>')
    sources = len({(e.key, e.source_sha256) for e in entries})
    runs = f"{len(entries)} runs · " if len(entries) != sources else ""
    body = (
        f'<header><h1>{escape(title)}</h1><p class="muted">{sources} sources · {runs}'
        f"{len(by_rule)} rules</p></header><main>{''.join(sections)}</main>"
    )
    return page_document(title, body)
