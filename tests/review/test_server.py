"""Issue 18: the review server - pages over HTTP, decisions posted from them, safely.

Each test starts the real server on a loopback port and talks HTTP to it (httpx)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from daemon.config.settings import ReviewConfig
from daemon.errors import WriteConflict
from daemon.outputs import page as review_page
from daemon.review.decisions import Action, Decided, decide
from daemon.review.log import DecisionLog
from daemon.review.server import ReviewServer

from .conftest import as_manifest

API = {"Content-Type": "application/json", "X-Darkroom-Review": "1"}
MANIFEST = "product-lifestyle/lamp/manifest.json"


pytestmark = pytest.mark.usefixtures("no_proxy")


def serve(sink: Any, **config: Any) -> tuple[ReviewServer, list[Decided]]:
    seen: list[Decided] = []
    server = ReviewServer(
        {"out": sink},
        ReviewConfig(port=0, **config),
        on_decided=lambda _sink, decided: seen.extend(decided),
    )
    server.start()
    return server, seen


@pytest.fixture
def published(review_sink: Any) -> Iterator[Any]:
    sink, manifest, manifest_path = review_sink
    assert manifest_path == MANIFEST
    review_page.publish(sink, as_manifest(manifest), manifest_path=manifest_path)
    yield sink


def test_page_is_served_and_a_posted_approval_lands_in_the_manifest(published: Any) -> None:
    server, seen = serve(published)
    try:
        page = httpx.get(server.url + "out/product-lifestyle/lamp/index.html")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert f'data-manifest="{MANIFEST}"' in page.text
        assert 'data-action="approve"' in page.text  # the buttons the page's script reveals
        assert httpx.get(server.url + "api/ping", headers=API).json()["ok"] is True

        body = {
            "sink": "out",
            "manifest": MANIFEST,
            "variants": ["explore-sd-turbo-1"],
            "action": "approve",
            "note": "hero",
        }
        answer = httpx.post(server.url + "api/decide", json=body, headers=API)
        assert answer.status_code == 200, answer.text
        (decided,) = answer.json()["decided"]
        assert decided["decision"] == "approved" and decided["by"] == "local"
    finally:
        server.stop()
    saved = json.loads((published.root / MANIFEST).read_text())
    record = saved["decisions"]["product-lifestyle/lamp/explore-sd-turbo-1.png"]
    assert (record["decision"], record["note"], record["by"]) == ("approved", "hero", "local")
    assert (published.root / "approved/product-lifestyle/lamp/explore-sd-turbo-1.png").is_file()
    assert [d.action for d in seen] == [Action.APPROVE]
    # The republished page shows it.
    page_html = (published.root / "product-lifestyle/lamp/index.html").read_text()
    assert 'class="badge approved"' in page_html


def test_star_and_note_keep_the_approval(published: Any) -> None:
    decide(published, MANIFEST, ["explore-sd-turbo-1"], Action.APPROVE, by="ann")
    decide(published, MANIFEST, ["explore-sd-turbo-1"], Action.STAR, by="bob")
    decide(published, MANIFEST, ["explore-sd-turbo-1"], Action.NOTE, note="warmer", by="cy")
    saved = json.loads((published.root / MANIFEST).read_text())
    record = saved["decisions"]["product-lifestyle/lamp/explore-sd-turbo-1.png"]
    assert record["decision"] == "approved" and record["starred"] is True
    assert record["note"] == "warmer" and record["by"] == "cy"
    # A star alone is not a decision: the index counts only approvals and rejections.
    decide(published, MANIFEST, ["explore-sd-turbo-0"], Action.STAR, by="bob")
    saved = json.loads((published.root / MANIFEST).read_text())
    assert "decision" not in saved["decisions"]["product-lifestyle/lamp/explore-sd-turbo-0.png"]
    index = json.loads((published.root / "index.json").read_text())
    assert index["entries"][0]["approved"] == 1


def test_a_decision_never_undoes_a_manifest_written_meanwhile(
    published: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer (a new round, another reviewer) changes the manifest between the
    decision's read and its write: the decision is applied to the newer manifest."""
    real_write_if = type(published).write_if
    raced = threading.Event()

    def write_if(self: Any, path: str, data: bytes, *args: Any, **kwargs: Any) -> str:
        if path == MANIFEST and not raced.is_set():
            raced.set()
            decide(published, MANIFEST, ["explore-kontext-2"], Action.REJECT, by="other")
            raise WriteConflict(f"{path} changed")
        return real_write_if(self, path, data, *args, **kwargs)

    monkeypatch.setattr(type(published), "write_if", write_if)
    decide(published, MANIFEST, ["explore-sd-turbo-1"], Action.APPROVE, by="ann")
    decisions = json.loads((published.root / MANIFEST).read_text())["decisions"]
    assert decisions["product-lifestyle/lamp/explore-kontext-2.png"]["decision"] == "rejected"
    assert decisions["product-lifestyle/lamp/explore-sd-turbo-1.png"]["decision"] == "approved"


