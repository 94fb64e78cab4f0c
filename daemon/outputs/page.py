"""The review page: one static HTML page per source, beside its manifest, and publishing it.

    page_path_for(manifest_path) -> str           where a source's page goes (deterministic)
    render_page(manifest, *, page_path) -> str    the page for one manifest (pure)
    publish(sink, manifest, *, manifest_path, source_image=None) -> Published
        write the page (+ a source preview), then update the root index (:mod:`.index`)
    write_page(...) -> Published                  the page and preview only (before the manifest)

The page shows the source and the rule's prompt, then one section per rule step (made by
:mod:`.page_steps`): a row per model (a compare step has several), a figure per variant with
its seed, time, cost and review decision, failures with their reasons; then earlier rounds.
Links are relative to the page's own folder (see :mod:`.paths`), so a sink folder works from
``file://``, a copied folder or a static bucket website alike.
"""

from __future__ import annotations

import io
import json
import posixpath
from dataclasses import dataclass

import structlog
from PIL import Image

from daemon.outputs.captions import cost_text, hide_paths, seconds_text
from daemon.outputs.htmldoc import definition_list, escape, page_document
from daemon.outputs.index import INDEX_HTML, INDEX_JSON, index_entry, update_index
from daemon.outputs.manifest import Manifest
from daemon.outputs.page_followups import follow_ups_section, follows_banner
from daemon.outputs.page_origin import compute_seconds, prompt_origin, source_name
from daemon.outputs.page_review import REVIEW_CSS, REVIEW_JS
from daemon.outputs.page_steps import PageContext, short_names, step_groups, step_section
from daemon.outputs.paths import page_path_for, preview_path_for
from daemon.outputs.thumbnails import fit_image
from daemon.sinks.base import Sink

__all__ = [
    "Published",
    "page_path_for",
    "preview_path_for",
    "publish",
    "render_page",
    "short_names",
    "write_page",
]

log = structlog.get_logger("darkroom.review")

PREVIEW_SIDE = 1024


def _rounds(page: PageContext) -> str:
    manifest = page.manifest
    if not manifest.rounds and not manifest.previous:
        return ""
    items = []
    for r in manifest.rounds:
        fields = [
            str(x)
            for x in (
                f"version {r.version}" if r.version is not None else None,
                f"source sha256 {r.source_sha256[:12]}…" if r.source_sha256 else None,
                r.created_at,
                r.status,
            )
            if x
        ]
        links = [
            f'<a href="{escape(page.link(target))}">{label}</a>'
            for label, target in (("page", r.page), ("sheet", r.sheet), ("manifest", r.manifest))
            if target
        ]
        links += [  # the round's own files, kept under rounds/N/
            f'<a href="{escape(page.link(o))}">{escape(posixpath.basename(o))}</a>'
            for o in r.outputs
        ]
        items.append(
            f"<li>{escape(' · '.join(fields))} {' '.join(links)} {escape(r.summary or '')}</li>"
        )
    if manifest.previous and not items:
        prev = manifest.previous
        if isinstance(prev, str):
            items.append(
                f'<li>previous: <a href="{escape(page.link(prev))}">{escape(prev)}</a></li>'
            )
        else:
            items.append(f"<li>previous: {escape(json.dumps(prev, default=str))}</li>")
    return (
        f'<section class="step rounds"><h2>Earlier rounds</h2><ul>{"".join(items)}</ul></section>'
    )


def _replaced_round_note(page: PageContext) -> str:
    """When this round failed (all or part), where the round it replaced is kept: the
    folder's top level holds only this round's files."""
    manifest = page.manifest
    if manifest.status not in ("failed", "partial") or not manifest.rounds:
        return ""
    r = manifest.rounds[-1]
    what = "This version failed" if manifest.status == "failed" else "Part of this version failed"
    sha = f", source sha256 {r.source_sha256[:12]}…" if r.source_sha256 else ""
    where = f"round {r.round}{sha}"
    if r.sheet:
        where = f'<a href="{escape(page.link(r.sheet))}">{where}</a>'
    return (
        f'<p class="error">{what}; the files of the previous version ({where}) are kept '
        f"under rounds/{r.round}/ (see Earlier rounds below).</p>"
    )


