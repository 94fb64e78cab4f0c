"""Live: each webhook endpoint answers. By default a ``HEAD`` request (any HTTP answer proves
the endpoint is reachable; receivers commonly answer 405 to it); with ``--ping-webhooks`` a
signed ``doctor.ping`` event is POSTed the way deliveries are (Standard Webhooks headers) and
must be accepted (2xx): a receiver that acts on every event may not want that, so it is opt-in.
"""

from __future__ import annotations

import json
import time
import uuid

from daemon.config.settings import Settings
from daemon.diagnose.findings import Finding, fail, ok, warn


def check_webhooks(settings: Settings, *, ping: bool) -> list[Finding]:
    return [_check_url(url, settings, ping) for url in settings.webhooks.urls]


def _check_url(url: str, settings: Settings, ping: bool) -> Finding:
    import httpx

    from daemon.service.webhooks import redact_url, signature_headers

    shown = redact_url(url)
    check = f"webhook {shown}"
    timeout = min(settings.webhooks.timeout, 10.0)
    secret = settings.webhooks.secret.get_secret_value() if settings.webhooks.secret else None
    try:
        with httpx.Client(timeout=timeout, trust_env=False) as http:
            if ping:
                event = {"type": "doctor.ping", "id": str(uuid.uuid4()), "created_at": _now()}
                body = json.dumps(event).encode()
                headers = {"Content-Type": "application/json", "X-Darkroom-Event": "doctor.ping"}
                headers.update(signature_headers(secret, event["id"], int(time.time()), body))
                response = http.post(url, content=body, headers=headers)
            else:
                response = http.head(url)
    except httpx.HTTPError as exc:
        reason = (str(exc) or "no answer").replace(url, shown)  # never the token in a query
        return fail(
            check,
            f"unreachable: {type(exc).__name__}: {reason}",
            "check the URL, that the receiver runs, and that this box can reach it",
        )
    status = response.status_code
    if ping:
        if response.is_success:
            return ok(check, f"accepted a signed doctor.ping (HTTP {status})")
        return fail(
            check,
            f"refused a signed doctor.ping: HTTP {status}",
            "check the receiver's secret (DARKROOM_WEBHOOKS__SECRET) and its logs",
        )
    if status in (500, 502, 503, 504):  # 501/405: up, just no HEAD
        return warn(check, f"answers HEAD with HTTP {status}", "check the receiver's logs")
    return ok(check, f"reachable (HEAD: HTTP {status}; --ping-webhooks sends a signed event)")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
