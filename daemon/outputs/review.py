"""Review pages: a static HTML page per source, and an index page per output root.

    page_path_for(manifest_path) -> str          where a source's page goes (deterministic)
    render_page(manifest, *, page_path) -> str   the page for one manifest (pure)
    render_index(entries) -> str                 the root index page (pure)
    index_entry(manifest, *, manifest_path) -> dict
    publish(sink, manifest, *, manifest_path, source_image=None) -> dict
        write the page (+ a source preview), update ``index.json``, regenerate ``index.html``

Pages are self-contained: inline CSS and a few lines of JS (a lightbox), no external
resources, and only *relative* links computed from the page's own folder, so a sink folder
works from ``file://``, a copied folder, or a static bucket website alike. Everything from the
manifest is HTML-escaped: prompts, keys and errors are user text.

Layout in the sink (``{rule}/{stem}/manifest.json`` is the runner's default)::

    index.json  index.html                     the output root: every source, by rule and date
    {rule}/{stem}/manifest.json                written by the runner (the commit marker)
    {rule}/{stem}/index.html                   this module: the page  (x-manifest.json -> x.html)
    {rule}/{stem}/source-preview.jpg           this module: the source, max 1024 px (x.source.jpg)

``index.json`` is ``{"version": 1, "entries": [...]}``, one entry per manifest path, replaced
on republish. A missing or unreadable index is rebuilt from the manifests the sink can list
(a folder sink walks its root; a sink with ``list(prefix)`` or ``objects`` is also understood),
otherwise it restarts with this entry. Updates are serialised within a process; two processes
publishing into one root at the same instant can lose one entry until its next publish.
"""

from __future__ import annotations

import datetime
import html
import io
import json
import structlog
import posixpath
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from PIL import Image

from daemon.outputs.sheet import clip_text, cost_text, is_video, total_cost

__all__ = [
    "INDEX_HTML",
    "INDEX_JSON",
    "index_entry",
    "load_index",
    "page_path_for",
    "preview_path_for",
    "publish",
    "render_index",
    "render_page",
    "short_names",
]

log = structlog.get_logger("darkroom.review")

INDEX_JSON = "index.json"
INDEX_HTML = "index.html"
PREVIEW_SIDE = 1024
_index_lock = threading.Lock()

ANIMATED_IMAGE_SUFFIXES = (".webp", ".gif", ".png", ".apng")  # clips shown with <img>
VIDEO_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
}


# --------------------------------------------------------------------------- paths


def _base(manifest_path: str) -> tuple[str, str]:
    folder, name = posixpath.split(manifest_path)
    stem = name[:-5] if name.endswith(".json") else name
    return folder, stem


def page_path_for(manifest_path: str) -> str:
    """``a/b/manifest.json`` -> ``a/b/index.html``; ``a/x-manifest.json`` -> ``a/x-manifest.html``."""
    folder, stem = _base(manifest_path)
    return posixpath.join(folder, INDEX_HTML if stem == "manifest" else f"{stem}.html")


def preview_path_for(manifest_path: str) -> str:
    folder, stem = _base(manifest_path)
    name = "source-preview.jpg" if stem == "manifest" else f"{stem}.source.jpg"
    return posixpath.join(folder, name)


def rel(target: str, page_path: str) -> str:
    """A URL for sink path ``target`` relative to the folder of ``page_path`` (percent-encoded)."""
    start = posixpath.dirname(page_path) or "."
    return quote(posixpath.relpath(target, start), safe="/")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# --------------------------------------------------------------------------- manifest views


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _secs(value: Any) -> str | None:
    s = _num(value)
    return None if s is None else (f"{s:.2f} s" if s < 10 else f"{s:.1f} s")


