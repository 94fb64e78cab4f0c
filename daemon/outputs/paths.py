"""Where a source's views go in its sink, and how a page links to them (pure path arithmetic).

Layout in the sink (``{rule}/{dir}/{stem}.{source_ext}/manifest.json`` is the default)::

    index.json  index.html                     the output root: every source, by rule and date
    {rule}/{stem}/manifest.json                written by the runner (the commit marker)
    {rule}/{stem}/index.html                   the page  (x-manifest.json -> x-manifest.html)
    {rule}/{stem}/source-preview.jpg           the source, max 1024 px (x-manifest.source.jpg)
"""

from __future__ import annotations

import posixpath
from urllib.parse import quote

INDEX_JSON = "index.json"
INDEX_HTML = "index.html"


def _base(manifest_path: str) -> tuple[str, str]:
    folder, name = posixpath.split(manifest_path)
    stem = name[:-5] if name.endswith(".json") else name
    return folder, stem


def page_path_for(manifest_path: str) -> str:
    """``a/b/manifest.json`` -> ``a/b/index.html``; ``a/x-manifest.json`` -> ``a/x-manifest.html``."""
    folder, stem = _base(manifest_path)
    return posixpath.join(folder, INDEX_HTML if stem == "manifest" else f"{stem}.html")


def preview_path_for(manifest_path: str) -> str:
    """Where the page's picture of the source goes, next to the manifest."""
    folder, stem = _base(manifest_path)
    name = "source-preview.jpg" if stem == "manifest" else f"{stem}.source.jpg"
    return posixpath.join(folder, name)


def rel(target: str, page_path: str) -> str:
    """A URL for sink path ``target`` relative to the folder of ``page_path`` (percent-encoded).

    Pages link only relatively, so a sink folder works from ``file://``, a copied folder or a
    static bucket website alike.
    """
    start = posixpath.dirname(page_path) or "."
    return quote(posixpath.relpath(target, start), safe="/")
