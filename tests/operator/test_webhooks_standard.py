"""Issue 20: webhooks follow the Standard Webhooks specification, so a receiver can verify them
with an off-the-shelf verifier; the old header stays behind an option for one release.

Each delivery is checked two ways: with the ``standardwebhooks`` package from PyPI (the test
extra) and with a verifier written here from the specification's text, sharing no code with
the daemon's own signing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Mapping

import pytest
import structlog

from daemon.config.settings import WebhooksConfig
from daemon.service.webhooks import (
    WebhookSender,
    new_secret,
    verify,
    verify_legacy,
)

from .conftest import Receiver

EVENT = {
    "type": "source.done",
    "source": {"source": "drop", "key": "shoots/é.jpg", "sha256": "ab" * 32},
    "rule": "product",
    "status": "done",
    "outputs": ["/out/a-0.png"],
    "manifest": "/out/manifest.json",
    "sheet": None,
    "page": None,
}


def spec_verify(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    """Standard Webhooks, from the spec: the key is the base64 part of ``whsec_<base64>``;
    the signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; ``webhook-signature``
    is a space-separated list of ``v1,<base64 HMAC-SHA256>``; timestamps more than five
    minutes off are refused."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = h["webhook-id"], h["webhook-timestamp"], h["webhook-signature"]
    if abs(now - int(stamp)) > 5 * 60:
        return False
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    content = msg_id.encode() + b"." + stamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(
        version == "v1" and hmac.compare_digest(value, expected)
        for version, _, value in (s.partition(",") for s in signatures.split(" "))
    )


def deliver(receiver: Receiver, secret: str | None, **kwargs: object) -> tuple[dict, bytes]:
    sender = WebhookSender([receiver.url], secret, timeout=5, **kwargs)  # type: ignore[arg-type]
    sender.start()
    try:
        sender.send(EVENT)
        (request,) = receiver.wait_for(1)
    finally:
        sender.stop(timeout=1)
    return {k.lower(): v for k, v in request.headers.items()}, request.body


def test_a_delivery_verifies_with_the_spec_and_the_pypi_verifier(receiver: Receiver) -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    headers, body = deliver(receiver, secret)

    event = json.loads(body)
    assert headers["webhook-id"] == event["id"]  # receivers de-duplicate on it
    assert headers["webhook-timestamp"].isdigit()
    assert spec_verify(secret, headers, body, now=time.time())
    assert not spec_verify(new_secret(), headers, body, now=time.time())
    assert not spec_verify(secret, headers, body + b" ", now=time.time())
    assert "x-darkroom-signature" not in headers  # the old header is opt-in now

    standardwebhooks = pytest.importorskip("standardwebhooks")
    verified = standardwebhooks.Webhook(secret).verify(body, headers)
    assert verified["source"]["key"] == "shoots/é.jpg"
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify(body, headers)


def test_a_secret_without_the_prefix_is_its_own_bytes(receiver: Receiver) -> None:
    """Secrets set before this release keep working: the receiver passes them to a
    verifier as "whsec_" + base64(secret)."""
    headers, body = deliver(receiver, "an-old-hex-secret")
    as_whsec = "whsec_" + base64.b64encode(b"an-old-hex-secret").decode()
    assert spec_verify(as_whsec, headers, body, now=time.time())
    assert verify("an-old-hex-secret", headers, body)


def test_legacy_signature_is_sent_only_when_asked(receiver: Receiver) -> None:
    secret = new_secret()
    headers, body = deliver(receiver, secret, legacy_signature=True)
    assert verify_legacy(secret, headers["x-darkroom-signature"], body)
    assert spec_verify(secret, headers, body, now=time.time())  # and the standard headers too
    assert WebhooksConfig.model_validate({"legacy_signature": True}).legacy_signature
    assert not WebhooksConfig().legacy_signature


def test_a_malformed_whsec_secret_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="not base64"):
        WebhooksConfig.model_validate({"secret": "whsec_not*base64!"})


GOOD = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {**GOOD},
        {**GOOD, "webhook-signature": ""},
        {**GOOD, "webhook-signature": "v1"},
        {**GOOD, "webhook-signature": "v1,"},
        {**GOOD, "webhook-signature": "v1,***not base64***"},
        {**GOOD, "webhook-signature": "v1,é€"},
        {**GOOD, "webhook-signature": "v2,AAAA"},
        {**GOOD, "webhook-timestamp": "١٧٠٠٠٠٠٠٠٠", "webhook-signature": "v1,AAAA"},
        {**GOOD, "webhook-timestamp": "-5", "webhook-signature": "v1,AAAA"},
        {**GOOD, "webhook-timestamp": "1e9", "webhook-signature": "v1,AAAA"},
        {**GOOD, "webhook-id": "msg_é", "webhook-signature": "v1,AAAA"},
    ],
)
def test_verify_rejects_malformed_headers_without_raising(headers: dict[str, str]) -> None:
    assert verify(new_secret(), headers, b"{}", now=1700000000) is False


@pytest.mark.parametrize(
    "header", [None, "", "t=1700000000", "t=,v1=ab", "t=١٧,v1=ab", "t=1700000000,v1=é€", "v1=ab"]
)
def test_verify_legacy_rejects_malformed_headers_without_raising(header: str | None) -> None:
    assert verify_legacy("secret", header, b"{}", now=1700000000) is False


def test_urls_are_logged_without_credentials_or_query() -> None:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://alice:hunter2@127.0.0.1:{port}/hook?token=sekrit#frag"
    reasons: list[str] = []
    with structlog.testing.capture_logs() as logs:
        sender = WebhookSender(
            [url],
            new_secret(),
            backoff=0.01,
            max_attempts=2,
            on_failure=lambda *a: reasons.append(a[2]),
        )
        sender.start()
        sender.send(EVENT)
        assert sender.flush(30)
        sender.stop(timeout=1)
    assert reasons and logs  # it failed, and said so
    text = json.dumps(logs, default=str)
    assert f"127.0.0.1:{port}/hook" in text
    for leak in ("alice", "hunter2", "token", "sekrit", "frag"):
        assert leak not in text
    with pytest.raises(ValueError) as refused:
        WebhookSender(["file:///etc/passwd?token=sekrit"], None)
    assert "sekrit" not in str(refused.value)