def test_requests_another_site_could_forge_are_refused(published: Any) -> None:
    server, seen = serve(published)
    try:
        body = {"sink": "out", "manifest": MANIFEST, "variants": ["explore-0"], "action": "approve"}
        # A plain form post (what a page elsewhere can send without a preflight).
        form = httpx.post(server.url + "api/decide", data={"x": "1"})
        assert form.status_code == 403
        no_header = httpx.post(server.url + "api/decide", json=body)
        assert no_header.status_code == 403
        assert httpx.get(server.url + "api/ping").status_code == 403
        # Paths outside the sink, and nonsense, are refused without touching anything.
        assert httpx.get(server.url + "out/../../etc/passwd").status_code == 404
        escape = {**body, "manifest": "../manifest.json"}
        assert httpx.post(server.url + "api/decide", json=escape, headers=API).status_code == 400
        wrong = {**body, "action": "delete"}
        answer = httpx.post(server.url + "api/decide", json=wrong, headers=API)
        assert answer.status_code == 400 and "approve" in answer.json()["error"]
    finally:
        server.stop()
    assert seen == []
    assert "decisions" not in json.loads((published.root / MANIFEST).read_text())


def test_a_token_protects_pages_and_decisions_and_names_the_reviewer(published: Any) -> None:
    server, seen = serve(published, token=SecretStr("s3cret"))
    try:
        page = server.url + "out/product-lifestyle/lamp/index.html"
        assert httpx.get(page).status_code == 401
        assert httpx.get(page, auth=("ann", "wrong")).status_code == 401
        assert httpx.get(page, auth=("ann", "s3cret")).status_code == 200
        body = {"sink": "out", "manifest": MANIFEST, "variants": ["explore-0"], "action": "star"}
        body["variants"] = ["explore-sd-turbo-0"]
        answer = httpx.post(
            server.url + "api/decide", json=body, headers=API, auth=("ann", "s3cret")
        )
        assert answer.status_code == 200 and answer.json()["decided"][0]["by"] == "ann"
    finally:
        server.stop()


def test_off_loopback_needs_allow_remote_and_a_token() -> None:
    with pytest.raises(ValueError, match="allow_remote"):
        ReviewConfig(host="0.0.0.0")
    with pytest.raises(ValueError, match="review.token"):
        ReviewConfig(host="0.0.0.0", allow_remote=True)
    assert ReviewConfig(host="0.0.0.0", allow_remote=True, token=SecretStr("t")).allow_remote


def test_the_decision_log_is_an_outbox(published: Any, tmp_path: Any) -> None:
    log = DecisionLog(tmp_path / "ledger.sqlite")
    decided = decide(published, MANIFEST, ["explore-sd-turbo-1"], Action.APPROVE, by="ann")
    (row_id,) = log.record("out", decided)
    (pending,) = log.pending()
    assert (pending.id, pending.action, pending.decision, pending.by) == (
        row_id,
        Action.APPROVE,
        "approved",
        "ann",
    )
    assert pending.approved_copy == "approved/product-lifestyle/lamp/explore-sd-turbo-1.png"
    log.mark_handled([row_id])
    assert log.pending() == []
    assert [r.id for r in log.history(MANIFEST)] == [row_id]
    log.close()


def test_a_rebound_name_and_hidden_files_are_refused(published: Any) -> None:
    """DNS rebinding: a page elsewhere whose name resolves to 127.0.0.1 sends its own Host.
    Hidden files of the sink (the lock, temp files) are not served."""
    (published.root / ".darkroom.lock").write_text("x")
    server, _ = serve(published)
    try:
        rebound = httpx.get(server.url + "api/ping", headers={**API, "Host": "attacker.example"})
        assert rebound.status_code == 403
        assert httpx.get(server.url + "api/ping", headers=API).status_code == 200
        assert httpx.get(server.url + "out/.darkroom.lock").status_code == 404
    finally:
        server.stop()


def test_errors_name_the_manifest_inside_the_sink_not_on_the_server(published: Any) -> None:
    server, _ = serve(published)
    try:
        body = {"sink": "out", "manifest": MANIFEST, "variants": ["nope"], "action": "approve"}
        answer = httpx.post(server.url + "api/decide", json=body, headers=API)
    finally:
        server.stop()
    assert answer.status_code == 400
    assert f"out:{MANIFEST}" in answer.json()["error"]
    assert str(published.root) not in answer.text


def test_approved_copies_of_two_sources_with_one_name_stay_apart(tmp_path: Any) -> None:
    """lamp.jpg and lamp.png both make explore-sd-turbo-1.png, each in its own folder: each
    approval keeps its own copy, and rejecting one never deletes the other's."""
    from .conftest import build_review_sink

    sink, manifest, path = build_review_sink(tmp_path / "out")
    text = json.dumps(manifest).replace("product-lifestyle/lamp/", "product-lifestyle/lamp.png/")
    other = json.loads(text)
    other_path = "product-lifestyle/lamp.png/manifest.json"
    sink.write(other_path, json.dumps(other).encode())
    for step in manifest["steps"]:
        for o in step["outputs"]:
            if o.get("path") and sink.exists(o["path"]):
                moved = o["path"].replace("product-lifestyle/lamp/", "product-lifestyle/lamp.png/")
                sink.write(moved, sink.read(o["path"]))
    first = decide(sink, path, ["explore-sd-turbo-1"], Action.APPROVE, by="a")[0]
    second = decide(sink, other_path, ["explore-sd-turbo-1"], Action.APPROVE, by="a")[0]
    assert first.approved_copy != second.approved_copy
    decide(sink, other_path, ["explore-sd-turbo-1"], Action.REJECT, by="a")
    assert sink.exists(str(first.approved_copy)) and not sink.exists(str(second.approved_copy))
    assert first.approved_copy == "approved/product-lifestyle/lamp/explore-sd-turbo-1.png"