def render_page(
    manifest: Manifest,
    *,
    page_path: str,
    source_preview: str | None = None,
    manifest_path: str | None = None,
) -> str:
    """The review page for ``manifest``, to be stored at sink path ``page_path``.

    ``source_preview`` is the sink path of a picture of the source (see :func:`publish`);
    without it the source panel shows the sheet, if any. Pure: reads nothing.
    """
    page = PageContext(manifest, page_path)
    rule, source = manifest.rule, manifest.source
    rule_name = rule.name or "(no rule)"
    key = source_name(source)  # the key, never the server's path (source.uri)
    meta = [f"status: {manifest.status or '?'}"]
    if source.width and source.height:
        meta.append(f"{source.width}×{source.height} px")
    if manifest.created_at:
        meta.append(manifest.created_at)
    if manifest.version is not None:
        meta.append(f"version {manifest.version}")
    if (cost := cost_text(manifest.total_cost())) is not None:
        meta.append(f"{cost} est.")
    if (compute := seconds_text(compute_seconds(manifest.steps))) is not None:
        meta.append(f"{compute} of model time")
    if manifest.darkroom_version:
        meta.append(f"darkroom {manifest.darkroom_version}")
    links = [f'<a href="{escape(page.link(INDEX_HTML))}">all sources</a>']
    if manifest.sheet:
        links.append(f'<a href="{escape(page.link(manifest.sheet))}">review sheet</a>')
    if manifest_path:
        links.append(f'<a href="{escape(page.link(manifest_path))}">manifest.json</a>')

    header = (
        f'<header><nav class="muted">{" · ".join(links)}</nav>'
        f'<h1>{escape(rule_name)} <span class="muted">· {escape(key)}</span></h1>'
        f'<ul class="meta muted">{"".join(f"<li>{escape(m)}</li>" for m in meta)}</ul></header>'
    )

    shown = source_preview or manifest.sheet
    if shown:
        href = escape(page.link(shown))
        picture = (
            f'<a class="zoom" href="{href}" data-caption="{escape(key)}">'
            f'<img src="{href}" alt="source {escape(key)}"></a>'
        )
    else:
        picture = '<p class="muted">(no preview of the source)</p>'
    source_info = definition_list(
        [
            ("source", source.source),
            ("key", key),
            ("sha256", (source.sha256[:16] + "…") if source.sha256 else None),
            ("bytes", source.size),
            ("rule digest", rule.digest),
        ]
    )
    prompts = []
    if rule.prompt:
        prompts.append(
            f'<p class="prompt"><span class="muted">prompt:</span> {escape(rule.prompt)}</p>'
            f'<p class="origin muted">prompt from: {escape(prompt_origin(manifest))}</p>'
        )
    if rule.negative_prompt:
        prompts.append(
            f'<p class="prompt"><span class="muted">negative:</span> {escape(rule.negative_prompt)}</p>'
        )
    top = (
        f'<div class="top"><div class="source">{picture}</div>'
        f"<div>{''.join(prompts)}{source_info}</div></div>"
    )
    if manifest.sheet_error:
        failed = escape(hide_paths(manifest.sheet_error))
        top += f'<p class="error">review sheet failed: {failed}</p>'
    top += _replaced_round_note(page)

    groups = [step_section(g, page) for g in step_groups(manifest.steps)]
    main = f'<main data-manifest="{escape(manifest_path)}">' if manifest_path else "<main>"
    trail = follows_banner(manifest, page.link)
    followed = follow_ups_section(manifest, page.link)
    body = header + main + trail + top + "".join(groups) + followed + _rounds(page) + "</main>"
    body += f"<style>{REVIEW_CSS}</style><script>{REVIEW_JS}</script>"
    return page_document(f"{rule_name} · {key}", body)


# --------------------------------------------------------------------------- publishing


@dataclass(frozen=True)
class Published:
    """The sink paths one :func:`publish` wrote (``preview`` is None when there is none)."""

    page: str
    preview: str | None
    index_json: str = INDEX_JSON
    index_html: str = INDEX_HTML


def _preview_bytes(image: Image.Image | bytes) -> bytes:
    im = Image.open(io.BytesIO(image)) if isinstance(image, bytes | bytearray) else image.copy()
    small = fit_image(im, PREVIEW_SIDE, upscale=False)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def publish(
    sink: Sink,
    manifest: Manifest,
    *,
    manifest_path: str,
    source_image: Image.Image | bytes | None = None,
) -> Published:
    """Write the source's page next to its manifest and update the root index.

    ``source_image`` (a PIL image or the source's bytes) is stored once as a preview; later
    calls without it reuse the stored one. Safe to call repeatedly.
    """
    from daemon.outputs.board import update_board

    published = write_page(sink, manifest, manifest_path=manifest_path, source_image=source_image)
    update_index(sink, index_entry(manifest, manifest_path=manifest_path))
    update_board(sink, manifest, manifest_path)
    return published


def write_page(
    sink: Sink,
    manifest: Manifest,
    *,
    manifest_path: str,
    source_image: Image.Image | bytes | None = None,
) -> Published:
    """Write the source's preview and page next to where its manifest goes, not the index:
    the runner writes these before the manifest and the index after it."""
    page = page_path_for(manifest_path)
    preview_path = preview_path_for(manifest_path)
    if source_image is not None:
        try:
            sink.write(preview_path, _preview_bytes(source_image), "image/jpeg")
        except Exception as exc:  # the page is a view: degrade, do not fail
            log.warning("cannot write source preview %s: %s", preview_path, exc)
    preview = preview_path if sink.exists(preview_path) else None
    html_text = render_page(
        manifest, page_path=page, source_preview=preview, manifest_path=manifest_path
    )
    sink.write(page, html_text.encode(), "text/html; charset=utf-8")
    return Published(page=page, preview=preview)
