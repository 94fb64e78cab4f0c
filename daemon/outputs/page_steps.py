"""The review page's step sections: one per rule step, a row per model (a compare step has
several), a figure per variant with its seed, time, cost and review decision, and failures with
their reasons. :func:`daemon.outputs.page.render_page` puts them together. Pure: reads nothing.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from daemon.outputs.captions import (
    clip_text,
    cost_text,
    hide_paths,
    is_video,
    params_text,
    seconds_text,
)
from daemon.outputs.htmldoc import definition_list, escape
from daemon.outputs.manifest import Decision, Manifest, StepRecord
from daemon.outputs.page_origin import input_line, prompt_origin, references_strip
from daemon.outputs.page_review import controls
from daemon.outputs.paths import rel
from daemon.types import OutputRecord

__all__ = ["PageContext", "short_names", "step_groups", "step_section"]

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


def step_groups(steps: Sequence[StepRecord]) -> list[list[StepRecord]]:
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


class PageContext:
    """What every figure of one page needs: where the page is, the decisions, short names."""

    def __init__(self, manifest: Manifest, page_path: str) -> None:
        self.manifest = manifest
        self.page_path = page_path
        self.names = short_names(manifest)

    def link(self, target: str) -> str:
        return rel(target, self.page_path)


def _figure(out: OutputRecord, step: StepRecord, page: PageContext) -> str:
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


def _step_row(step: StepRecord, page: PageContext, show_prompt: bool) -> str:
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


def step_section(group: Sequence[StepRecord], page: PageContext) -> str:
    """One rule step's section: its name and prompt (when shared), then a row per model."""
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
