"""The HTML shell that the review page and the root index share: styles, lightbox, escaping.

Pages are self-contained: inline CSS and a few lines of JS, no external resources. The script
is a lightbox that shows a picture as large as the window allows (a 120 px output is scaled
up, pixel-sharp: never smaller than its thumbnail on the page), and swaps in the URL of an
``<img data-fallback=URL>`` whose picture does not load. Everything taken from a manifest goes
through :func:`escape`: prompts, keys and errors are user text.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

__all__ = ["definition_list", "escape", "page_document"]


def escape(value: Any) -> str:
    """``value`` as HTML text or attribute value (None is empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def definition_list(pairs: Iterable[tuple[str, Any]]) -> str:
    """A ``<dl>`` of the pairs that have a value; empty when none has."""
    items = "".join(
        f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in pairs if v not in (None, "")
    )
    return f"<dl>{items}</dl>" if items else ""


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
#lightbox img{max-width:96vw;max-height:92vh;background:#c8c8c6}
#lightbox img.pixelated{image-rendering:pixelated}
#lightbox p{position:absolute;bottom:8px;left:0;right:0;text-align:center;color:#eee;margin:0}
table.index{border-collapse:collapse;width:100%}
table.index td,table.index th{border-bottom:1px solid var(--line);padding:6px 8px;text-align:left;vertical-align:top}
table.index img{max-width:240px;max-height:140px;display:block}
.origin{margin:2px 0;font-size:12px}
p.from{margin:2px 0 4px}
p.from img{width:28px;height:28px;object-fit:cover;vertical-align:middle;margin-right:4px;border:1px solid var(--line)}
.references{display:flex;gap:8px;align-items:flex-start;margin:6px 0;font-size:12px}
.references ul{display:flex;flex-wrap:wrap;gap:8px;margin:0;padding:0;list-style:none}
.references li{width:96px;overflow-wrap:anywhere}
.references img,.references .noref{display:block;width:96px;height:96px;object-fit:contain;background:#c8c8c6;border:1px solid var(--line)}
"""

_JS = """
(function(){
  function fallback(i){ var f=i.getAttribute('data-fallback');
    if(f&&i.getAttribute('src')!==f){ i.src=f; } }
  document.querySelectorAll('img[data-fallback]').forEach(function(i){
    i.addEventListener('error',function(){ fallback(i); });
    if(i.complete&&!i.naturalWidth&&i.getAttribute('src')) fallback(i);
  });
  var box=document.getElementById('lightbox'); if(!box) return;
  var img=box.querySelector('img'), cap=box.querySelector('p');
  img.addEventListener('load',function(){
    var w=img.naturalWidth, h=img.naturalHeight; if(!w||!h) return;
    var s=Math.min(window.innerWidth*0.96/w, window.innerHeight*0.92/h);
    if(s>1){ img.style.width=Math.floor(w*s)+'px'; img.style.height=Math.floor(h*s)+'px'; }
    else { img.style.width=''; img.style.height=''; }
    img.classList.toggle('pixelated', s>=2);
  });
  document.addEventListener('click',function(ev){
    var a=ev.target.closest ? ev.target.closest('a.zoom') : null;
    if(a){ev.preventDefault(); img.style.width=''; img.style.height=''; img.src=a.getAttribute('href'); img.alt=a.dataset.caption||'';
      cap.textContent=a.dataset.caption||''; box.classList.add('open'); return;}
    if(box.classList.contains('open') && box.contains(ev.target)){box.classList.remove('open'); img.removeAttribute('src');}
  });
  document.addEventListener('keydown',function(ev){ if(ev.key==='Escape'){box.classList.remove('open'); img.removeAttribute('src');} });
})();
"""


def page_document(title: str, body: str) -> str:
    """A whole HTML document around ``body`` (styles, lightbox and its script included)."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="darkroom">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n"
        '<div id="lightbox" role="dialog" aria-label="enlarged image"><img alt=""><p></p></div>\n'
        f"<script>{_JS}</script>\n</body>\n</html>\n"
    )
