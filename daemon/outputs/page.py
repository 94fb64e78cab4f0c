"""The review page: one static HTML page per source, beside its manifest, and publishing it.

    page_path_for(manifest_path) -> str           where a source's page goes (deterministic)
    render_page(manifest, *, page_path) -> str    the page for one manifest (pure)
    publish(sink, manifest, *, manifest_path, source_image=None) -> Published
        write the page (+ a source preview), then update the root index (:mod:`.index`)
    write_page(...) -> Published                  the page and preview only (before the manifest)

The page shows the source and the rule's prompt, then one section per rule step: a row per
model (a compare step has several), a figure per variant with its seed, time, cost and review
decision, failures with their reasons, and earlier rounds. Links are relative to the page's
own folder (see :mod:`.paths`), so a sink folder works from ``file://``, a copied folder or a
static bucket website alike.
"""

from __future__ import annotations

import io
import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from PIL import Image

from daemon.outputs.captions import (
    clip_text,
    cost_text,
    hide_paths,
    is_video,
    params_text,
    seconds_text,
)
from daemon.outputs.htmldoc import definition_list, escape, page_document
from daemon.outputs.index import INDEX_HTML, INDEX_JSON, index_entry, update_index
from daemon.outputs.manifest import Decision, Manifest, StepRecord
from daemon.outputs.page_followups import follow_ups_section, follows_banner
from daemon.outputs.page_origin import (
    compute_seconds,
    input_line,
    prompt_origin,
    references_strip,
    source_name,
)
from daemon.outputs.page_review import REVIEW_CSS, REVIEW_JS, controls
from daemon.outputs.paths import page_path_for, preview_path_for, rel
from daemon.outputs.thumbnails import fit_image
from daemon.sinks.base import Sink
from daemon.types import OutputRecord

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

ANIMATED_IMAGE_SUFFIXES = (".webp", ".gif", ".png", ".apng")  # clips shown with <img>
VIDEO_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
}


def short_names(manifest: Manifest) -> dict[str, str]:
    """Output path -> short name: ``explore-0``, or ``explore-sd-turbo-0`` when a compare step
    has that step/variant for several models."""
    outs = [(o, step) for step, o in manifest.outputs() if o.path]

    def short(o: OutputRecord, step: StepRecord) -> str:
        return f"{o.step or step.name}-{o.variant}"

    counts: dict[str, int] = {}
    for o, step in outs:
        counts[short(o, step)] = counts.get(short(o, step), 0) + 1
    names = {}
    for o, step in outs:
        s = short(o, step)
        if counts[s] > 1:
            s = f"{o.step or step.name}-{o.model or step.model}-{o.variant}"
        names[str(o.path)] = s
    return names


def _groups(steps: Sequence[StepRecord]) -> list[list[StepRecord]]:
    """Adjacent records of one rule step (one per model of a compare step) form a group."""
    groups: list[list[StepRecord]] = []
    for step in steps:
        if groups and groups[-1][0].name == step.name:
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


def _badge(decision: Decision | None) -> str:
    if decision is None:
        return ""
    star = '<span class="badge starred" title="starred">★</span>' if decision.starred else ""
    if decision.decision not in ("approved", "rejected"):
        return star
    who = " ".join(x for x in (f"by {decision.by}" if decision.by else "", decision.at or "") if x)
    note = f" — {decision.note}" if decision.note else ""
    return (
        f'<span class="badge {decision.decision}" title="{escape(who + note)}">'
        f"{escape(decision.decision)}</span>{star}"
    )


class _PageContext:
    """What every figure of one page needs: where the page is, the decisions, short names."""

    def __init__(self, manifest: Manifest, page_path: str) -> None:
        self.manifest = manifest
        self.page_path = page_path
        self.names = short_names(manifest)

    def link(self, target: str) -> str:
        return rel(target, self.page_path)


