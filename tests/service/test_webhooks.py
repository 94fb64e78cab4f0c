"""Webhook delivery against a scripted receiver on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from structlog.testing import capture_logs

from daemon import __version__
from daemon.outputs.manifest import Manifest
from daemon.service.webhooks import (
    WebhookSender,
    event_from_manifest,
    sign,
    sign_legacy,
    verify,
    verify_legacy,
)

from .conftest import closed_port

SECRET = "s3cret-for-tests"
EVENT = {
    "type": "source.done",
    "source": {"source": "drop", "key": "a.jpg", "sha256": "ab" * 32},
    "rule": "product",
    "status": "done",
    "outputs": ["/out/a-0.png"],
    "manifest": "/out/manifest.json",
    "sheet": "/out/sheet.png",
    "page": "/out/index.html",
}


class Failures:
    def __init__(self) -> None:
        self.calls: list[tuple[dict, str, str]] = []
        self.event = threading.Event()

    def __call__(self, event, url, reason) -> None:
        self.calls.append((dict(event), url, reason))
        self.event.set()


@pytest.fixture
def make_sender(monkeypatch):
    # httpx honours *_PROXY variables; a proxy must never carry these loopback requests.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    senders: list[WebhookSender] = []

    def make(urls, **kwargs) -> WebhookSender:
        kwargs.setdefault("timeout", 5)
        sender = WebhookSender(urls, kwargs.pop("secret", SECRET), **kwargs)
        sender.start()
        senders.append(sender)
        return sender

    yield make
    for sender in senders:
        sender.stop(timeout=0.5)


def test_delivery_is_signed(receiver, make_sender):
    sender = make_sender([receiver.url])
    sender.send(EVENT)
    (request,) = receiver.wait_for(1)
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"darkroom/{__version__}"
    assert headers["x-darkroom-event"] == "source.done"
    uuid.UUID(headers["x-darkroom-delivery"])
    body = json.loads(request.body)
    assert {k: body[k] for k in EVENT} == EVENT
    uuid.UUID(body["id"])
    assert body["created_at"].endswith("Z")

    assert headers["webhook-id"] == body["id"] and headers["webhook-signature"].startswith("v1,")
    assert "x-darkroom-signature" not in headers  # the old header only with legacy_signature
    assert verify(SECRET, headers, request.body)
    assert verify(SECRET.encode(), headers, request.body.decode())
    assert not verify("another secret", headers, request.body)
    assert not verify(SECRET, headers, request.body.replace(b"a.jpg", b"b.jpg"))  # tampered
    t = int(headers["webhook-timestamp"])
    assert not verify(SECRET, headers, request.body, now=t + 301)  # too old: a replay
    assert verify(SECRET, headers, request.body, now=t + 299)
    assert not verify(SECRET, {}, request.body)
    assert not verify(SECRET, {**headers, "webhook-timestamp": "abc"}, request.body)
    assert sender.flush(2) and sender.delivered == 1 and sender.failed == 0


def test_sign_matches_the_documented_recipe():
    import hashlib
    import hmac

    body = b'{"type":"source.done"}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign_legacy(SECRET, body, 1700000000) == f"t=1700000000,v1={expected}"
    # A receiver rotating secrets may see several v1 values; one match is enough.
    header = f"t=1700000000,v1={'0' * 64},v1={expected}"
    assert verify_legacy(SECRET, header, body, now=1700000000)
    assert not verify_legacy(SECRET, None, body, now=1700000000)
    assert not verify_legacy(SECRET, "v1=abc", body, now=1700000000)
    assert not verify_legacy(SECRET, "t=abc,v1=abc", body, now=1700000000)


def test_retries_two_500s_then_succeeds(receiver, make_sender):
    receiver.script = [(500, {}), (502, {}), (200, {})]
    failures = Failures()
    sender = make_sender([receiver.url], backoff=0.05, on_failure=failures)
    sender.send(EVENT)
    requests = receiver.wait_for(3)
    assert sender.flush(2)
    assert len({r.headers["X-Darkroom-Delivery"] for r in requests}) == 1  # one delivery, retried
    assert requests[1].at - requests[0].at >= 0.04
    assert requests[2].at - requests[1].at >= 0.08  # doubled
    assert sender.delivered == 1 and failures.calls == []
    # flush() returned: nothing is queued, waiting to retry or in flight, so none can follow.
    assert len(receiver.received) == 3


def test_retry_after_is_honoured(receiver, make_sender):
    receiver.script = [(429, {"Retry-After": "1"}), (200, {})]
    sender = make_sender([receiver.url], backoff=0.01)
    with capture_logs() as logs:
        sender.send(EVENT)
        first, second = receiver.wait_for(2, timeout=5)
    assert second.at - first.at >= 0.95  # never sooner; how much later is the machine's
    assert retry_delays(logs) == [1]  # scheduled for Retry-After, not the 0.01 s backoff


def test_retry_after_is_bounded_by_max_delay(receiver, make_sender):
    receiver.script = [(503, {"Retry-After": "3600"}), (200, {})]
    sender = make_sender([receiver.url], backoff=0.01, max_delay=0.2)
    with capture_logs() as logs:
        sender.send(EVENT)
        receiver.wait_for(2, timeout=3)
    assert retry_delays(logs) == [0.2]  # scheduled for max_delay, not the hour asked for


def retry_delays(logs: list[dict]) -> list[float]:
    """The delays the sender scheduled its retries for, as it logged them."""
    return [e["retry_in"] for e in logs if e["event"] == "webhook failed; will retry"]


def test_no_retry_on_400(receiver, make_sender):
    receiver.script = [(400, {})]
    failures = Failures()
    sender = make_sender([receiver.url], backoff=0.01, on_failure=failures)
    sender.send(EVENT)
    assert failures.event.wait(3)
    assert sender.flush(5)  # nothing queued, waiting to retry or in flight: none can follow
    assert len(receiver.received) == 1
    ((event, url, reason),) = failures.calls
    assert url == receiver.url and event["type"] == "source.done" and "HTTP 400" in reason
    assert sender.failed == 1


def test_on_failure_after_max_attempts(receiver, make_sender):
    receiver.script = [(503, {})]
    failures = Failures()
    sender = make_sender([receiver.url], backoff=0.01, max_attempts=3, on_failure=failures)
    sender.send(EVENT)
    assert failures.event.wait(3)
    assert len(receiver.received) == 3
    assert "after 3 attempts" in failures.calls[0][2]


def test_connection_refused_is_retried_then_reported(make_sender):
    failures = Failures()
    url = f"http://127.0.0.1:{closed_port()}/hook"
    sender = make_sender([url], backoff=0.01, max_attempts=2, on_failure=failures)
    sender.send(EVENT)
    assert failures.event.wait(5)
    assert "ConnectError" in failures.calls[0][2] and "after 2 attempts" in failures.calls[0][2]


def test_each_url_gets_the_event(receiver, make_sender):
    failures = Failures()
    dead = f"http://127.0.0.1:{closed_port()}/hook"
    sender = make_sender([dead, receiver.url], backoff=5, on_failure=failures)
    sender.send(EVENT)
    (request,) = receiver.wait_for(1)  # the dead URL's retries do not hold this one up
    assert json.loads(request.body)["type"] == "source.done"


def test_send_never_blocks_on_a_hanging_receiver(receiver, make_sender):
    """send() only enqueues: every call returns while the receiver still holds the first
    request, which it answers only after the test releases it (no wall-clock bound)."""
    receiver.script = ["hang"]  # every request waits for receiver.release
    failures = Failures()
    sender = make_sender([receiver.url], timeout=10, queue_size=5, on_failure=failures)
    sender.send({**EVENT, "n": 0})
    receiver.wait_for(1)  # in flight, and hanging until released
    for i in range(1, 50):
        sender.send({**EVENT, "n": i})
    # Every send returned while the receiver had not answered anything.
    assert not receiver.release.is_set() and sender.delivered == 0
    # The queue holds 5; the oldest ones were dropped and reported.
    assert sender.dropped == 44 and len(failures.calls) == sender.dropped
    assert all(reason.startswith("dropped") for _, _, reason in failures.calls)
    assert sender.pending() == 6  # 5 queued + the one in flight

    # stop() gives up on the hung request instead of waiting for it: it returns (in its own
    # thread, so a regression fails here instead of hanging the suite) before the release.
    threads = [t for t in threading.enumerate() if t.name == "darkroom-webhooks"]
    stopper = threading.Thread(target=sender.stop, kwargs={"timeout": 0.3})
    stopper.start()
    stopper.join(20)
    assert not stopper.is_alive() and not receiver.release.is_set()
    assert sender.delivered == 0

    receiver.release.set()
    for thread in threads:  # the hung request ends, delivered after all; its thread then exits
        thread.join(5)
        assert not thread.is_alive()
    assert sender.delivered == 1
    assert [json.loads(r.body)["n"] for r in receiver.received] == [0]


def test_stop_drains_the_queue(receiver, make_sender):
    sender = make_sender([receiver.url])
    for i in range(5):
        sender.send({**EVENT, "n": i})
    sender.stop(timeout=5)
    assert sorted(json.loads(r.body)["n"] for r in receiver.received) == [0, 1, 2, 3, 4]
    assert sender.delivered == 5 and sender.pending() == 0


def test_stop_abandons_retries_due_after_the_deadline(receiver, make_sender):
    receiver.script = [(500, {})]
    failures = Failures()
    sender = make_sender([receiver.url], backoff=30, on_failure=failures)
    sender.send(EVENT)
    receiver.wait_for(1)
    # The retry is due in ~30 s, after the deadline: stop() abandons it instead of waiting
    # (a stop that waited would still be running when the join below gives up).
    stopper = threading.Thread(target=sender.stop, kwargs={"timeout": 0.5})
    stopper.start()
    stopper.join(20)
    assert not stopper.is_alive()
    assert [reason for _, _, reason in failures.calls] == ["abandoned: the daemon stopped"]


def test_bad_urls_are_refused():
    with pytest.raises(ValueError):
        WebhookSender(["ftp://127.0.0.1/x"], SECRET)
    with pytest.raises(ValueError):
        WebhookSender(["http://127.0.0.1/x"], SECRET, max_attempts=0)
    sender = WebhookSender([], SECRET)  # no URLs: everything is a no-op
    sender.start()
    sender.send(EVENT)
    assert sender.pending() == 0
    sender.stop()


def test_unsigned_when_no_secret(receiver, make_sender):
    sender = make_sender([receiver.url], secret=None)
    sender.send(EVENT)
    (request,) = receiver.wait_for(1)
    assert "X-Darkroom-Signature" not in request.headers
    assert "webhook-signature" not in {k.lower() for k in request.headers}


def _output(path: str | None) -> dict:
    return {"path": path, "step": "explore", "model": "sd-turbo", "variant": 0, "seed": 1}


def test_event_from_manifest():
    data = {
        "plan_id": "p1",
        "status": "partial",
        "source": {
            "source": "drop",
            "key": "shoots/a.jpg",
            "uri": "/srv/drop/shoots/a.jpg",
            "sha256": "cd" * 32,
        },
        "rule": {"name": "product", "digest": "x"},
        "steps": [
            {"outputs": [_output("product/a/explore-0.png"), _output("product/a/explore-1.png")]},
            {"outputs": [{**_output(None), "error": "refused"}]},
            {"outputs": [], "error": "CUDA out of memory"},
        ],
        "sheet": "product/a/sheet.png",
    }
    manifest = Manifest.model_validate(data)
    event = event_from_manifest(
        manifest,
        manifest_url="/srv/out/product/a/manifest.json",
        sheet_url="/srv/out/product/a/sheet.png",
        page_url=None,
        output_url=lambda p: f"/srv/out/{p}",
    )
    uuid.UUID(event.pop("id"))
    assert event.pop("created_at").endswith("Z")
    assert event == {
        "type": "source.failed",
        "status": "partial",
        "source": {"source": "drop", "key": "shoots/a.jpg", "sha256": "cd" * 32},
        "rule": "product",
        "outputs": ["/srv/out/product/a/explore-0.png", "/srv/out/product/a/explore-1.png"],
        "manifest": "/srv/out/product/a/manifest.json",
        "sheet": "/srv/out/product/a/sheet.png",
        "page": None,
    }
    assert (
        event_from_manifest(manifest.model_copy(update={"status": "done"}), manifest_url="m")[
            "type"
        ]
        == "source.done"
    )


def test_the_snippet_in_the_docs_verifies_our_signatures():
    import re

    from .conftest import REPO

    text = (REPO / "docs" / "service.md").read_text()
    (snippet,) = [
        block
        for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL)
        if "def verify" in block
    ]
    assert len(snippet.strip().splitlines()) <= 14
    namespace: dict = {}
    exec(snippet, namespace)  # noqa: S102 (our own docs)
    body = json.dumps(EVENT).encode()
    now = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now)}
    headers["webhook-signature"] = sign(SECRET, "msg_1", now, body)
    assert namespace["verify"](SECRET.encode(), headers, body)
    assert not namespace["verify"](SECRET.encode(), headers, body + b" ")
    old = {**headers, "webhook-timestamp": str(now - 400)}
    old["webhook-signature"] = sign(SECRET, "msg_1", now - 400, body)
    assert not namespace["verify"](SECRET.encode(), old, body)
