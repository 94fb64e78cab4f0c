"""Issue 15 (quiet surface): a receiver's signature check rejects malformed headers cleanly.

Both the helper (``daemon.service.webhooks.verify``) and the standard-library snippet in
docs/service.md (run here as a receiver would paste it) return False for a hostile or broken
request, never raise (a receiver would answer 500 and log a traceback), and accept a real
delivery.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.service.webhooks import new_secret, secret_key, sign, verify, verify_legacy

DOCS = Path(__file__).resolve().parents[2] / "docs" / "service.md"
NOW = 1_700_000_000
BODY = b'{"type": "source.done", "id": "e1"}'


def docs_snippet() -> Callable[..., bool]:
    """The ``def verify(key, headers, body, tolerance)`` block of docs/service.md."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    code = next(b for b in blocks if "def verify(key: bytes" in b)
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOCS), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace["verify"]


def docs_key(secret: str) -> bytes:
    """The key line of docs/service.md, evaluated."""
    line = re.search(r"where `key = (.*?)`", DOCS.read_text())
    assert line, "docs/service.md lost the key line of its verify snippet"
    import base64

    return eval(line.group(1), {"base64": base64, "secret": secret})  # noqa: S307


def signed(secret: str, msg_id: str = "e1", stamp: int = NOW) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, msg_id, stamp, BODY),
    }


GOOD = {"webhook-id": "e1", "webhook-timestamp": str(NOW)}
MALFORMED = [
    {},
    {"webhook-signature": "v1,AAAA"},
    {**GOOD},
    {**GOOD, "webhook-signature": "v1,é€ü"},  # non-ASCII signature
    {**GOOD, "webhook-signature": "v1,\udcff"},  # a lone surrogate (undecodable bytes)
    {**GOOD, "webhook-signature": "v1,%%%not-base64%%%"},
    {**GOOD, "webhook-signature": "v1"},
    {**GOOD, "webhook-signature": ","},
    {**GOOD, "webhook-signature": "v1," + "A" * 10_000},
    {**GOOD, "webhook-timestamp": "", "webhook-signature": "v1,AAAA"},
    {**GOOD, "webhook-timestamp": "١٧٠٠٠٠٠٠٠٠", "webhook-signature": "v1,AAAA"},
    {**GOOD, "webhook-timestamp": "9" * 400, "webhook-signature": "v1,AAAA"},
    {**GOOD, "webhook-timestamp": " 1700000000", "webhook-signature": "v1,AAAA"},
    {**GOOD, "webhook-id": "é\udcff", "webhook-signature": "v1,AAAA"},
]


@pytest.mark.parametrize("headers", MALFORMED)
def test_the_helper_rejects_a_malformed_request_without_raising(
    headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert verify(new_secret(), headers, BODY, now=NOW) is False
    monkeypatch.setattr("time.time", lambda: float(NOW))  # the receiver's clock: a float
    assert verify(new_secret(), headers, BODY) is False


@pytest.mark.parametrize(
    "header", ["t=" + "9" * 400 + ",v1=ab", "t=1700000000,v1=\udcff", "t=\u0661,v1=ab"]
)
def test_the_legacy_helper_rejects_a_malformed_header_without_raising(
    header: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("time.time", lambda: float(NOW))
    assert verify_legacy("secret", header, BODY) is False


@pytest.mark.parametrize("headers", MALFORMED)
def test_the_docs_snippet_rejects_a_malformed_request_without_raising(
    headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    check = docs_snippet()
    monkeypatch.setattr("time.time", lambda: float(NOW))
    assert check(docs_key(new_secret()), headers, BODY) is False


@pytest.mark.parametrize("secret", [new_secret(), "an-old-secret-without-the-prefix"])
def test_the_docs_snippet_and_the_helper_accept_a_real_delivery(
    secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = signed(secret)
    assert verify(secret, headers, BODY, now=NOW) is True
    monkeypatch.setattr("time.time", lambda: float(NOW))
    assert docs_key(secret) == secret_key(secret)
    assert docs_snippet()(docs_key(secret), headers, BODY) is True
    assert docs_snippet()(docs_key(secret), headers, BODY + b" ") is False
    stale = signed(secret, stamp=NOW - 301)
    assert verify(secret, stale, BODY, now=NOW) is False
    assert docs_snippet()(docs_key(secret), stale, BODY) is False