def _figure(out: OutputRecord, step: StepRecord, page: _PageContext) -> str:
    path = out.path or ""
    model = out.model or step.model
    name = page.names.get(path) or f"{out.step or step.name}-{out.variant}"
    decision = page.manifest.decision_for(path)
    badge = _badge(decision)
    if out.error or not path:
        reason = hide_paths(out.error or "no output file recorded")
        facts = definition_list(
            [("model", model), ("seed", out.seed), ("attempt time", seconds_text(out.seconds))]
        )
        return (
            f'<figure class="failed" id="{escape(name)}"><div class="media">{escape(reason)}</div>'
            f'<figcaption><strong>{escape(name)}</strong> <span class="badge failed">failed</span>'
            f"{facts}</figcaption></figure>"
        )
    href = page.link(path)
    caption = f"{name} · {model} · seed {out.seed}"
    suffix = posixpath.splitext(path)[1].lower()
    if is_video(out) and suffix not in ANIMATED_IMAGE_SUFFIXES:
        poster = f' poster="{escape(page.link(out.poster))}"' if out.poster else ""
        vtype = VIDEO_TYPES.get(suffix)
        type_attr = f' type="{vtype}"' if vtype else ""
        media = (
            f'<video controls muted loop playsinline preload="metadata"{poster}>'
            f'<source src="{escape(href)}"{type_attr}>'
            f'<a href="{escape(href)}">{escape(posixpath.basename(path))}</a></video>'
        )
        length: str | None = clip_text(out)
    else:
        media = (
            f'<a class="zoom" href="{escape(href)}" data-caption="{escape(caption)}">'
            f'<img src="{escape(href)}" alt="{escape(caption)}" loading="lazy"></a>'
        )
        length = clip_text(out) if is_video(out) else None
    size = f"{out.width}×{out.height}" if out.width and out.height else None
    pairs = [
        ("model", model),
        ("model id", out.model_id or step.model_id),
        ("seed", out.seed),
        ("clip", length),
        ("size", size),
        ("time", seconds_text(out.seconds)),
        ("cost", cost_text(out.cost)),
        ("provider", out.provider),
        ("request", out.request_id),
        ("variation", step.variation),
        # Names only: the page never shows where the rules folder is on the server.
        ("references", ", ".join(posixpath.basename(r) for r in step.references)),
        ("params", params_text(out.params)),
    ]
    if decision is not None and decision.note:
        pairs.append(("note", decision.note))
    decided = decision is not None and decision.decision in ("approved", "rejected")
    cls = f' class="{decision.decision}"' if decided and decision is not None else ""
    return (
        f'<figure{cls} id="{escape(name)}"><div class="media">{media}{badge}</div>'
        f'<figcaption><strong><a href="{escape(href)}">{escape(name)}</a></strong>'
        f"{input_line(out, page.names, page.link)}{definition_list(pairs)}"
        f"{controls(path, decision)}</figcaption></figure>"
    )


def _step_row(step: StepRecord, page: _PageContext, show_prompt: bool) -> str:
    state = step.state or "pending"
    bits = [f"<h3>{escape(step.model or step.model_id or '?')}"]
    if step.model_id and step.model_id != step.model:
        bits.append(f' <span class="muted">{escape(step.model_id)}</span>')
    bits.append(
        f' <span class="badge {"failed" if state == "failed" else "state"}">{escape(state)}</span>'
    )
    extra = []
    if step.attempts:
        extra.append(f"{step.attempts} attempt" + ("" if step.attempts == 1 else "s"))
    if (s := seconds_text(step.seconds)) is not None:
        extra.append(s)
    costs = [o.cost for o in step.outputs if o.cost is not None]
    if costs:
        extra.append(f"{cost_text(sum(costs))} est.")
    if step.seeds:
        extra.append("seeds " + ", ".join(str(s) for s in step.seeds))
    if extra:
        bits.append(f' <span class="muted">{escape(" · ".join(extra))}</span>')
    bits.append("</h3>")
    if show_prompt and step.prompt:
        bits.append(
            f'<p class="prompt"><span class="muted">prompt:</span> {escape(step.prompt)}</p>'
        )
    if step.prompt and step.prompt != (page.manifest.rule.prompt or ""):
        origin = prompt_origin(page.manifest, step)
        bits.append(f'<p class="origin muted">prompt from: {escape(origin)}</p>')
    bits.append(references_strip(step, page.manifest, page.link))
    if step.companions:  # several inputs: the images that went in with the arriving one
        names = ", ".join(posixpath.basename(c.key or "?") for c in step.companions)
        bits.append(f'<p class="companions muted">with: {escape(names)}</p>')
    if step.error:
        bits.append(f'<p class="error">{escape(hide_paths(step.error))}</p>')
    figures = [_figure(o, step, page) for o in step.outputs]
    if not figures and state not in ("failed",):
        figures.append(f'<figure class="pending"><div class="media">{escape(state)}</div></figure>')
    return f'<div class="row" data-model="{escape(step.model)}">{"".join(bits)}<div class="variants">{"".join(figures)}</div></div>'


def _group(group: Sequence[StepRecord], page: _PageContext) -> str:
    rule = page.manifest.rule
    name = group[0].name or "step"
    prompts = list(dict.fromkeys(str(s.prompt) for s in group if s.prompt))
    shared = len(prompts) == 1
    head = [
        f'<section class="step" id="step-{escape(name)}"><h2>{escape(name)}'
        + (f' <span class="muted">· {len(group)} models</span>' if len(group) > 1 else "")
        + "</h2>"
    ]
    if shared and prompts[0] != (rule.prompt or ""):
        head.append(
            f'<p class="prompt"><span class="muted">prompt:</span> {escape(prompts[0])}</p>'
        )
    negs = list(dict.fromkeys(str(s.negative_prompt) for s in group if s.negative_prompt))
    if len(negs) == 1 and negs[0] != (rule.negative_prompt or ""):
        head.append(f'<p class="prompt"><span class="muted">negative:</span> {escape(negs[0])}</p>')
    rows = [_step_row(s, page, show_prompt=not shared) for s in group]
    return "".join(head) + "".join(rows) + "</section>"


def _rounds(page: _PageContext) -> str:
    manifest = page.manifest
    if not manifest.rounds and not manifest.previous:
        return ""
    items = []
    for r in manifest.rounds:
        fields = [
            str(x)
            for x in (
                f"version {r.version}" if r.version is not None else None,
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
    page = _PageContext(manifest, page_path)
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

    groups = [_group(g, page) for g in _groups(manifest.steps)]
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
