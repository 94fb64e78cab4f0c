"""The review page and the root index: self-contained, relative, escaped, idempotent."""

from __future__ import annotations

import json
import posixpath
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from daemon.outputs import index as review_index
from daemon.outputs import page as review_page
from daemon.sinks.memory import MemorySink

from .conftest import EVIL_PROMPT, as_manifest


class _Refs(HTMLParser):
    """Collects every URL-bearing attribute and the text, and checks tags balance."""

    VOID = {"meta", "link", "img", "br", "source", "input", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        for name, value in attrs:
            if name in ("src", "href", "poster") and value is not None:
                self.refs.append((tag, name, value))
        if tag not in self.VOID:
            self.stack.append(tag)
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()
        self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.scripts if self._in_script else self.text).append(data)


def parse(text: str) -> _Refs:
    p = _Refs()
    p.feed(text)
    p.close()
    assert p.stack == [], p.stack
    return p


def local_targets(page_path: str, refs: list[tuple[str, str, str]]) -> list[str]:
    targets = []
    for _, _, url in refs:
        parts = urlsplit(url)
        if parts.scheme == "data":
            continue
        assert not parts.scheme and not parts.netloc, url  # relative only
        assert not url.startswith("/"), url
        targets.append(
            posixpath.normpath(posixpath.join(posixpath.dirname(page_path), unquote(parts.path)))
        )
    return targets


def test_publish_writes_a_self_contained_page(review_sink: Any, source_picture: Any) -> None:
    sink, manifest, manifest_path = review_sink
    written = review_page.publish(
        sink, as_manifest(manifest), manifest_path=manifest_path, source_image=source_picture
    )
    assert written.page == "product-lifestyle/lamp/index.html"
    assert written.preview == "product-lifestyle/lamp/source-preview.jpg"
    text = sink.read(written.page).decode()
    parsed = parse(text)
    targets = local_targets(written.page, parsed.refs)
    assert len(targets) > 15
    missing = [t for t in targets if not sink.exists(t)]
    assert missing == []
    assert "http://" not in text and "https://" not in text
    # every variant is on the page, compare models as adjacent rows in one section
    assert [a["data-model"] for t, a in parsed.tags if t == "div" and "data-model" in a] == [
        "sd-turbo",
        "sdxl-turbo",
        "kontext",
        "anim",
        "svd",
        "tiny",
    ]
    imgs = [a["src"] for t, a in parsed.tags if t == "img" and a.get("src")]
    assert "explore-kontext-3.png" in imgs and "wiggle-anim-0.webp" in imgs
    assert "source-preview.jpg" in imgs


def test_page_escapes_user_text(review_sink: Any) -> None:
    sink, manifest, manifest_path = review_sink
    text = review_page.render_page(
        as_manifest(manifest), page_path="product-lifestyle/lamp/index.html"
    )
    assert "<script>alert" not in text and "<b>bold" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    parsed = parse(text)
    assert EVIL_PROMPT in "".join(parsed.text)  # shown as text, once for the page
    assert len(parsed.scripts) == 2  # ours: the lightbox and the review controls
    assert "CUDA out of memory <while> decoding" in "".join(parsed.text)
    assert "input explore had no outputs" in "".join(parsed.text)


def test_page_shows_video_costs_and_failures(review_sink: Any) -> None:
    sink, manifest, manifest_path = review_sink
    text = review_page.render_page(
        as_manifest(manifest), page_path="product-lifestyle/lamp/index.html"
    )
    parsed = parse(text)
    videos = [a for t, a in parsed.tags if t == "video"]
    if manifest["steps"][4]["outputs"][0].get("error"):
        pytest.skip("no imageio-ffmpeg: the clip is recorded as failed")
    assert len(videos) == 1
    assert {"controls", "muted", "loop", "playsinline"} <= set(videos[0])
    assert videos[0]["poster"] == "animate-svd-0.poster.png"
    assert ("source", "src", "animate-svd-0.mp4") in parsed.refs
    flat = " ".join(parsed.text)
    assert "2.1 s, 25 frames" in flat
    assert "$0.004" in flat and "$0.016 est." in flat and "req-2" in flat
    assert "strength=0.55, steps=2" in flat


def test_decisions_are_badges(review_sink: Any) -> None:
    sink, manifest, manifest_path = review_sink
    manifest["decisions"] = {
        "product-lifestyle/lamp/explore-sd-turbo-1.png": {
            "decision": "approved",
            "at": "2025-03-04T12:00:00Z",
            "by": "ann",
            "note": "<nice>",
        },
        "product-lifestyle/lamp/explore-kontext-0.png": {"decision": "rejected", "by": "bob"},
    }
    parsed = parse(
        review_page.render_page(
            as_manifest(manifest), page_path="product-lifestyle/lamp/index.html"
        )
    )
    badges = {
        a["class"]: a for t, a in parsed.tags if t == "span" and "badge" in (a.get("class") or "")
    }
    assert "badge approved" in badges and "badge rejected" in badges
    figs = {a.get("id"): a.get("class") for t, a in parsed.tags if t == "figure"}
    assert figs["explore-sd-turbo-1"] == "approved" and figs["explore-kontext-0"] == "rejected"
    assert "<nice>" in " ".join(parsed.text)


