"""The page's review trail: what a plan follows, and what followed its outputs.

    follows_banner(manifest, link) -> str      "made from <variant> of <rule>, refine round 2:
                                                'warmer light'" with a link back
    follow_ups_section(manifest, link) -> str  the rules and refine rounds that decisions on
                                                this page's outputs started, with their outputs

``link`` turns a sink path into a URL relative to the page (:func:`daemon.outputs.paths.rel`).
Pure: reads nothing. See :mod:`daemon.review.triggers` for how follow-ups come about.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from daemon.outputs.htmldoc import escape
from daemon.outputs.manifest import FollowUp, Manifest
from daemon.outputs.paths import page_path_for

__all__ = ["follow_ups_section", "follows_banner"]

Link = Callable[[str], str]

_WHAT = {"approved": "approved", "rejected": "rejected", "refine": "refined"}


def follows_banner(manifest: Manifest, link: Link) -> str:
    follows = manifest.follows
    if follows is None:
        return ""
    parent_page = link(page_path_for(follows.manifest))
    variant = posixpath.basename(follows.output)
    what = (
        f"refine round {follows.round} of"
        if follows.trigger == "refine"
        else f"follows the {escape(_WHAT.get(follows.trigger, follows.trigger))}"
    )
    by = f" by {escape(follows.by)}" if follows.by else ""
    note = (
        f' <span class="muted">what changed:</span> <q>{escape(follows.note)}</q>'
        if follows.note
        else ""
    )
    return (
        f'<p class="follows">{what} <a href="{escape(parent_page)}">{escape(variant)}</a>'
        f" of {escape(follows.rule or 'its rule')}{by}.{note}</p>"
    )


def _entry(entry: FollowUp, link: Link) -> str:
    thumbs = "".join(
        f'<a href="{escape(link(entry.page))}"><img src="{escape(link(path))}" '
        f'alt="{escape(posixpath.basename(path))}" loading="lazy"></a>'
        for path in entry.outputs[:6]
    )
    label = (
        f"round {entry.round} of {escape(entry.rule)}"
        if entry.trigger == "refine"
        else f"{escape(entry.rule)} (on {escape(entry.trigger)})"
    )
    note = f" — <q>{escape(entry.note)}</q>" if entry.note else ""
    status = f' <span class="muted">{escape(entry.status)}</span>' if entry.status else ""
    return (
        f'<li><a href="{escape(link(entry.page))}">{label}</a> from '
        f"{escape(posixpath.basename(entry.output))}{note}{status}"
        f'<div class="follow-thumbs">{thumbs}</div></li>'
    )


def follow_ups_section(manifest: Manifest, link: Link) -> str:
    if not manifest.follow_ups:
        return ""
    items = "".join(_entry(e, link) for e in manifest.follow_ups)
    return (
        '<section class="step follow-ups"><h2>What followed</h2>'
        '<p class="muted">rules started by decisions on these outputs, and refine rounds</p>'
        f"<ul>{items}</ul></section>"
        "<style>.follow-thumbs img{max-width:120px;max-height:120px;margin:4px}</style>"
    )
