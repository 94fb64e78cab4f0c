"""The page's review controls: approve/reject/star/note/refine buttons and their script.

The buttons are in every page but hidden; the script shows them only when the review server
(:mod:`daemon.review.server`) answers ``/api/ping``, so a page opened from ``file://`` or a
bucket stays read-only. A decision is posted and the page reloaded (the server republished it).
"""

from __future__ import annotations

from daemon.outputs.htmldoc import escape
from daemon.outputs.manifest import Decision

__all__ = ["REVIEW_CSS", "REVIEW_JS", "controls"]


def controls(path: str, decision: Decision | None) -> str:
    """Approve/reject/star/note buttons, hidden until the review server answers (a page
    opened from ``file://`` or a bucket stays read-only)."""
    starred = "true" if decision is not None and decision.starred else "false"
    star = "★ unstar" if starred == "true" else "☆ star"
    return (
        f'<div class="review-actions" hidden data-output="{escape(path)}" data-starred="{starred}">'
        '<button type="button" data-action="approve">approve</button>'
        '<button type="button" data-action="reject">reject</button>'
        f'<button type="button" data-action="star">{star}</button>'
        '<button type="button" data-action="note">note…</button>'
        '<button type="button" data-action="refine">refine…</button>'
        '<span class="review-status" role="status"></span></div>'
    )


# The review server's half of the page: shows the controls when /api/ping answers, posts a
# decision and reloads (the server republished the page). The custom header makes every
# request a CORS-preflighted one, which the server never grants: another site cannot decide.
REVIEW_JS = """
(function(){
  var main=document.querySelector('main[data-manifest]');
  if(!main||!/^https?:$/.test(location.protocol)) return;
  var sink=decodeURIComponent(location.pathname.split('/')[1]||'');
  var headers={'Content-Type':'application/json','X-Darkroom-Review':'1'};
  fetch('/api/ping',{headers:headers}).then(function(r){ return r.ok?r.json():null; })
    .then(function(info){ if(!info) return;
      document.querySelectorAll('.review-actions').forEach(function(el){ el.hidden=false; }); })
    .catch(function(){});
  document.addEventListener('click',function(ev){
    var b=ev.target.closest('.review-actions button'); if(!b) return;
    var box=b.closest('.review-actions'), status=box.querySelector('.review-status');
    var action=b.getAttribute('data-action'), note=null;
    if(action==='star'&&box.getAttribute('data-starred')==='true') action='unstar';
    if(action==='note'){ note=window.prompt('Note for this variant'); if(!note) return; }
    if(action==='refine'){ note=window.prompt('What should the next round change?'); if(!note) return; }
    status.textContent='saving…';
    fetch('/api/decide',{method:'POST',headers:headers,body:JSON.stringify({sink:sink,
      manifest:main.getAttribute('data-manifest'),variants:[box.getAttribute('data-output')],
      action:action,note:note})})
      .then(function(r){ return r.json().then(function(j){ return {ok:r.ok,body:j}; }); })
      .then(function(res){ if(!res.ok){ status.textContent=res.body.error||'failed'; return; }
        location.reload(); })
      .catch(function(e){ status.textContent='failed: '+e; });
  });
})();
"""

REVIEW_CSS = """
.review-actions{display:flex;gap:.3em;flex-wrap:wrap;margin-top:.4em}
.review-actions button{font:inherit;padding:.15em .6em;cursor:pointer}
.badge.starred{background:#f5c518;color:#000;border:1px solid #8a6d00}
.media .badge.starred{left:auto;right:6px}
"""
