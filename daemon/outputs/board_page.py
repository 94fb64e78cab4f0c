"""The campaign board's script and styles (the page itself: :func:`daemon.outputs.board.render_board_page`).

The script builds every row with DOM calls (``textContent``, ``setAttribute``), never from
HTML strings: file names come from uploaders. Paths are percent-encoded per segment, so a
``#`` or ``?`` in a name stays part of the link.
"""

from __future__ import annotations

__all__ = ["BOARD_CSS", "BOARD_JS"]

BOARD_CSS = """
:root{--bg:#f6f6f3;--fg:#1d1d1b;--muted:#6b6b66;--line:#deded8;--ok:#1b6e3a;--bad:#a32020}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,sans-serif;background:var(--bg);color:var(--fg)}
header{padding:12px 20px;background:#e8e8e3;border-bottom:1px solid var(--line)}
header h1{margin:4px 0;font-size:20px}
.muted{color:var(--muted)}
form label{margin-right:12px}
main{padding:12px 20px}
table{border-collapse:collapse}
th,td{border-bottom:1px solid var(--line);padding:6px 8px;vertical-align:top;text-align:left}
th{position:sticky;top:0;background:var(--bg);z-index:1}
td.src{max-width:260px;word-break:break-all}
.cell{display:flex;gap:4px;flex-wrap:wrap;max-width:420px}
.out{position:relative;width:96px;height:96px;background:#ddd;display:flex;align-items:center;
  justify-content:center;overflow:hidden;border:2px solid transparent;font-size:11px}
.out img{max-width:96px;max-height:96px}
.out.a{border-color:var(--ok)}
.out.r{border-color:var(--bad);opacity:.55}
.out.x{background:#f3d6d6;color:var(--bad)}
.out .star{position:absolute;top:2px;right:2px;background:#f5c518;border-radius:8px;padding:0 4px}
"""

BOARD_JS = r"""
(function(){
  var B={meta:null,chunks:{},loading:{},next:-1,rows:[]};
  var tbody=document.getElementById('rows'), more=document.getElementById('more');
  var decision=document.getElementById('decision'), folder=document.getElementById('folder');
  var search=document.getElementById('search'), painted=false;
  function pad(n){ var s=String(n); while(s.length<6) s='0'+s; return s; }
  function href(p){ return p.split('/').map(function(s){
    return s==='..'||s==='.'?s:encodeURIComponent(s); }).join('/'); }
  function el(tag,cls,text){ var e=document.createElement(tag); if(cls) e.className=cls;
    if(text!==undefined) e.textContent=text; return e; }
  function wanted(row){
    var d=decision.value, f=folder.value, q=search.value.toLowerCase();
    if(f&&row.d!==f) return false;
    if(q&&row.k.toLowerCase().indexOf(q)<0) return false;
    if(!d) return true;
    return row.c.some(function(cell){ return cell[1].some(function(o){
      var c=o[2];
      return d==='u'?c==='':d==='*'?c.slice(-1)==='*':d==='x'?c==='x':c.charAt(0)===d; }); });
  }
  function rowElement(row){
    var tr=el('tr'), src=el('td','src'), a=el('a',null,row.k);
    a.setAttribute('href',href(row.p)); src.appendChild(a); src.appendChild(el('br'));
    src.appendChild(el('span','muted',[row.d||'(top)',row.s,row.t.slice(0,16)].join(' · ')));
    tr.appendChild(src);
    var byModel={}; row.c.forEach(function(cell){ byModel[cell[0]]=cell[1]; });
    B.meta.models.forEach(function(model){
      var td=el('td'), box=el('div','cell');
      (byModel[model]||[]).forEach(function(o){
        var out=el('a','out '+(o[2].charAt(0)||'u')); out.setAttribute('href',href(row.p));
        out.title=o[1];
        if(o[2]==='x'){ out.textContent='failed'; }
        else { var img=el('img'); img.loading='lazy'; img.alt=o[1];
          img.setAttribute('src',href(o[0])); out.appendChild(img); }
        if(o[2].slice(-1)==='*') out.appendChild(el('span','star','\u2605'));
        box.appendChild(out);
      });
      td.appendChild(box); tr.appendChild(td);
    });
    return tr;
  }
  function show(rows){
    var frag=document.createDocumentFragment();
    rows.forEach(function(r){ if(wanted(r)) frag.appendChild(rowElement(r)); });
    tbody.appendChild(frag);
    if(!painted&&tbody.rows.length){ painted=true; requestAnimationFrame(function(){
      window.darkroomBoardPainted=performance.now(); }); }
  }
  function filtering(){ return decision.value||folder.value||search.value; }
  function status(){
    var loaded=B.rows.length, total=B.meta.total;
    more.textContent=loaded<total?('showing '+tbody.rows.length+' of '+loaded+' loaded, '+
      total+' in all - scroll for more'):(tbody.rows.length+' shown of '+total);
  }
  function load(n){
    if(n<0||B.chunks[n]||B.loading[n]) return;
    B.loading[n]=true;
    var s=document.createElement('script'); s.src='chunks/'+pad(n)+'.js';
    s.onerror=function(){ more.textContent='could not load chunk '+n; };
    document.body.appendChild(s);
  }
  function wantMore(){
    if(B.next<0) return;
    var r=more.getBoundingClientRect();
    if(filtering()||r.top<window.innerHeight*2) load(B.next);
  }
  window.darkroomBoard={
    meta:function(m){
      B.meta=m; B.next=m.chunks-1;
      var c=m.counts;
      document.getElementById('totals').textContent=m.total+' sources · '+c.outputs+
        ' outputs · '+c.approved+' approved · '+c.rejected+' rejected · '+c.starred+
        ' starred · '+c.failed+' failed';
      var head=document.getElementById('models');
      m.models.forEach(function(model){ head.appendChild(el('th',null,model)); });
      Object.keys(m.folders).forEach(function(f){
        var o=el('option',null,(f||'(top)')+' ('+m.folders[f]+')'); o.value=f;
        folder.appendChild(o); });
      if(m.chunks===0){ more.textContent='Nothing on this board yet.'; return; }
      load(B.next);
    },
    chunk:function(c){
      B.chunks[c.n]=true; delete B.loading[c.n];
      if(c.n!==B.next) return;
      var rows=c.rows.slice().reverse(); B.rows=B.rows.concat(rows); B.next-=1;
      show(rows); status(); wantMore();
    }
  };
  function refilter(){ tbody.textContent=''; show(B.rows); status(); wantMore(); }
  decision.addEventListener('change',refilter); folder.addEventListener('change',refilter);
  search.addEventListener('input',refilter);
  window.addEventListener('scroll',wantMore,{passive:true});
})();
"""
