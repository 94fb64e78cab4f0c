"""Task ``bfl-kontext``: FLUX.1 Kontext [pro] / [max] through the Black Forest Labs API.

Asynchronous: ``POST {base_url}/{model}`` (``x-key`` header) with ``prompt``,
``input_image`` (base64) and up to three references as ``input_image_2`` .. ``_4``
(documented as experimental multi-reference), ``seed``, ``output_format`` and
``safety_tolerance`` answers ``{id, polling_url}``. ``GET polling_url`` (with the key, and
only on the API's own domain) until ``status`` is ``Ready``; then ``result.sample`` — a
signed delivery URL, valid for minutes — is downloaded without the key. When the POST
answer has no ``polling_url`` (webhook mode), ``{base_url}/get_result?id=...`` is polled.

One task per (input image, seed); BFL honours the seed. Request params (optional):
``aspect_ratio`` ("W:H", between 21:9 and 9:21), ``safety_tolerance`` (0..6, default 2),
``prompt_upsampling`` (bool), ``output_format`` (png|jpeg, default png).

Spec options (besides :mod:`backends.hosted`'s): ``poll_interval`` (default 0.5 s),
``poll_timeout`` (default 300 s per task), ``webhook_url`` and ``webhook_secret_env``
(default BFL_WEBHOOK_SECRET): forwarded so that the provider also notifies a reachable
daemon; the backend still polls, since a worker has to return the image itself.

Status ``Request Moderated`` / ``Content Moderated`` -> InvalidRequest("refused by bfl: ...");
``Error`` / ``Task not found`` / a task past ``poll_timeout`` -> BackendError (retryable);
404 on submit -> ModelUnavailable; 401/403 -> ModelUnavailable (the key); 402 (no
credits) -> BackendError; 422 -> InvalidRequest; 429 / 5xx retried, then BackendError.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from backends import hosted
from backends.base import BackendError, InvalidRequest, ModelSpec, ModelUnavailable, Request, Result

PROVIDER = "bfl"
BASE_URL = "https://api.bfl.ai/v1"
MAX_REFERENCES = 3  # input_image_2 .. input_image_4
MODERATED = ("Request Moderated", "Content Moderated")
PENDING = ("Pending", "Queued", "Processing")


class BFLKontextBackend(hosted.HostedBackend):
    task: ClassVar[str] = "bfl-kontext"
    provider = PROVIDER
    base_url = BASE_URL
    key_env = "BFL_API_KEY"

    def __init__(self, spec: ModelSpec, cache_dir: Path) -> None:
        super().__init__(spec, cache_dir)
        self._sleep = time.sleep

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-key": key}

    def client_hooks(self) -> dict[str, Any]:
        return {"describe": _describe}

    def validate(self, request: Request) -> None:
        hosted.check_request(request, PROVIDER, max_images=1 + MAX_REFERENCES)
        p = request.params
        ratio = p.get("aspect_ratio")
        if ratio is not None:
            match = re.fullmatch(r"(\d+):(\d+)", str(ratio))
            if not match or not 9 / 21 <= int(match.group(1)) / max(int(match.group(2)), 1) <= 21 / 9:
                raise InvalidRequest(f"aspect_ratio {ratio!r} must be W:H between 21:9 and 9:21 (e.g. 16:9)")
        tolerance = p.get("safety_tolerance", 2)
        if isinstance(tolerance, bool) or not isinstance(tolerance, int) or not 0 <= tolerance <= 6:
            raise InvalidRequest(f"safety_tolerance {tolerance!r} must be a whole number 0..6 (0 strictest)")
        if p.get("output_format", "png") not in ("png", "jpeg"):
            raise InvalidRequest(f"output_format {p['output_format']!r} must be png or jpeg")

    def run(self, request: Request) -> Result:
        self.validate(request)
        self.load()
        started = time.perf_counter()
        fmt = self.spec.option("upload_format", "jpeg")
        references = {f"input_image_{k + 2}": hosted.encode(r, fmt)[1] for k, r in enumerate(request.references)}
        jobs = []
        for i, image in enumerate(request.images):
            images = {"input_image": hosted.encode(image, fmt)[1], **references}
            for seed in request.seeds:
                jobs.append(lambda images=images, seed=seed, i=i: self._task(images, seed, i, request))
        key = f"{PROVIDER}:{self.options.base_url}:{self.spec.model}"
        try:
            outputs = hosted.in_parallel(jobs, key, self.options.concurrency)
        except hosted.Refused as exc:
            raise InvalidRequest(f"refused by {PROVIDER}: {exc}") from None
        return hosted.split(self.spec, PROVIDER, outputs, started, aspect_ratio=request.params.get("aspect_ratio"))

    def _task(self, images: dict[str, str], seed: int, index: int, request: Request) -> tuple[Any, dict]:
        assert self._client is not None
        p = request.params
        body: dict[str, Any] = {
            "prompt": request.prompt, **images, "seed": int(seed) % 2**32,
            "output_format": p.get("output_format", "png"),
            "safety_tolerance": int(p.get("safety_tolerance", 2)),
            "prompt_upsampling": bool(p.get("prompt_upsampling", False)),
        }
        if p.get("aspect_ratio"):
            body["aspect_ratio"] = p["aspect_ratio"]
        webhook = self.spec.option("webhook_url")
        if webhook:
            body["webhook_url"] = webhook
            secret = os.environ.get(str(self.spec.option("webhook_secret_env", "BFL_WEBHOOK_SECRET")))
            if secret:
                body["webhook_secret"] = secret
        started, attempts = time.perf_counter(), [0]
        response = self._client.send("POST", f"{self.options.base_url}/{self.spec.model}",
                                     json=body, attempts=attempts)
        if response.status_code != 200:
            raise self._error(response)
        submitted = response.json()
        task_id = submitted.get("id")
        if not task_id:
            raise BackendError(f"{PROVIDER} accepted the task but returned no id")
        poll = submitted.get("polling_url") or f"{self.options.base_url}/get_result?id={task_id}"
        if not self._trusted(poll):
            raise BackendError(f"{PROVIDER}: polling_url {urlsplit(poll).netloc} is not on the API's "
                               "domain; the key is not sent there (check base_url)")
        result, polls = self._wait(poll, task_id, attempts)
        sample = (result.get("result") or {}).get("sample")
        if not sample:
            raise BackendError(f"{PROVIDER}: task {task_id} is Ready without result.sample")
        download = self._client.send("GET", sample, auth=False, attempts=attempts)
        if download.status_code != 200:
            raise BackendError(f"{PROVIDER}: downloading the result of task {task_id} failed: "
                               f"HTTP {download.status_code} (the delivery URL expires after minutes)")
        image = hosted.decode(download.content, PROVIDER)
        return image, hosted.output(
            self.spec, PROVIDER, image, request_id=task_id, seconds=time.perf_counter() - started,
            seed=seed, seed_honoured=True, input_index=index, attempts=attempts[0], polls=polls,
            provider_cost_credits=submitted.get("cost"),
        )

    def _wait(self, url: str, task_id: str, attempts: list[int]) -> tuple[dict[str, Any], int]:
        """The Ready poll answer; Refused / BackendError for the other end states."""
        assert self._client is not None
        interval = float(self.spec.option("poll_interval", 0.5))
        deadline = time.monotonic() + float(self.spec.option("poll_timeout", 300.0))
        polls = 0
        while True:
            polls += 1
            response = self._client.send("GET", url, attempts=attempts)
            if response.status_code != 200:
                raise BackendError(f"{PROVIDER}: polling task {task_id}: {self._client.describe(response)}")
            answer = response.json()
            status = answer.get("status")
            if status == "Ready":
                return answer, polls
            if status in MODERATED:
                reasons = (answer.get("details") or {}).get("Moderation Reasons") if isinstance(
                    answer.get("details"), dict) else None
                detail = f" ({', '.join(map(str, reasons))})" if reasons else ""
                raise hosted.Refused(f"{status}{detail} [task {task_id}]")
            if status not in PENDING:
                detail = answer.get("error") or answer.get("details") or ""
                raise BackendError(f"{PROVIDER}: task {task_id} ended with status {status!r} {detail}".strip())
            if time.monotonic() + interval > deadline:
                raise BackendError(f"{PROVIDER}: task {task_id} still {status} after "
                                   f"{self.spec.option('poll_timeout', 300.0)} s (poll_timeout)")
            self._sleep(interval)

    def _trusted(self, url: str) -> bool:
        """Only the API's host, or a host of the same domain (api.us1.bfl.ai for api.bfl.ai)."""
        base, other = urlsplit(self.options.base_url).hostname or "", urlsplit(url).hostname or ""
        if other == base:
            return True
        try:
            ipaddress.ip_address(base)
            return False
        except ValueError:
            domain = ".".join(base.split(".")[-2:])
            return other.endswith("." + domain)

    def _error(self, response: Any) -> Exception:
        assert self._client is not None
        message = self._client.describe(response)
        status = response.status_code
        if status == 404:
            return ModelUnavailable(f"{PROVIDER} does not know model {self.spec.model}: {message} "
                                    "(the model is the endpoint name: flux-kontext-pro, flux-kontext-max)")
        if status in (401, 403):
            env = self.spec.option("api_key_env", "BFL_API_KEY")
            return ModelUnavailable(f"{PROVIDER} refused the API key (from {env} or its credential): {message}")
        if status == 402:
            return BackendError(f"{PROVIDER}: out of credits: {message}")
        if 400 <= status < 500:
            return InvalidRequest(f"{PROVIDER} rejected the request for {self.spec.model}: {message}")
        return BackendError(f"{PROVIDER}: {message}")



def _describe(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI-style 422: [{"loc": [...], "msg": "..."}]
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', '')}" for d in detail)
    return str(detail or body)[:300]


__all__ = ["BFLKontextBackend"]
