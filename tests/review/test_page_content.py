"""What a reviewer reads on a page and a sheet: where each output came from (its input, the
references, the prompt's source), costs and times, which hero a follow-up was made from, and
never a path on the server (issue 18)."""

from __future__ import annotations

import io
import json
import posixpath
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from PIL import Image, ImageStat

from daemon.outputs import index as review_index
from daemon.outputs import page as review_page
from daemon.outputs.index import IndexEntry
from daemon.outputs.sheet_layout import SheetLayout
from tests.conftest import make_image
from tests.integration.conftest import Harness

from .conftest import as_manifest, layout_of

PAGE = "product-lifestyle/lamp/index.html"
BASE = "product-lifestyle/lamp"
SERVER = "/srv/darkroom"


class _Page(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())

    def attrs(self, tag: str, name: str) -> list[str]:
        return [str(a[name]) for t, a in self.tags if t == tag and a.get(name)]


def green(picture: Image.Image) -> bool:
    """Whether the middle of ``picture`` is the green of the test's reference image (a
    ``make_image`` picture: green, with a stripe every 4th row)."""
    w, h = picture.size
    middle = picture.convert("RGB").crop((w // 3, h // 3, w - w // 3, h - h // 3))
    r, g, b = ImageStat.Stat(middle).mean
    return g > 150 and r < 90 and b < 90


def sheet_words(layout: SheetLayout) -> str:
    """Every text a sheet draws (before wrapping): header blocks, captions, reasons."""
    texts = [b.text for b in layout.blocks] + [t.label for t in layout.tiles]
    texts += [t.reason or "" for t in layout.tiles]
    return " ".join(texts)


def refined(manifest: dict[str, Any]) -> dict[str, Any]:
    """The fixture's manifest with a refine step that took explore-sd-turbo-1 and two brand
    references (kept under refs/), a sidecar, and a prompt variation."""
    ref_a, ref_b = f"{SERVER}/rules/brand/refs/logo.png", f"{SERVER}/rules/brand/refs/palette.png"
    manifest["source"]["sidecar"] = {"key": "shoots/lamp.json", "sha256": "e" * 64}
    manifest["steps"][-1] = {
        "name": "refine",
        "model": "tiny",
        "prompt": "lamp, brand colours",
        "variation": "warm",
        "references": [ref_a, ref_b],
        "state": "done",
        "seconds": 2.5,
        "outputs": [
            {
                "path": f"{BASE}/refine-tiny-0.png",
                "step": "refine",
                "model": "tiny",
                "variant": 0,
                "seed": 5,
                "input": f"{BASE}/explore-sd-turbo-1.png",
                "seconds": 2.5,
                "cost": 0.03,
            }
        ],
    }
    manifest["reference_thumbs"] = {ref_a: f"{BASE}/refs/aaaaaaaaaaaaaaaa.webp"}
    return manifest


def test_the_page_says_which_output_each_was_made_from(review_sink: Any) -> None:
    sink, manifest, _ = review_sink
    page = _Page(review_page.render_page(as_manifest(refined(manifest)), page_path=PAGE))
    # The refined output links to the explore variant it came from, with a small picture of it.
    froms = [a["href"] for t, a in page.tags if t == "a" and (a.get("href") or "")[:1] == "#"]
    assert "#explore-sd-turbo-1" in froms
    assert "explore-sd-turbo-1" in [a.get("id") for t, a in page.tags if t == "figure"]
    assert "from explore-sd-turbo-1" in page.words
    assert "explore-sd-turbo-1.png" in page.attrs("img", "src")
    assert page.words.count("from explore") == 1  # the explore variants came from the source
    # The sheet's caption says it too.
    layout = layout_of(refined(manifest), tile=128)
    (tile,) = [t for t in layout.tiles if t.step == "refine"]
    assert "from explore-sd-turbo-1" in tile.label


def test_references_are_shown_as_pictures_with_their_names(review_sink: Any) -> None:
    sink, manifest, _ = review_sink
    page = _Page(review_page.render_page(as_manifest(refined(manifest)), page_path=PAGE))
    assert "refs/aaaaaaaaaaaaaaaa.webp" in page.attrs("img", "src")
    assert "2 references: logo.png palette.png" in page.words
    # The sheet stacks them under the source: a picture, or a grey tile naming it.
    layout = layout_of(refined(manifest), tile=128)
    refs = [t for t in layout.tiles if t.label.startswith("refine reference")]
    assert [(t.kind, t.label, t.path) for t in refs] == [
        ("reference", "refine reference · logo.png", f"{BASE}/refs/aaaaaaaaaaaaaaaa.webp"),
        ("pending", "refine reference · palette.png", None),
    ]
    source = layout.source
    assert all(t.cell.x0 == source.cell.x0 and t.cell.y0 >= source.cell.y1 for t in refs)
    assert layout.size[1] >= refs[-1].cell.y1


def test_where_the_prompt_came_from(review_sink: Any) -> None:
    sink, manifest, _ = review_sink
    page = _Page(review_page.render_page(as_manifest(refined(manifest)), page_path=PAGE))
    assert "prompt from: rule product-lifestyle · sidecar lamp.json" in page.words
    assert "prompt from: rule product-lifestyle · sidecar lamp.json · variation warm" in page.words
    # The sheet: the header's prompt says the sidecar took part.
    layout = layout_of(refined(manifest))
    prompt = next(b for b in layout.blocks if b.role == "prompt")
    assert prompt.lines[0].text.startswith("prompt (with sidecar lamp.json): ")


def test_costs_and_times_are_on_the_page_and_the_sheet(review_sink: Any) -> None:
    sink, manifest, _ = review_sink
    m = refined(manifest)
    page = _Page(review_page.render_page(as_manifest(m), page_path=PAGE))
    # 3 compare rows of 1.0 s + the clip's 0.3 s and 3.2 s outputs + refine's 2.5 s
    assert "9.00 s of model time" in page.words
    assert "$0.046 est." in page.words  # 3 kontext variants at $0.004 + refine's $0.03
    assert "$0.030" in page.words and "2.50 s" in page.words
    key = next(b for b in layout_of(m).blocks if b.role == "key")
    assert "$0.046 est." in key.text and "9.00 s model time" in key.text


def test_a_follow_up_sheet_says_which_hero_it_was_made_from(review_sink: Any) -> None:
    sink, manifest, _ = review_sink
    manifest["follows"] = {
        "trigger": "approved",
        "manifest": f"{BASE}/manifest.json",
        "output": f"{BASE}/explore-sd-turbo-1.png",
        "rule": "product-lifestyle",
        "by": "ann",
    }
    layout = layout_of(manifest)
    made = next(b for b in layout.blocks if b.role == "made-from")
    assert made.text == "explore-sd-turbo-1.png of product-lifestyle · approved by ann"
    assert [line.text for line in made.lines][0].startswith("made from: explore-sd-turbo-1.png")
    assert layout.header.contains(made.box)


def test_no_server_path_on_a_page_or_a_sheet(review_sink: Any) -> None:
    sink, manifest, _ = review_sink
    m = refined(manifest)
    # A manifest without a key names its source by the server's path only.
    m["source"].pop("key")
    m["source"]["uri"] = f"{SERVER}/drop/shoots/lamp.jpg"
    # ... and errors that quote the server's files.
    m["steps"][-2]["state"] = "failed"
    m["steps"][-2]["error"] = f"cannot read {SERVER}/rules/brand/refs/logo.png: truncated"
    m["steps"][0]["outputs"][1]["error"] = f"[Errno 2] No such file: '{SERVER}/cache/x.bin'"
    text = review_page.render_page(as_manifest(m), page_path=PAGE)
    assert SERVER not in text
    assert "lamp.jpg" in _Page(text).words
    assert "cannot read …/logo.png: truncated" in _Page(text).words
    assert "No such file: '…/x.bin'" in _Page(text).words
    words = sheet_words(layout_of(m))
    assert SERVER not in words and "lamp.jpg" in words
    # ... nor on the root index, whose entry for it holds the path.
    entry = review_index.index_entry(as_manifest(m), manifest_path=f"{BASE}/manifest.json")
    assert entry.key is not None and entry.key.startswith(SERVER)
    index = review_index.render_index([entry])
    assert SERVER not in index and "lamp.jpg" in _Page(index).words


def test_the_root_index_shows_each_source_by_key_with_a_small_picture() -> None:
    entries = [
        IndexEntry(
            manifest=f"shoots/s{i:03d}.jpg/manifest.json",
            page=f"shoots/s{i:03d}.jpg/index.html",
            sheet=f"shoots/s{i:03d}.jpg/sheet.png",
            rule="product-lifestyle",
            key=f"shoots/s{i:03d}.jpg",
            status="done",
            created_at=f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
            variants=4,
            thumbs=[f"shoots/s{i:03d}.jpg/explore-0.png"],
        )
        for i in range(120)
    ]
    entries.append(
        IndexEntry(manifest="old/manifest.json", page="old/index.html", sheet="old/sheet.png",
                   rule="product-lifestyle", key="old.jpg", created_at="2025-01-02T00:00:00Z")
    )  # fmt: skip
    page = _Page(review_index.render_index(entries))
    imgs = [a for t, a in page.tags if t == "img" and a.get("src")]  # not the lightbox's
    srcs = [str(a["src"]) for a in imgs]
    # The newest rows: the first output's board thumbnail, the sheet only as a fallback ...
    assert srcs[0] == "old/sheet.png"  # an entry without outputs: its sheet
    assert srcs[1] == "shoots/s119.jpg/thumbs/explore-0.webp"
    assert imgs[1]["data-fallback"] == "shoots/s119.jpg/sheet.png"
    assert not any(s.endswith("sheet.png") for s in srcs[1:])
    assert all(a.get("loading") == "lazy" for a in imgs)
    # ... named by key.
    assert "shoots/s119.jpg" in page.words and "old.jpg" in page.words


def test_a_daemon_run_keeps_small_copies_of_references_and_draws_them(
    tmp_path: Path, model_cache: Path
) -> None:
    h = Harness(tmp_path, model_cache)
    try:
        make_image(h.rules_dir / "refs" / "Marke – 東京.png", size=(80, 80), color=(0, 230, 0))
        h.rule(
            "r.yaml",
            """\
            name: brand
            match: {source: drop}
            prompt: "{stem}, studio light"
            steps:
              - {name: explore, model: stub, seeds: [1, 2]}
              - {name: refine, input: explore, pick: [1], model: stub, seeds: [3],
                 references: ["refs/*.png"]}
            output: {sink: out}
            """,
        )
        h.start()
        make_image(h.drop / "mug.png", size=(96, 64))
        manifest = h.manifest("brand", "mug", timeout=120)
    finally:
        h.stop()
    assert manifest["status"] == "done", manifest
    folder = posixpath.dirname(manifest["page"])
    (ref,) = manifest["steps"][1]["references"]
    thumb = manifest["reference_thumbs"][ref]
    assert thumb.startswith(f"{folder}/refs/") and (h.out / thumb).is_file()
    assert green(Image.open(h.out / thumb))  # the reference's picture
    refine_out = manifest["steps"][1]["outputs"][0]
    assert refine_out["input"] == manifest["steps"][0]["outputs"][1]["path"]

    page = (h.out / manifest["page"]).read_text()
    assert str(tmp_path) not in page  # neither the rules folder nor the drop folder
    parsed = _Page(page)
    assert posixpath.relpath(thumb, folder) in parsed.attrs("img", "src")
    assert "Marke – 東京.png" in parsed.words

    # The sheet draws the reference's picture under the source.
    layout = layout_of(json.loads(json.dumps(manifest)))
    (tile,) = [t for t in layout.tiles if t.kind == "reference"]
    sheet = Image.open(io.BytesIO((h.out / manifest["sheet"]).read_bytes()))
    assert green(sheet.crop(tile.image.as_tuple()))