def short_names(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Output path -> short name: ``explore-0``, or ``explore-sd-turbo-0`` when a compare step
    has that step/variant for several models."""
    outs = [
        (o, step)
        for step in manifest.get("steps") or []
        for o in step.get("outputs") or []
        if o.get("path")
    ]

    def short(o: Mapping[str, Any], step: Mapping[str, Any]) -> str:
        return f"{o.get('step') or step.get('name')}-{o.get('variant')}"

    counts: dict[str, int] = {}
    for o, step in outs:
        counts[short(o, step)] = counts.get(short(o, step), 0) + 1
    names = {}
    for o, step in outs:
        s = short(o, step)
        if counts[s] > 1:
            s = f"{o.get('step') or step.get('name')}-{o.get('model') or step.get('model')}-{o.get('variant')}"
        names[str(o["path"])] = s
    return names


def _groups(steps: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    groups: list[list[Mapping[str, Any]]] = []
    for step in steps:
        if groups and groups[-1][0].get("name") == step.get("name"):
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


def _params_text(params: Any) -> str:
    if not isinstance(params, Mapping):
        return ""
    return ", ".join(f"{k}={v}" for k, v in params.items())


# --------------------------------------------------------------------------- page

_CSS = """
:root{--bg:#f5f5f2;--band:#e5e5e0;--ink:#1c1c1c;--muted:#555;--bad:#701616;--badbg:#fbe9e9;
--ok:#1d6b32;--okbg:#e3f4e6;--line:#d0d0cc}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--ink)}
header{background:var(--band);padding:16px 24px}
header h1{margin:0 0 4px;font-size:20px}
nav a,header a{color:inherit}
main{padding:16px 24px}
.muted{color:var(--muted)}
.meta{display:flex;flex-wrap:wrap;gap:4px 16px;margin:0;padding:0;list-style:none}
.prompt{white-space:pre-wrap;max-width:80ch;margin:6px 0}
.top{display:flex;gap:24px;align-items:flex-start;flex-wrap:wrap}
.source img{max-width:320px;max-height:320px;display:block;background:#c8c8c6}
section.step{margin:24px 0;border-top:1px solid var(--line);padding-top:8px}
section.step h2{font-size:17px;margin:4px 0}
.row{margin:10px 0}
.row h3{font-size:14px;margin:4px 0;font-weight:600}
.variants{display:flex;gap:12px;overflow-x:auto;padding-bottom:6px}
figure{margin:0;width:256px;flex:0 0 256px;background:#fff;border:1px solid var(--line);border-radius:4px}
figure .media{display:flex;align-items:center;justify-content:center;width:254px;height:254px;background:#c8c8c6;position:relative}
figure .media>a{display:block;width:100%;height:100%}
figure .media img,figure .media video{width:100%;height:100%;object-fit:contain;display:block}
figcaption{padding:6px 8px;font-size:12px}
dl{display:grid;grid-template-columns:auto 1fr;gap:0 8px;margin:4px 0 0}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
.failed .media{background:var(--bad);color:#ffe8e8;padding:12px;align-items:flex-start;justify-content:flex-start;overflow:auto;font-size:12px;white-space:pre-wrap}
.pending .media{background:#a8a8a4;padding:12px}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-size:11px;font-weight:700;text-transform:uppercase;letter-spacing:.03em}
.badge.approved{background:var(--okbg);color:var(--ok);border:1px solid var(--ok)}
.badge.rejected{background:var(--badbg);color:var(--bad);border:1px solid var(--bad)}
.badge.state{background:#ddd;color:#333}
.badge.failed{background:var(--bad);color:#fff}
figure.approved{outline:3px solid var(--ok)}figure.rejected{opacity:.6}
.media .badge{position:absolute;top:6px;left:6px}
.error{color:var(--bad);white-space:pre-wrap}
.rounds li{margin:2px 0}
#lightbox{position:fixed;inset:0;background:rgba(0,0,0,.88);display:none;align-items:center;justify-content:center;cursor:zoom-out;z-index:10}
#lightbox.open{display:flex}
#lightbox img{max-width:96vw;max-height:92vh}
#lightbox p{position:absolute;bottom:8px;left:0;right:0;text-align:center;color:#eee;margin:0}
table.index{border-collapse:collapse;width:100%}
table.index td,table.index th{border-bottom:1px solid var(--line);padding:6px 8px;text-align:left;vertical-align:top}
table.index img{max-width:240px;max-height:140px;display:block}
"""

_JS = """
(function(){
  var box=document.getElementById('lightbox'); if(!box) return;
  var img=box.querySelector('img'), cap=box.querySelector('p');
  document.addEventListener('click',function(ev){
    var a=ev.target.closest ? ev.target.closest('a.zoom') : null;
    if(a){ev.preventDefault(); img.src=a.getAttribute('href'); img.alt=a.dataset.caption||'';
      cap.textContent=a.dataset.caption||''; box.classList.add('open'); return;}
    if(box.classList.contains('open') && box.contains(ev.target)){box.classList.remove('open'); img.removeAttribute('src');}
  });
  document.addEventListener('keydown',function(ev){ if(ev.key==='Escape'){box.classList.remove('open'); img.removeAttribute('src');} });
})();
"""


def _doc(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="darkroom">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n"
        '<div id="lightbox" role="dialog" aria-label="enlarged image"><img alt=""><p></p></div>\n'
        f"<script>{_JS}</script>\n</body>\n</html>\n"
    )


def _badge(decision: Mapping[str, Any] | None) -> str:
    if not isinstance(decision, Mapping) or decision.get("decision") not in (
        "approved",
        "rejected",
    ):
        return ""
    d = decision["decision"]
    who = " ".join(
        x
        for x in (
            f"by {decision['by']}" if decision.get("by") else "",
            str(decision.get("at") or ""),
        )
        if x
    )
    note = f" — {decision['note']}" if decision.get("note") else ""
    return f'<span class="badge {d}" title="{_e(who + note)}">{_e(d)}</span>'


def _dl(pairs: Iterable[tuple[str, Any]]) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in pairs if v not in (None, ""))
    return f"<dl>{items}</dl>" if items else ""


def _figure(
    out: Mapping[str, Any],
    step: Mapping[str, Any],
    page_path: str,
    decisions: Mapping[str, Any],
    names: Mapping[str, str],
) -> str:
    path = str(out.get("path") or "")
    model = out.get("model") or step.get("model")
    name = names.get(path) or f"{out.get('step') or step.get('name')}-{out.get('variant')}"
    decision = decisions.get(path) if path else None
    badge = _badge(decision)
    if out.get("error") or not path:
        reason = out.get("error") or "no output file recorded"
        return (
            f'<figure class="failed" id="{_e(name)}"><div class="media">{_e(reason)}</div>'
            f'<figcaption><strong>{_e(name)}</strong> <span class="badge failed">failed</span>'
            f"{_dl([('model', model), ('seed', out.get('seed')), ('attempt time', _secs(out.get('seconds')))])}"
            "</figcaption></figure>"
        )
    href = rel(path, page_path)
    caption = f"{name} · {model} · seed {out.get('seed')}"
    suffix = posixpath.splitext(path)[1].lower()
    if is_video(out) and suffix not in ANIMATED_IMAGE_SUFFIXES:
        poster = f' poster="{_e(rel(str(out["poster"]), page_path))}"' if out.get("poster") else ""
        vtype = VIDEO_TYPES.get(suffix)
        type_attr = f' type="{vtype}"' if vtype else ""
        media = (
            f'<video controls muted loop playsinline preload="metadata"{poster}>'
            f'<source src="{_e(href)}"{type_attr}>'
            f'<a href="{_e(href)}">{_e(posixpath.basename(path))}</a></video>'
        )
        length = clip_text(out)
    else:
        media = (
            f'<a class="zoom" href="{_e(href)}" data-caption="{_e(caption)}">'
            f'<img src="{_e(href)}" alt="{_e(caption)}" loading="lazy"></a>'
        )
        length = clip_text(out) if is_video(out) else None
    size = (
        f"{out.get('width')}×{out.get('height')}"
        if out.get("width") and out.get("height")
        else None
    )
    pairs = [
        ("model", model),
        ("model id", out.get("model_id") or step.get("model_id")),
        ("seed", out.get("seed")),
        ("clip", length),
        ("size", size),
        ("time", _secs(out.get("seconds"))),
        ("cost", cost_text(out.get("cost"))),
        ("provider", out.get("provider")),
        ("request", out.get("request_id")),
        ("input", out.get("input")),
        ("params", _params_text(out.get("params"))),
    ]
    if isinstance(decision, Mapping) and decision.get("note"):
        pairs.append(("note", decision.get("note")))
    cls = f' class="{decision["decision"]}"' if badge and isinstance(decision, Mapping) else ""
    return (
        f'<figure{cls} id="{_e(name)}"><div class="media">{media}{badge}</div>'
        f'<figcaption><strong><a href="{_e(href)}">{_e(name)}</a></strong>{_dl(pairs)}</figcaption></figure>'
    )


def _step_row(
    step: Mapping[str, Any],
    page_path: str,
    decisions: Mapping[str, Any],
    names: Mapping[str, str],
    show_prompt: bool,
) -> str:
    state = str(step.get("state") or "pending")
    bits = [f"<h3>{_e(step.get('model') or step.get('model_id') or '?')}"]
    if step.get("model_id") and step.get("model_id") != step.get("model"):
        bits.append(f' <span class="muted">{_e(step["model_id"])}</span>')
    bits.append(
        f' <span class="badge {"failed" if state == "failed" else "state"}">{_e(state)}</span>'
    )
    extra = []
    if step.get("attempts"):
        extra.append(f"{step['attempts']} attempt" + ("" if step["attempts"] == 1 else "s"))
    if (s := _secs(step.get("seconds"))) is not None:
        extra.append(s)
    costs = [c for c in (_num(o.get("cost")) for o in step.get("outputs") or []) if c is not None]
    if costs:
        extra.append(f"{cost_text(sum(costs))} est.")
    if step.get("seeds"):
        extra.append("seeds " + ", ".join(str(s) for s in step["seeds"]))
    if extra:
        bits.append(f' <span class="muted">{_e(" · ".join(extra))}</span>')
    bits.append("</h3>")
    if show_prompt and step.get("prompt"):
        bits.append(
            f'<p class="prompt"><span class="muted">prompt:</span> {_e(step["prompt"])}</p>'
        )
    if step.get("error"):
        bits.append(f'<p class="error">{_e(step["error"])}</p>')
    figures = [_figure(o, step, page_path, decisions, names) for o in step.get("outputs") or []]
    if not figures and state not in ("failed",):
        figures.append(f'<figure class="pending"><div class="media">{_e(state)}</div></figure>')
    return f'<div class="row" data-model="{_e(step.get("model"))}">{"".join(bits)}<div class="variants">{"".join(figures)}</div></div>'


def _group(
    group: Sequence[Mapping[str, Any]],
    rule_prompt: str,
    page_path: str,
    decisions: Mapping[str, Any],
    names: Mapping[str, str],
    rule_negative: str = "",
) -> str:
    name = group[0].get("name") or "step"
    prompts = list(dict.fromkeys(str(s.get("prompt")) for s in group if s.get("prompt")))
    shared = len(prompts) == 1
    head = [
        f'<section class="step" id="step-{_e(name)}"><h2>{_e(name)}'
        + (f' <span class="muted">· {len(group)} models</span>' if len(group) > 1 else "")
        + "</h2>"
    ]
    if shared and prompts[0] != rule_prompt:
        head.append(f'<p class="prompt"><span class="muted">prompt:</span> {_e(prompts[0])}</p>')
    negs = list(
        dict.fromkeys(str(s.get("negative_prompt")) for s in group if s.get("negative_prompt"))
    )
    if len(negs) == 1 and negs[0] != rule_negative:
        head.append(f'<p class="prompt"><span class="muted">negative:</span> {_e(negs[0])}</p>')
    rows = [_step_row(s, page_path, decisions, names, show_prompt=not shared) for s in group]
    return "".join(head) + "".join(rows) + "</section>"


def _rounds(manifest: Mapping[str, Any], page_path: str) -> str:
    rounds = manifest.get("rounds") or []
    if not rounds and not manifest.get("previous"):
        return ""
    items = []
    for r in rounds:
        if not isinstance(r, Mapping):
            continue
        fields = [
            str(x)
            for x in (
                f"version {r['version']}" if r.get("version") is not None else None,
                r.get("created_at"),
                r.get("status"),
            )
            if x
        ]
        links = []
        for key in ("page", "sheet", "manifest"):
            if r.get(key):
                links.append(f'<a href="{_e(rel(str(r[key]), page_path))}">{key}</a>')
        summary = r.get("summary") or ""
        items.append(f"<li>{_e(' · '.join(fields))} {' '.join(links)} {_e(summary)}</li>")
    if manifest.get("previous") and not items:
        prev = manifest["previous"]
        if isinstance(prev, str):
            items.append(f'<li>previous: <a href="{_e(rel(prev, page_path))}">{_e(prev)}</a></li>')
        else:
            items.append(f"<li>previous: {_e(json.dumps(prev, default=str))}</li>")
    return (
        f'<section class="step rounds"><h2>Earlier rounds</h2><ul>{"".join(items)}</ul></section>'
    )


def render_page(
    manifest: Mapping[str, Any],
    *,
    page_path: str,
    source_preview: str | None = None,
    manifest_path: str | None = None,
) -> str:
    """The review page for ``manifest``, to be stored at sink path ``page_path``.

    ``source_preview`` is the sink path of a picture of the source (see :func:`publish`);
    without it the source panel shows the sheet, if any. Pure: reads nothing.
    """
    rule = manifest.get("rule") or {}
    source = manifest.get("source") or {}
    decisions = manifest.get("decisions") if isinstance(manifest.get("decisions"), Mapping) else {}
    names = short_names(manifest)
    rule_prompt = str(rule.get("prompt") or "")
    key = source.get("key") or source.get("uri") or "?"
    title = f"{rule.get('name') or '(no rule)'} · {key}"
    depth_index = rel(INDEX_HTML, page_path)

    meta = [f"status: {manifest.get('status') or '?'}"]
    if source.get("width") and source.get("height"):
        meta.append(f"{source['width']}×{source['height']} px")
    if manifest.get("created_at"):
        meta.append(str(manifest["created_at"]))
    if manifest.get("version") is not None:
        meta.append(f"version {manifest['version']}")
    if (cost := cost_text(total_cost(manifest))) is not None:
        meta.append(f"{cost} est.")
    if manifest.get("darkroom_version"):
        meta.append(f"darkroom {manifest['darkroom_version']}")
    links = [f'<a href="{_e(depth_index)}">all sources</a>']
    if manifest.get("sheet"):
        links.append(f'<a href="{_e(rel(str(manifest["sheet"]), page_path))}">review sheet</a>')
    if manifest_path:
        links.append(f'<a href="{_e(rel(manifest_path, page_path))}">manifest.json</a>')

    header = (
        f'<header><nav class="muted">{" · ".join(links)}</nav>'
        f'<h1>{_e(rule.get("name") or "(no rule)")} <span class="muted">· {_e(key)}</span></h1>'
        f'<ul class="meta muted">{"".join(f"<li>{_e(m)}</li>" for m in meta)}</ul></header>'
    )

    shown = source_preview or manifest.get("sheet")
    if shown:
        href = _e(rel(str(shown), page_path))
        picture = (
            f'<a class="zoom" href="{href}" data-caption="{_e(key)}">'
            f'<img src="{href}" alt="source {_e(key)}"></a>'
        )
    else:
        picture = '<p class="muted">(no preview of the source)</p>'
    source_info = _dl(
        [
            ("source", source.get("source")),
            ("key", key),
            ("sha256", (str(source.get("sha256"))[:16] + "…") if source.get("sha256") else None),
            ("bytes", source.get("size")),
            ("rule digest", rule.get("digest")),
        ]
    )
    prompts = []
    if rule_prompt:
        prompts.append(
            f'<p class="prompt"><span class="muted">prompt:</span> {_e(rule_prompt)}</p>'
        )
    if rule.get("negative_prompt"):
        prompts.append(
            f'<p class="prompt"><span class="muted">negative:</span> {_e(rule["negative_prompt"])}</p>'
        )
    top = (
        f'<div class="top"><div class="source">{picture}</div>'
        f"<div>{''.join(prompts)}{source_info}</div></div>"
    )
    if manifest.get("sheet_error"):
        top += f'<p class="error">review sheet failed: {_e(manifest["sheet_error"])}</p>'

    rule_negative = str(rule.get("negative_prompt") or "")
    groups = [
        _group(g, rule_prompt, page_path, decisions, names, rule_negative)
        for g in _groups(manifest.get("steps") or [])
    ]
    body = header + "<main>" + top + "".join(groups) + _rounds(manifest, page_path) + "</main>"
    return _doc(title, body)


# --------------------------------------------------------------------------- index


def _day(entry: Mapping[str, Any]) -> str:
    return str(entry.get("created_at") or "")[:10]


def render_index(entries: Sequence[Mapping[str, Any]], *, title: str = "Darkroom review") -> str:
    """The output root's index page: sources grouped by rule, newest first, with their sheets.

    ``entries`` are :func:`index_entry` dicts; links are relative to the root.
    """
    by_rule: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries:
        by_rule.setdefault(str(entry.get("rule") or "(no rule)"), []).append(entry)
    sections = []
    for rule in sorted(by_rule):
        rows = []
        items = sorted(
            by_rule[rule],
            key=lambda e: (str(e.get("created_at") or ""), str(e.get("key"))),
            reverse=True,
        )
        for e in items:
            page = e.get("page")
            sheet = e.get("sheet")
            thumb = (
                f'<img src="{_e(rel(str(sheet), INDEX_HTML))}" alt="sheet of {_e(e.get("key"))}" loading="lazy">'
                if sheet
                else '<span class="muted">no sheet</span>'
            )
            if page:
                thumb = f'<a href="{_e(rel(str(page), INDEX_HTML))}">{thumb}</a>'
                key = f'<a href="{_e(rel(str(page), INDEX_HTML))}">{_e(e.get("key"))}</a>'
            else:
                key = _e(e.get("key"))
            counts = [f"{e.get('variants', 0)} variants"]
            if e.get("failed"):
                counts.append(f"{e['failed']} failed")
            if e.get("approved"):
                counts.append(f"{e['approved']} approved")
            if e.get("rejected"):
                counts.append(f"{e['rejected']} rejected")
            if e.get("cost") is not None:
                counts.append(f"{cost_text(e['cost'])} est.")
            rows.append(
                f'<tr><td>{thumb}</td><td>{key}<br><span class="muted">{_e(", ".join(e.get("models") or []))}</span></td>'
                f'<td>{_e(_day(e))}<br><span class="muted">{_e(e.get("created_at"))}</span></td>'
                f'<td><span class="badge {"failed" if e.get("status") == "failed" else "state"}">{_e(e.get("status"))}</span></td>'
                f"<td>{_e(' · '.join(counts))}</td></tr>"
            )
        sections.append(
            f'<section class="step" id="rule-{_e(rule)}"><h2>{_e(rule)} <span class="muted">· {len(items)} sources</span></h2>'
            '<table class="index"><thead><tr><th>sheet</th><th>source</th><th>date</th><th>status</th><th>variants</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></section>"
        )
    if not sections:
        sections.append('<p class="muted">Nothing processed yet.</p>')
    body = (
        f'<header><h1>{_e(title)}</h1><p class="muted">{len(entries)} sources · '
        f"{len(by_rule)} rules</p></header><main>{''.join(sections)}</main>"
    )
    return _doc(title, body)


def index_entry(manifest: Mapping[str, Any], *, manifest_path: str) -> dict[str, Any]:
    """The summary of one manifest that ``index.json`` keeps (and the digest reads)."""
    rule = manifest.get("rule") or {}
    source = manifest.get("source") or {}
    outputs = [o for s in manifest.get("steps") or [] for o in s.get("outputs") or []]
    good = [o for o in outputs if o.get("path") and not o.get("error")]
    decisions = manifest.get("decisions") if isinstance(manifest.get("decisions"), Mapping) else {}
    thumbs = [
        str(o.get("poster") if is_video(o) else o["path"])
        for o in good
        if not is_video(o) or o.get("poster")
    ]
    return {
        "manifest": manifest_path,
        "page": page_path_for(manifest_path),
        "sheet": manifest.get("sheet"),
        "rule": rule.get("name"),
        "key": source.get("key") or source.get("uri"),
        "source_sha256": source.get("sha256"),
        "status": manifest.get("status"),
        "created_at": manifest.get("created_at"),
        "version": manifest.get("version"),
        "models": list(
            dict.fromkeys(
                str(s.get("model")) for s in manifest.get("steps") or [] if s.get("model")
            )
        ),
        "variants": len(good),
        "failed": len(outputs)
        - len(good)
        + sum(
            1
            for s in manifest.get("steps") or []
            if s.get("state") == "failed" and not s.get("outputs")
        ),
        "approved": sum(
            1
            for d in decisions.values()
            if isinstance(d, Mapping) and d.get("decision") == "approved"
        ),
        "rejected": sum(
            1
            for d in decisions.values()
            if isinstance(d, Mapping) and d.get("decision") == "rejected"
        ),
        "cost": total_cost(manifest),
        "thumbs": thumbs[:4],
        "updated_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _list_manifests(sink: Any) -> list[str]:
    """Sink paths of every manifest in the sink."""
    skip = ("approved/", "digests/")
    return sorted(
        p
        for p in sink.list("")
        if p.endswith("manifest.json")
        and not p.startswith(skip)
        and not any(part.startswith(".") for part in p.split("/"))
    )


def _rebuild(sink: Any) -> list[dict[str, Any]]:
    entries = []
    for path in _list_manifests(sink):
        try:
            manifest = json.loads(sink.read(path))
        except Exception as exc:  # one bad manifest must not stop the index
            log.warning("skipping unreadable manifest %s: %s", path, exc)
            continue
        if isinstance(manifest, dict) and "steps" in manifest:
            entries.append(index_entry(manifest, manifest_path=path))
    return entries


def load_index(sink: Any, *, rebuild: bool = True) -> list[dict[str, Any]]:
    """The entries of the sink's ``index.json``; rebuilt from the manifests when it is
    missing or unreadable (and ``rebuild``)."""
    try:
        if sink.exists(INDEX_JSON):
            data = json.loads(sink.read(INDEX_JSON))
            entries = data.get("entries") if isinstance(data, dict) else None
            if isinstance(entries, list) and all(
                isinstance(e, dict) and e.get("manifest") for e in entries
            ):
                return entries
            log.warning("index.json has an unexpected shape: rebuilding it")
    except Exception as exc:
        log.warning("index.json unreadable (%s): rebuilding it", exc)
    return _rebuild(sink) if rebuild else []


def update_index(sink: Any, entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Put ``entry`` into ``index.json`` (replacing the one for the same manifest) and
    regenerate ``index.html``; returns the entries written."""
    with _index_lock:
        entries = [e for e in load_index(sink) if e.get("manifest") != entry["manifest"]]
        entries.append(dict(entry))
        entries.sort(
            key=lambda e: (
                str(e.get("rule") or ""),
                str(e.get("created_at") or ""),
                str(e.get("manifest")),
            )
        )
        data = json.dumps({"version": 1, "entries": entries}, indent=2, default=str).encode()
        sink.write(INDEX_JSON, data, "application/json")
        sink.write(INDEX_HTML, render_index(entries).encode(), "text/html; charset=utf-8")
    return entries


def _preview_bytes(image: Image.Image | bytes) -> bytes:
    from daemon.outputs.sheet import fit_image

    im = Image.open(io.BytesIO(image)) if isinstance(image, bytes | bytearray) else image.copy()
    small = fit_image(im, PREVIEW_SIDE, upscale=False)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def publish(
    sink: Any,
    manifest: Mapping[str, Any],
    *,
    manifest_path: str,
    source_image: Image.Image | bytes | None = None,
) -> dict[str, Any]:
    """Write the source's page next to its manifest and update the root index.

    ``source_image`` (a PIL image or the source's bytes) is stored once as a preview; later
    calls without it reuse the stored one. Safe to call repeatedly. Returns the sink paths
    written: ``{"page", "preview" (or None), "index_json", "index_html"}``.
    """
    page = page_path_for(manifest_path)
    preview: str | None = preview_path_for(manifest_path)
    if source_image is not None:
        try:
            sink.write(preview, _preview_bytes(source_image), "image/jpeg")
        except Exception as exc:  # the page is a view: degrade, do not fail
            log.warning("cannot write source preview %s: %s", preview, exc)
    if not sink.exists(preview):
        preview = None
    html_text = render_page(
        manifest, page_path=page, source_preview=preview, manifest_path=manifest_path
    )
    sink.write(page, html_text.encode(), "text/html; charset=utf-8")
    update_index(sink, index_entry(manifest, manifest_path=manifest_path))
    return {"page": page, "preview": preview, "index_json": INDEX_JSON, "index_html": INDEX_HTML}
