"""Signed webhooks: tell other systems when a source is finished, never slowing the pipeline.

    sender = WebhookSender(["https://hooks.example.com/darkroom"], secret, on_failure=metrics.webhook_failed)
    sender.start()
    sender.send(event_from_manifest(manifest, manifest_url=..., sheet_url=..., page_url=...))
    sender.stop(timeout=10)

``send`` only enqueues (a bounded queue; when full the oldest delivery is dropped and
counted as a failure). One background thread POSTs each event as JSON to every URL and
retries connection errors, timeouts, 408, 425, 429 and 5xx with exponential backoff
(honouring ``Retry-After``); other 4xx answers are final. A delivery that fails waits in a
retry heap, so one dead receiver does not hold up the others.

Every request carries (the Standard Webhooks headers, https://www.standardwebhooks.com)::

    Content-Type: application/json
    User-Agent: darkroom/<version>
    webhook-id: <the event's id>             (the same on every retry and for every URL)
    webhook-timestamp: <unix seconds>        (the time of this attempt)
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>
    X-Darkroom-Event: source.done            (the event's "type")
    X-Darkroom-Delivery: <uuid>              (one per URL, the same on every retry)

so any Standard Webhooks verifier checks them (``standardwebhooks`` on PyPI, svix, ...). The
key is the secret's bytes: ``whsec_<base64>`` secrets (what :func:`new_secret` makes and the
verifiers expect) are base64-decoded; any other secret is used as its UTF-8 bytes, which a
verifier accepts as ``"whsec_" + base64(secret)``. ``webhook-signature`` is absent when no
secret is set. With ``legacy_signature=True`` (``webhooks: {legacy_signature: true}``; kept for
one release) the old header is sent as well::

    X-Darkroom-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

:func:`verify` (standard) and :func:`verify_legacy` are the checks a receiver runs.

The event (one JSON object)::

    {"type": "source.done" | "source.failed", "id": "<uuid>", "created_at": "<ISO 8601 UTC>",
     "source": {"source": "<name>", "key": "<key>", "sha256": "<hex>"},
     "rule": "<name>", "status": "done" | "partial" | "failed",
     "outputs": ["<location>", ...], "manifest": "<location>", "sheet": "<location>" | null,
     "page": "<location>" | null}
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import email.utils
import heapq
import itertools
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from daemon import __version__
from daemon.service.webhook_events import event_from_decision, event_from_manifest, now_iso
from daemon.service.webhook_signing import (
    LEGACY_SIGNATURE_HEADER,
    SECRET_PREFIX,
    new_secret,
    secret_key,
    sign,
    sign_legacy,
    signature_headers,
    verify,
    verify_legacy,
)

log = structlog.get_logger("darkroom.webhooks")

# Signing (webhook_signing) and events (webhook_events) live beside this module; their
# names are re-exported here, where callers and docs have always imported them from.
__all__ = [
    "LEGACY_SIGNATURE_HEADER",
    "SECRET_PREFIX",
    "OnFailure",
    "WebhookSender",
    "event_from_decision",
    "event_from_manifest",
    "new_secret",
    "redact_url",
    "secret_key",
    "sign",
    "sign_legacy",
    "signature_headers",
    "verify",
    "verify_legacy",
]

RETRY_STATUS = frozenset({408, 425, 429})

OnFailure = Callable[[Mapping[str, Any], str, str], None]


def redact_url(url: str) -> str:
    """``url`` as it may be logged: no user, password, query or fragment (receivers often
    carry a token in one of them)."""
    try:
        parsed = httpx.URL(url)
        return str(parsed.copy_with(userinfo=b"", query=None, fragment=None))
    except Exception:  # noqa: BLE001 - a URL httpx cannot parse is not logged at all
        return "<unparsable URL>"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - time.time())


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    url: str = field(compare=False)
    event: Mapping[str, Any] = field(compare=False)
    body: bytes = field(compare=False)
    delivery_id: str = field(compare=False)
    attempt: int = field(default=0, compare=False)


class WebhookSender:
    """Delivers events to ``urls`` from a background thread. See the module docstring.

    ``backoff`` is the first retry's delay in seconds; it doubles with each attempt (with
    ±10 % jitter) up to ``max_delay``. ``Retry-After`` is honoured up to ``max_delay``.
    ``on_failure(event, url, reason)`` runs (on the sender's thread) for every delivery
    given up or dropped; it must not block. ``legacy_signature`` also sends the old
    X-Darkroom-Signature header (for receivers not yet moved to Standard Webhooks).
    URLs are logged without credentials, query or fragment.
    """

    def __init__(
        self,
        urls: Iterable[str],
        secret: str | bytes | None,
        *,
        timeout: float = 10.0,
        max_attempts: int = 5,
        backoff: float = 2.0,
        max_delay: float = 300.0,
        queue_size: int = 1000,
        on_failure: OnFailure | None = None,
        transport: httpx.BaseTransport | None = None,
        legacy_signature: bool = False,
    ):
        self.urls = list(urls)
        for url in self.urls:
            if httpx.URL(url).scheme not in ("http", "https"):
                raise ValueError(
                    f"webhook URL {redact_url(url)!r} must start with http:// or https://"
                )
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.secret = secret or None
        if self.secret is not None:
            secret_key(self.secret)  # a malformed whsec_ secret fails here, not per delivery
        self.legacy_signature = legacy_signature
        if self.urls and self.secret is None:
            log.warning(
                "webhooks are sent unsigned: set a webhook secret so receivers can verify them"
            )
        self.timeout, self.max_attempts, self.backoff = timeout, max_attempts, backoff
        self.max_delay, self.queue_size = max_delay, queue_size
        self.on_failure = on_failure
        self._transport = transport
        self._cond = threading.Condition()
        self._ready: collections.deque[_Delivery] = collections.deque()
        self._retries: list[_Delivery] = []
        self._in_flight = 0
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._deadline: float | None = None  # set by stop(): drain until then
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    # -- the caller's side -----------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None or not self.urls:
            return
        self._deadline = None
        self._thread = threading.Thread(target=self._run, name="darkroom-webhooks", daemon=True)
        self._thread.start()

    def send(self, event: Mapping[str, Any]) -> None:
        """Queue ``event`` for every URL and return at once. Never raises."""
        if not self.urls:
            return
        try:
            event = dict(event)
            event.setdefault("id", str(uuid.uuid4()))
            event.setdefault("created_at", now_iso())
            body = json.dumps(event, separators=(",", ":"), default=str).encode()
        except Exception as exc:  # noqa: BLE001
            log.error("webhook event cannot be encoded; not sent", reason=str(exc))
            return
        dropped: list[_Delivery] = []
        with self._cond:
            if self._deadline is not None:
                log.warning(
                    "webhook not sent: the daemon is stopping", event_type=event.get("type")
                )
                return
            for url in self.urls:
                if len(self._ready) + len(self._retries) >= self.queue_size:
                    dropped.append(self._drop_oldest())
                self._ready.append(
                    _Delivery(0.0, next(self._seq), url, event, body, str(uuid.uuid4()))
                )
            self._cond.notify()
        for delivery in dropped:
            log.warning(
                "webhook queue full; the oldest delivery is dropped",
                queue_size=self.queue_size,
                url=redact_url(delivery.url),
                event_id=delivery.event.get("id"),
            )
            self._gave_up(delivery, "dropped: the webhook queue was full", count_as="dropped")

    def pending(self) -> int:
        """Deliveries not yet delivered or given up (queued, waiting to retry, or in flight)."""
        with self._cond:
            return len(self._ready) + len(self._retries) + self._in_flight

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is pending (retries included); False if ``timeout`` came first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._ready) + len(self._retries) + self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Deliver what can be delivered within ``timeout`` seconds, then stop. Retries due
        later than that are abandoned (and logged)."""
        if self._thread is None:
            return
        with self._cond:
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
        self._thread.join(timeout + 1.0)
        with self._cond:
            left = list(self._ready) + list(self._retries)
            self._ready.clear()
            self._retries.clear()
        if left or self._thread.is_alive():
            log.warning(
                "webhooks not delivered before stopping",
                abandoned=len(left),
                in_flight=self._thread.is_alive(),
            )
        for delivery in left:
            self._gave_up(delivery, "abandoned: the daemon stopped")
        self._thread = None

    # -- the sender's thread -----------------------------------------------------------

    def _drop_oldest(self) -> _Delivery:
        candidates = list(self._ready) + self._retries
        oldest = min(candidates, key=lambda d: d.seq)
        if oldest in self._ready:
            self._ready.remove(oldest)
        else:
            self._retries.remove(oldest)
            heapq.heapify(self._retries)
        return oldest

    def _next(self) -> _Delivery | None:
        """The next delivery to attempt, waiting for one; None when it is time to stop."""
        with self._cond:
            while True:
                now = time.monotonic()
                if self._deadline is not None and now >= self._deadline:
                    return None
                if self._ready:
                    delivery = self._ready.popleft()
                elif self._retries and self._retries[0].due <= now:
                    delivery = heapq.heappop(self._retries)
                elif self._deadline is not None and (
                    not self._retries or self._retries[0].due >= self._deadline
                ):
                    return None  # stopping, and nothing left that could go out in time
                else:
                    wake = self._retries[0].due if self._retries else None
                    if self._deadline is not None:
                        wake = min(wake or self._deadline, self._deadline)
                    self._cond.wait(None if wake is None else max(0.0, wake - now))
                    continue
                self._in_flight += 1
                return delivery

    def _run(self) -> None:
        with httpx.Client(
            timeout=self.timeout, follow_redirects=False, transport=self._transport
        ) as client:
            while (delivery := self._next()) is not None:
                try:
                    self._attempt(client, delivery)
                except Exception:  # a bug here must not end deliveries for good
                    with contextlib.suppress(Exception):
                        log.exception("webhook delivery crashed", url=redact_url(delivery.url))
                    with contextlib.suppress(Exception):
                        self._gave_up(delivery, "internal error")
                finally:
                    with self._cond:
                        self._in_flight -= 1
                        self._cond.notify_all()

    def _attempt(self, client: httpx.Client, delivery: _Delivery) -> None:
        delivery.attempt += 1
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"darkroom/{__version__}",
            "X-Darkroom-Event": str(delivery.event.get("type", "")),
            "X-Darkroom-Delivery": delivery.delivery_id,
        }
        now = int(time.time())
        # webhook-id is the event's: a receiver de-duplicates retries (and URLs) on it.
        msg_id = str(delivery.event.get("id") or delivery.delivery_id)
        headers.update(signature_headers(self.secret, msg_id, now, delivery.body))
        if self.secret is not None and self.legacy_signature:
            headers[LEGACY_SIGNATURE_HEADER] = sign_legacy(self.secret, delivery.body, now)
        bound = log.bind(
            url=redact_url(delivery.url),
            delivery=delivery.delivery_id,
            attempt=delivery.attempt,
            event_type=delivery.event.get("type"),
        )
        retry_after: float | None = None
        try:
            response = client.post(delivery.url, content=delivery.body, headers=headers)
        except httpx.UnsupportedProtocol:
            self._gave_up(delivery, f"unsupported URL: {redact_url(delivery.url)}")
            return
        except httpx.TransportError as exc:  # connection refused, timeouts, resets
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            if response.is_success:
                self.delivered += 1
                bound.debug("webhook delivered", status=response.status_code)
                return
            reason = f"HTTP {response.status_code}"
            if response.status_code not in RETRY_STATUS and response.status_code < 500:
                self._gave_up(delivery, f"{reason} (not retried)")
                return
            retry_after = _retry_after(response.headers.get("Retry-After"))
        if delivery.attempt >= self.max_attempts:
            self._gave_up(delivery, f"{reason} after {delivery.attempt} attempts")
            return
        delay = self.backoff * 2 ** (delivery.attempt - 1) * random.uniform(0.9, 1.1)
        if retry_after is not None:
            delay = max(delay, retry_after)
        delay = min(delay, self.max_delay)
        bound.warning("webhook failed; will retry", reason=reason, retry_in=round(delay, 3))
        delivery.due = time.monotonic() + delay
        with self._cond:
            heapq.heappush(self._retries, delivery)

    def _gave_up(self, delivery: _Delivery, reason: str, count_as: str = "failed") -> None:
        if count_as == "dropped":
            self.dropped += 1
        else:
            self.failed += 1
            log.error(
                "webhook not delivered",
                url=redact_url(delivery.url),
                delivery=delivery.delivery_id,
                event_id=delivery.event.get("id"),
                reason=reason,
            )
        if self.on_failure is not None:
            try:
                self.on_failure(delivery.event, delivery.url, reason)
            except Exception:
                log.exception("webhook on_failure callback failed")
