"""Task ``bfl-kontext``: FLUX.1 Kontext [pro] / [max] through the Black Forest Labs API.

Asynchronous: ``POST {base_url}/{model}`` (``x-key`` header) with ``prompt``,
``input_image`` (base64) and up to three references as ``input_image_2`` .. ``_4``
(documented as experimental multi-reference), ``seed``, ``output_format`` and
``safety_tolerance`` answers ``{id, polling_url}``. ``GET polling_url`` (with the key) until
``status`` is ``Ready``; then ``result.sample`` — a signed delivery URL, valid for minutes —
is downloaded without the key. When the POST answer has no ``polling_url`` (webhook mode),
``{base_url}/get_result?id=...`` is polled.

The key goes only where BFL documents it: a ``polling_url`` is trusted when it has the same
scheme, host and port as ``base_url`` (itself https, or http only on loopback for tests and
local proxies), or is ``https`` on a host listed in the profile option
``polling_hosts`` (default ``POLLING_HOSTS``: BFL's global and regional API hosts). Anything
else — another domain, a look-alike such as ``api.bfl.ai.evil.example`` or
``evil-bfl.ai``, plain http — is refused before the key is sent.

One task per (input image, seed). The seed is sent, but BFL does not promise that the same
seed reproduces an image (``seed_sent`` True, ``seed_honoured`` False). Request params
(optional): ``aspect_ratio`` ("W:H", between 21:9 and 9:21), ``safety_tolerance`` (0..6,
default 2), ``prompt_upsampling`` (bool), ``output_format`` (png|jpeg, default png).

Spec options (besides :mod:`backends.hosted`'s): ``poll_interval`` (default 0.5 s),
``poll_timeout`` (default 300 s per task), ``polling_hosts``, ``webhook_url`` and
``webhook_secret_env`` (default BFL_WEBHOOK_SECRET). Timeouts: 30 s per HTTP call, the BFL
SDK's (a submit answers at once; the work is polled).

Money: the submit is the paid step. It is resent only on 429 (too many active tasks) or a
connection that never opened; a submit timeout or 5xx is OutcomeUnknown, as is a task still
running at ``poll_timeout`` (it will finish and be charged: submitting again pays twice).

Errors: status ``Request Moderated`` / ``Content Moderated`` -> Refused with the moderation
reasons; ``Error`` / ``Failed`` -> BackendError with every field BFL gave; 402 (no credits),
401/403 (key) and 404 (unknown model endpoint) -> ConfigurationFault; 422 -> InvalidRequest.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from backends import hosted
from backends.base import (
    BackendError,
    ConfigurationFault,
    InvalidRequest,
    ModelSpec,
    OutcomeUnknown,
    Refused,
    Request,
    Result,
)

PROVIDER = "bfl"
BASE_URL = "https://api.bfl.ai/v1"
# BFL's documented API hosts (global and regional) and the regional hosts its polling URLs
# name; exact matches only.
POLLING_HOSTS = (
    "api.bfl.ai",
    "api.eu.bfl.ai",
    "api.us.bfl.ai",
    "api.eu1.bfl.ai",
    "api.eu2.bfl.ai",
    "api.us1.bfl.ai",
    "api.us2.bfl.ai",
)
MAX_REFERENCES = 3  # input_image_2 .. input_image_4
MODERATED = ("Request Moderated", "Content Moderated")
PENDING = ("Pending", "Queued", "Processing")


class BFLKontextBackend(hosted.HostedBackend):
    task: ClassVar[str] = "bfl-kontext"
    provider = PROVIDER
    base_url = BASE_URL
    key_env = "BFL_API_KEY"
    defaults: ClassVar[dict[str, float]] = {"timeout": 30.0, "connect_timeout": 10.0}

    def __init__(self, spec: ModelSpec, cache_dir: Path) -> None:
        super().__init__(spec, cache_dir)
        self._sleep = time.sleep

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-key": key}

    def client_hooks(self) -> dict[str, Any]:
        return {"describe": describe}

    def validate(self, request: Request) -> None:
        hosted.check_request(request, PROVIDER, max_images=1 + MAX_REFERENCES)
        p = request.params
        ratio = p.get("aspect_ratio")
        if ratio is not None:
            match = re.fullmatch(r"(\d+):(\d+)", str(ratio))
            if (
                not match
                or not 9 / 21 <= int(match.group(1)) / max(int(match.group(2)), 1) <= 21 / 9
            ):
                raise InvalidRequest(
                    f"aspect_ratio {ratio!r} must be W:H between 21:9 and 9:21 (e.g. 16:9)"
                )
        tolerance = p.get("safety_tolerance", 2)
        if isinstance(tolerance, bool) or not isinstance(tolerance, int) or not 0 <= tolerance <= 6:
            raise InvalidRequest(
                f"safety_tolerance {tolerance!r} must be a whole number 0..6 (0 strictest)"
            )
        if p.get("output_format", "png") not in ("png", "jpeg"):
            raise InvalidRequest(f"output_format {p['output_format']!r} must be png or jpeg")

    def run(self, request: Request) -> Result:
        self.validate(request)
        self.load()
        started = time.perf_counter()
        fmt = self.spec.option("upload_format", "jpeg")
        references = {
            f"input_image_{k + 2}": hosted.encode(r, fmt)[1]
            for k, r in enumerate(request.references)
        }
        jobs = []
        for i, image in enumerate(request.images):
            images = {"input_image": hosted.encode(image, fmt)[1], **references}
            for seed in request.seeds:
                jobs.append(
                    lambda images=images, seed=seed, i=i: self._task(images, seed, i, request)
                )
        key = f"{PROVIDER}:{self.options.base_url}:{self.spec.model}"
        outputs = hosted.in_parallel(jobs, key, self.options.concurrency)
        return hosted.split(
            self.spec, PROVIDER, outputs, started, aspect_ratio=request.params.get("aspect_ratio")
        )

    def body(self, images: dict[str, str], seed: int, params: Any) -> dict[str, Any]:
        """The submit body (field names as in BFL's FluxKontextProInputs)."""
        body: dict[str, Any] = {
            "prompt": params.get("prompt"),
            **images,
            "seed": int(seed) % 2**32,
            "output_format": params.get("output_format", "png"),
            "safety_tolerance": int(params.get("safety_tolerance", 2)),
            "prompt_upsampling": bool(params.get("prompt_upsampling", False)),
        }
        if params.get("aspect_ratio"):
            body["aspect_ratio"] = params["aspect_ratio"]
        webhook = self.spec.option("webhook_url")
        if webhook:
            body["webhook_url"] = webhook
            secret = os.environ.get(
                str(self.spec.option("webhook_secret_env", "BFL_WEBHOOK_SECRET"))
            )
            if secret:
                body["webhook_secret"] = secret
        return body

    def _task(
        self, images: dict[str, str], seed: int, index: int, request: Request
    ) -> tuple[Any, dict]:
        assert self._client is not None
        body = self.body(images, seed, {**request.params, "prompt": request.prompt})
        started, attempts = time.perf_counter(), [0]
        response = self._client.send(
            "POST",
            f"{self.options.base_url}/{self.spec.model}",
            json=body,
            attempts=attempts,
            paid=True,
        )
        if response.status_code != 200:
            raise self._error(response)
        submitted = response.json()
        task_id = submitted.get("id")
        if not task_id:
            raise OutcomeUnknown(
                f"{PROVIDER} accepted the task but returned no id; not resubmitted"
            )
        poll = submitted.get("polling_url") or f"{self.options.base_url}/get_result?id={task_id}"
        if not self.trusted(poll):
            raise OutcomeUnknown(
                f"{PROVIDER}: polling_url {hosted.origin(poll)} is not "
                f"the configured API host nor a documented BFL host; the key is not sent there "
                f"(task {task_id} was submitted: check base_url, or add the host to the profile "
                "option polling_hosts if BFL documents it)",
                request_id=task_id,
            )
        result, polls = self._wait(poll, task_id, attempts)
        sample = (result.get("result") or {}).get("sample")
        if not sample:
            raise OutcomeUnknown(
                f"{PROVIDER}: task {task_id} is Ready without result.sample", request_id=task_id
            )
        download = self._client.send("GET", sample, auth=False, attempts=attempts)
        if download.status_code != 200:
            raise OutcomeUnknown(
                f"{PROVIDER}: downloading the result of task {task_id} failed: HTTP "
                f"{download.status_code} (the delivery URL expires after minutes)",
                request_id=task_id,
            )
        image = hosted.decode(download.content, PROVIDER, task_id)
        return image, hosted.output(
            self.spec,
            PROVIDER,
            image,
            request_id=task_id,
            seconds=time.perf_counter() - started,
            seed=seed,
            seed_sent=True,
            seed_honoured=False,
            input_index=index,
            attempts=attempts[0],
            polls=polls,
            provider_cost_credits=submitted.get("cost"),
        )

    def _wait(self, url: str, task_id: str, attempts: list[int]) -> tuple[dict[str, Any], int]:
        """The Ready poll answer; Refused / BackendError / OutcomeUnknown for the other ends."""
        assert self._client is not None
        interval = float(self.spec.option("poll_interval", 0.5))
        timeout = float(self.spec.option("poll_timeout", 300.0))
        deadline = time.monotonic() + timeout
        polls = 0
        while True:
            polls += 1
            try:
                response = self._client.send("GET", url, attempts=attempts)
            except BackendError as exc:  # polls are free, but the task runs (and is charged)
                raise OutcomeUnknown(
                    f"{PROVIDER}: polling task {task_id} failed: {exc}", request_id=task_id
                ) from None
            if response.status_code != 200:
                raise OutcomeUnknown(
                    f"{PROVIDER}: polling task {task_id}: {self._client.describe(response)}",
                    request_id=task_id,
                )
            answer = response.json()
            status = answer.get("status")
            if status == "Ready":
                return answer, polls
            if status in MODERATED:
                details = answer.get("details")
                reasons = details.get("Moderation Reasons") if isinstance(details, dict) else None
                detail = f" ({', '.join(map(str, reasons))})" if reasons else ""
                raise Refused(f"refused by {PROVIDER}: {status}{detail} [task {task_id}]")
            if status not in PENDING:
                said = _fields(answer, ("error", "details", "message", "detail"))
                raise BackendError(
                    f"{PROVIDER}: task {task_id} ended with status {status!r}"
                    f"{': ' + said if said else ''}"
                )
            if time.monotonic() + interval > deadline:
                raise OutcomeUnknown(
                    f"{PROVIDER}: task {task_id} still {status} after {timeout:g} s (poll_timeout); "
                    "it will likely finish and be charged, so it is not submitted again",
                    request_id=task_id,
                )
            self._sleep(interval)

    def trusted(self, url: str) -> bool:
        """Same origin as ``base_url`` (https, or http on loopback: see
        :func:`backends.hosted.trusted_base_url`), or https on a documented BFL host (exact
        match); never a URL with a user or password in it."""
        base = urlsplit(self.options.base_url)
        try:
            other = urlsplit(url)
            other_port = other.port
        except ValueError:
            return False
        if other.username is not None or other.password is not None:
            return False
        if (other.scheme, other.hostname, other_port) == (base.scheme, base.hostname, base.port):
            return other.scheme == "https" or hosted.is_loopback_host(other.hostname)
        hosts = [str(h).lower() for h in self.spec.option("polling_hosts", POLLING_HOSTS)]
        return (
            other.scheme == "https"
            and other.port in (None, 443)
            and ((other.hostname or "").lower() in hosts)
        )

    def check(self) -> hosted.ModelCheck:
        """``GET {base_url}/credits`` (free): the key works and has credits. BFL has no model
        list: an unknown endpoint name is reported (and held) on the first job."""
        assert self._client is not None
        response = self._client.send("GET", f"{self.options.base_url}/credits")
        if response.status_code != 200:
            raise self._error(response)
        credits = response.json().get("credits")
        if isinstance(credits, int | float) and credits <= 0:
            raise ConfigurationFault(
                f"{PROVIDER}: the account has no credits left ({credits}): "
                f"buy credits at bfl.ai before running {self.spec.model}"
            )
        return hosted.ModelCheck(
            PROVIDER,
            self.spec.model,
            False,
            f"key accepted, {credits} credits; model ids are not listed by BFL",
        )

    def _error(self, response: Any) -> Exception:
        assert self._client is not None
        message = self._client.describe(response)
        status = response.status_code
        env = self.spec.option("api_key_env", "BFL_API_KEY")
        if status == 402:
            return ConfigurationFault(
                f"{PROVIDER}: out of credits: {message} (buy credits at "
                "bfl.ai; the job waits for the operator, nothing was charged)"
            )
        if status == 404:
            return ConfigurationFault(
                f"{PROVIDER} does not know model {self.spec.model}: {message} (the model is the "
                "endpoint name, e.g. flux-kontext-pro or flux-kontext-max: set profiles.<name>.model)"
            )
        if status in (401, 403):
            return ConfigurationFault(
                f"{PROVIDER} refused the API key (from {env} or its credential): {message}"
            )
        if 400 <= status < 500:
            return InvalidRequest(
                f"{PROVIDER} rejected the request for {self.spec.model}: {message}"
            )
        return BackendError(f"{PROVIDER}: {message}")


def _fields(body: Any, names: tuple[str, ...]) -> str:
    """Every non-empty field of ``names`` in ``body``, as text, without repeats."""
    if not isinstance(body, dict):
        return str(body or "")[:300]
    said: list[str] = []
    for name in names:
        value = body.get(name)
        if isinstance(value, list):  # FastAPI-style 422: [{"loc": [...], "msg": "..."}]
            value = "; ".join(
                f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', '')}"
                if isinstance(d, dict)
                else str(d)
                for d in value
            )
        elif isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        text = str(value).strip() if value not in (None, "") else ""
        if text and text not in said:
            said.append(text)
    return "; ".join(said)[:500]


def describe(response: Any) -> str:
    """BFL's own words from an error body: ``detail`` (text or FastAPI list), ``message``,
    ``error``, ``title``, ``status`` — whichever it sent."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return _fields(body, ("detail", "message", "error", "title", "status")) or str(body)[:300]


__all__ = ["BFLKontextBackend"]