def test_index_json_update_is_idempotent(review_sink: Any) -> None:
    sink, manifest, manifest_path = review_sink
    review_page.publish(sink, as_manifest(manifest), manifest_path=manifest_path)
    first = json.loads(sink.read("index.json"))
    review_page.publish(sink, as_manifest(manifest), manifest_path=manifest_path)
    second = json.loads(sink.read("index.json"))
    assert len(first["entries"]) == len(second["entries"]) == 1
    entry = second["entries"][0]
    assert (
        entry["manifest"] == manifest_path and entry["page"] == "product-lifestyle/lamp/index.html"
    )
    assert (entry["variants"], entry["failed"], entry["rule"]) == (13, 2, "product-lifestyle")

    other = json.loads(json.dumps(manifest))
    other["source"]["key"] = "shoots/chair.jpg"
    other["status"] = "done"
    review_page.publish(
        sink, as_manifest(other), manifest_path="product-lifestyle/chair/manifest.json"
    )
    entries = json.loads(sink.read("index.json"))["entries"]
    assert sorted(e["key"] for e in entries) == ["shoots/chair.jpg", "shoots/lamp.jpg"]
    other["status"] = "failed"
    review_page.publish(
        sink, as_manifest(other), manifest_path="product-lifestyle/chair/manifest.json"
    )
    entries = json.loads(sink.read("index.json"))["entries"]
    assert len(entries) == 2 and {e["status"] for e in entries} == {"partial", "failed"}

    index = sink.read("index.html").decode()
    parsed = parse(index)
    assert "http://" not in index and "https://" not in index
    hrefs = [url for t, n, url in parsed.refs if t == "a"]
    assert (
        "product-lifestyle/lamp/index.html" in hrefs
        and "product-lifestyle/chair/index.html" in hrefs
    )
    # every local target that exists: the lamp's small picture (the sheet if it is missing)
    assert sink.exists("product-lifestyle/lamp/sheet.png")
    assert "product-lifestyle/lamp/thumbs/explore-sd-turbo-0.webp" in [
        url for t, n, url in parsed.refs if t == "img"
    ]
    assert 'data-fallback="product-lifestyle/lamp/sheet.png"' in index


@pytest.mark.parametrize("corrupt", [b"{not json", b"[1, 2]", b'{"entries": [{"no": "manifest"}]}'])
def test_corrupt_index_is_rebuilt_from_manifests(review_sink: Any, corrupt: bytes) -> None:
    sink, manifest, manifest_path = review_sink
    other = json.loads(json.dumps(manifest))
    other["source"]["key"] = "shoots/chair.jpg"
    sink.write("product-lifestyle/chair/manifest.json", json.dumps(other).encode())
    sink.write("index.json", corrupt)
    review_page.publish(sink, as_manifest(manifest), manifest_path=manifest_path)
    entries = json.loads(sink.read("index.json"))["entries"]
    assert sorted(e["manifest"] for e in entries) == [
        "product-lifestyle/chair/manifest.json",
        "product-lifestyle/lamp/manifest.json",
    ]


def test_memory_sink_and_missing_index(review_sink: Any) -> None:
    _, manifest, manifest_path = review_sink
    sink = MemorySink()
    review_page.publish(sink, as_manifest(manifest), manifest_path="x/y/z-manifest.json")
    assert (
        sink.exists("x/y/z-manifest.html")
        and sink.exists("index.json")
        and sink.exists("index.html")
    )
    assert review_page.preview_path_for("x/y/z-manifest.json") == "x/y/z-manifest.source.jpg"


def test_render_page_links_are_relative_to_the_page(review_sink: Any) -> None:
    _, manifest, _ = review_sink
    text = review_page.render_page(as_manifest(manifest), page_path="deep/er/page.html")
    parsed = parse(text)
    for _, _, url in parsed.refs:
        if not url.startswith("data:"):
            assert url.startswith("../../") or url == "../../index.html", url


def test_rounds_and_page_without_optional_fields(tmp_path: Path) -> None:
    minimal = {
        "source": {"key": "k.png"},
        "rule": {"name": "r"},
        "steps": [],
        "rounds": [
            {
                "version": 1,
                "created_at": "2025-01-01",
                "status": "done",
                "sheet": "r/k/v1/sheet.png",
            }
        ],
    }
    parsed = parse(review_page.render_page(as_manifest(minimal), page_path="r/k/index.html"))
    assert ("a", "href", "v1/sheet.png") in parsed.refs
    assert "Earlier rounds" in " ".join(parsed.text)
    parse(review_index.render_index([]))


def test_clip_encoded_as_animated_webp_is_an_img() -> None:
    """The runner records webp/gif clips as kind=video too: they play in <img>, not <video>."""
    out = {
        "path": "r/s/animate-svd-0.webp",
        "kind": "video",
        "poster": "r/s/animate-svd-0.strip.png",
        "frames": 8,
        "fps": 8,
        "duration": 1.0,
        "seed": 7,
        "step": "animate",
        "model": "svd",
        "variant": 0,
    }
    manifest = {
        "rule": {"name": "r"},
        "source": {"key": "s.png"},
        "steps": [{"name": "animate", "model": "svd", "state": "done", "outputs": [out]}],
    }
    parsed = parse(review_page.render_page(as_manifest(manifest), page_path="r/s/index.html"))
    assert not [t for t, _ in parsed.tags if t == "video"]
    assert ("img", "src", "animate-svd-0.webp") in parsed.refs
    assert "1.0 s, 8 frames" in " ".join(parsed.text)
