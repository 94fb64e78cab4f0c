"""Where each output on a review page came from, in the page's words: the picture it was
made from, the references its step used, and where its prompt came from.

    input_line(out, names, link) -> str          "from [thumb] explore-2" (a link to it)
    references_strip(step, manifest, link) -> str   the step's references: pictures and names
    prompt_origin(manifest, step=None) -> str    "rule product-lifestyle · sidecar a.json"

(:func:`~daemon.outputs.captions.source_name` and
:func:`~daemon.outputs.captions.compute_seconds`, shared with the sheet, are re-exported.)

``link`` turns a sink path into a URL relative to the page. Pure: reads nothing.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping

from daemon.outputs.captions import compute_seconds, source_name
from daemon.outputs.htmldoc import escape
from daemon.outputs.manifest import Manifest, StepRecord
from daemon.types import OutputRecord

__all__ = [
    "compute_seconds",
    "input_line",
    "prompt_origin",
    "references_strip",
    "source_name",
]

Link = Callable[[str], str]


def input_line(out: OutputRecord, names: Mapping[str, str], link: Link) -> str:
    """Which earlier output an output was made from (a small picture of it and its short
    name, linking to its figure on the page); nothing for one made from the source."""
    picked = out.input
    if not picked or picked == "source":
        return ""
    name = names.get(picked) or posixpath.basename(picked)
    anchor = f"#{name}" if picked in names else link(picked)
    return (
        f'<p class="from"><span class="muted">from</span> <a href="{escape(anchor)}">'
        f'<img src="{escape(link(picked))}" alt="" loading="lazy">{escape(name)}</a></p>'
    )


def references_strip(step: StepRecord, manifest: Manifest, link: Link) -> str:
    """The step's reference images as small pictures with their names (names alone where no
    copy was kept). Names only, never the server folder they were read from."""
    if not step.references:
        return ""
    items = []
    for ref in step.references:
        name = posixpath.basename(ref)
        thumb = manifest.reference_thumbs.get(ref)
        picture = (
            f'<a class="zoom" href="{escape(link(thumb))}" data-caption="reference · {escape(name)}">'
            f'<img src="{escape(link(thumb))}" alt="reference {escape(name)}" loading="lazy"></a>'
            if thumb
            else '<span class="noref" aria-hidden="true"></span>'
        )
        items.append(f"<li>{picture}<span>{escape(name)}</span></li>")
    count = len(step.references)
    label = f"{count} reference" + ("" if count == 1 else "s")
    return (
        f'<div class="references"><span class="muted">{label}:</span>'
        f"<ul>{''.join(items)}</ul></div>"
    )


def prompt_origin(manifest: Manifest, step: StepRecord | None = None) -> str:
    """Where a prompt came from: the rule, the source's sidecar (which can set or extend it),
    the step's own prompt, a prompt variation, a reviewer's refine note."""
    parts = [f"rule {manifest.rule.name or '?'}"]
    sidecar = manifest.source.sidecar
    if sidecar is not None and sidecar.key:
        parts.append(f"sidecar {posixpath.basename(sidecar.key)}")
    if step is not None:
        if step.variation:
            parts.append(f"variation {step.variation}")
        elif step.prompt and step.prompt != (manifest.rule.prompt or ""):
            parts.append(f"step {step.name or '?'}")
    follows = manifest.follows
    if follows is not None and follows.trigger == "refine" and follows.note:
        parts.append(f"refine note (round {follows.round})")
    return " · ".join(parts)
