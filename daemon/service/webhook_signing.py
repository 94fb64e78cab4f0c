"""Webhook signatures: the Standard Webhooks headers a delivery carries and the checks a receiver runs.

``webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`` where the key is
the secret's bytes: ``whsec_<base64>`` secrets (what :func:`new_secret` makes) are base64-decoded,
any other secret is used as its UTF-8 bytes. :func:`sign_legacy` / :func:`verify_legacy` are the
deprecated ``X-Darkroom-Signature`` header (see :mod:`daemon.service.webhooks`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

__all__ = [
    "ID_HEADER",
    "LEGACY_SIGNATURE_HEADER",
    "SECRET_PREFIX",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "new_secret",
    "secret_key",
    "sign",
    "sign_legacy",
    "signature_headers",
    "verify",
    "verify_legacy",
]

SECRET_PREFIX = "whsec_"
ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = (
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
)
LEGACY_SIGNATURE_HEADER = "X-Darkroom-Signature"


def new_secret() -> str:
    """A fresh ``whsec_`` secret (32 random bytes), the form Standard Webhooks verifiers take."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str | bytes) -> bytes:
    """The HMAC key of ``secret``: a ``whsec_<base64>`` secret decoded, any other secret's
    UTF-8 bytes (secrets made before Standard Webhooks), bytes as they are.

    Raises ValueError for a ``whsec_`` secret that is not base64 or decodes to nothing."""
    if isinstance(secret, bytes):
        return secret
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode()
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        # Verifiers accept unpadded base64 too; extra padding is ignored.
        key = base64.b64decode(encoded + "==", validate=False)
        if base64.b64encode(key).rstrip(b"=") != encoded.encode("ascii").rstrip(b"="):
            raise ValueError("not canonical base64")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise ValueError(
            "the webhook secret starts with 'whsec_' but the rest is not base64; "
            'make a new one with: python3 -c "from daemon.service.webhooks import new_secret; '
            'print(new_secret())"'
        ) from None
    if not key:
        raise ValueError("the webhook secret 'whsec_' is empty; set DARKROOM_WEBHOOKS__SECRET")
    return key


def sign(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) of ``body`` sent as message
    ``msg_id`` at ``timestamp`` (unix seconds)."""
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    secret: str | bytes | None, msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt (no signature without a secret)."""
    headers = {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(int(timestamp))}
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret, msg_id, timestamp, body)
    return headers


def verify(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """True if ``headers`` (the request's, any case) carry a Standard Webhooks signature of
    ``body`` (the raw request bytes) by ``secret``, timestamped within ``tolerance`` seconds
    of ``now``. Anything malformed (missing or non-ASCII headers, bad base64, several
    signatures of which none match) is False, never an exception."""
    try:
        lowered = {str(k).lower(): v for k, v in headers.items()}
        msg_id = lowered.get(ID_HEADER)
        stamp = lowered.get(TIMESTAMP_HEADER)
        signatures = lowered.get(SIGNATURE_HEADER)
        if not (
            isinstance(msg_id, str)
            and isinstance(stamp, str)
            and isinstance(signatures, str)
            and msg_id.isascii()
            and stamp.isascii()
            and stamp.isdigit()
            and len(stamp) <= 12  # a float minus a 400-digit int overflows
            and signatures.isascii()
        ):
            return False
        timestamp = int(stamp)
        if abs((time.time() if now is None else now) - timestamp) > tolerance:
            return False
        raw = body.encode() if isinstance(body, str) else body
        expected = base64.b64decode(sign(secret, msg_id, timestamp, raw).partition(",")[2])
        for candidate in signatures.split():
            version, _, value = candidate.partition(",")
            if version != "v1" or not value:
                continue
            try:
                given = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
            if hmac.compare_digest(expected, given):
                return True
        return False
    except ValueError:  # a whsec_ secret that is not base64
        return False


def sign_legacy(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The X-Darkroom-Signature value (``t=<t>,v1=<hex>``) of ``body`` sent at ``timestamp``.
    Deprecated: sent only with ``webhooks.legacy_signature``; the key is the secret's bytes."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, str(int(timestamp)).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={int(timestamp)},v1={digest}"


def verify_legacy(
    secret: str | bytes,
    header: str | None,
    body: bytes | str,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """True if ``header`` (X-Darkroom-Signature) signs ``body`` with ``secret`` and its
    timestamp is within ``tolerance`` seconds of ``now``. Malformed headers are False."""
    if not isinstance(header, str) or not header.isascii():
        return False
    if isinstance(body, str):
        body = body.encode()
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            if not value.isdigit() or len(value) > 12:  # see verify()
                return False
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign_legacy(secret, body, timestamp).partition("v1=")[2]
    return any(hmac.compare_digest(expected, c) for c in candidates)
