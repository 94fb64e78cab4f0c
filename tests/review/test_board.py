"""Issue 18: the campaign board - every source x model of a rule, filtered by decision and
folder, loaded a chunk at a time. Writers replace rows in place; the page works from file://."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon.outputs import board
from daemon.outputs.board import board_dir_for, update_board
from daemon.outputs.manifest import Decision, Manifest
from daemon.sinks.folder import FolderSink

from .conftest import build_manifest


def manifest_for(key: str, created: str, models: tuple[str, ...] = ("sd", "flux")) -> Manifest:
    data = build_manifest([("explore", m, 2) for m in models], key=key)
    base = f"look/{key}"
    for step in data["steps"]:
        for o in step["outputs"]:
            o["path"] = f"{base}/{o['path'].rsplit('/', 1)[1]}"
    data["rule"]["name"] = "look"
    data["created_at"] = created
    return Manifest.model_validate(data)


def meta(root: Path) -> dict[str, Any]:
    text = (root / board_dir_for("look") / "board.js").read_text()
    return json.loads(text[text.index("(") + 1 : text.rindex(")")])


def rows(root: Path) -> list[dict[str, Any]]:
    found = []
    for chunk in sorted((root / board_dir_for("look") / "chunks").glob("*.js")):
        text = chunk.read_text()
        found += json.loads(text[text.index("(") + 1 : text.rindex(")")])["rows"]
    return found


def test_rows_are_replaced_in_place_and_totals_recomputed(tmp_path: Path) -> None:
    sink = FolderSink("out", tmp_path)
    a = manifest_for("may/a.jpg", "2026-01-01T00:00:00Z")
    b = manifest_for("june/b.jpg", "2026-01-02T00:00:00Z")
    update_board(sink, a, "look/may/a.jpg/manifest.json")
    update_board(sink, b, "look/june/b.jpg/manifest.json")
    first = meta(tmp_path)
    assert first["total"] == 2 and first["models"] == ["sd", "flux"]
    assert first["folders"] == {"june": 1, "may": 1}
    assert first["counts"]["approved"] == 0 and first["counts"]["outputs"] == 8

    # A decision republishes a's row: still two rows, one approval, one star.
    path = a.steps[0].outputs[1].path
    decided = a.with_decisions({str(path): Decision(decision="approved", starred=True)})
    update_board(sink, decided, "look/may/a.jpg/manifest.json")
    second = meta(tmp_path)
    assert second["total"] == 2
    assert second["counts"]["approved"] == 1 and second["counts"]["starred"] == 1
    (row,) = [r for r in rows(tmp_path) if r["k"] == "may/a.jpg"]
    codes = [o[2] for _, outs in row["c"] for o in outs]
    assert codes.count("a*") == 1
    # Links are relative to the board, so it works from file:// and a copied folder.
    assert row["p"] == "../../look/may/a.jpg/index.html"
    assert row["c"][0][1][0][0] == "../../look/may/a.jpg/thumbs/explore-sd-0.webp"


def test_chunks_fill_in_order_and_a_writer_finds_a_row_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(board, "CHUNK_ROWS", 2)
    sink = FolderSink("out", tmp_path)
    manifests = [manifest_for(f"s{i}.jpg", f"2026-01-0{i + 1}T00:00:00Z") for i in range(5)]
    for i, m in enumerate(manifests):
        update_board(sink, m, f"look/s{i}.jpg/manifest.json")
    assert meta(tmp_path)["chunks"] == 3 and meta(tmp_path)["total"] == 5
    # Updating the first source rewrites chunk 0 only, in place.
    update_board(sink, manifests[0], "look/s0.jpg/manifest.json")
    assert meta(tmp_path)["total"] == 5
    slots = json.loads((tmp_path / board_dir_for("look") / "slots.json").read_text())
    assert slots["look/s0.jpg/manifest.json"] == 0 and slots["look/s4.jpg/manifest.json"] == 2


def test_the_board_in_a_browser_filters_and_shows_hostile_names_as_text(
    browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tests.e2e.conftest import wait_for

    sink = FolderSink("out", tmp_path)
    evil = 'may/<img src=x onerror="document.title=1">.jpg'
    for i, key in enumerate(["may/a.jpg", "june/b.jpg", evil]):
        m = manifest_for(key, f"2026-01-0{i + 1}T00:00:00Z")
        if key == "june/b.jpg":
            m = m.with_decisions({str(m.steps[0].outputs[0].path): Decision(decision="approved")})
        update_board(sink, m, f"look/{i}/manifest.json")
    browser.get((tmp_path / board_dir_for("look") / "index.html").as_uri())

    def keys() -> list[str]:
        return [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#rows td.src > a")]

    assert wait_for(lambda: len(keys()) == 3, 30, "the rows")
    assert keys()[0] == evil  # newest first, the name shown as text
    assert browser.title != "1"  # nothing in a name ran
    Select(browser.find_element(By.ID, "decision")).select_by_value("a")
    assert wait_for(lambda: keys() == ["june/b.jpg"], 30, "only the approved source")
    Select(browser.find_element(By.ID, "decision")).select_by_value("")
    Select(browser.find_element(By.ID, "folder")).select_by_value("may")
    assert wait_for(lambda: sorted(keys()) == sorted(["may/a.jpg", evil]), 30, "one folder")
    totals = browser.find_element(By.ID, "totals").text
    assert totals.startswith("3 sources") and "1 approved" in totals
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    # Only the pictures this test did not make are missing; no script error.
    assert all("thumbs/" in e.get("message", "") for e in severe), severe
