"""Task ``gemini-image``: Google Gemini image models ("Nano Banana") through the Gemini API.

One ``POST {base_url}/models/{model}:generateContent`` per (input image, seed), key in the
``x-goog-api-key`` header. The request is one user turn: the prompt as a text part, then the
input image and each reference as ``inlineData`` parts (base64 JPEG by default), the same
wire form google-genai sends; ``generationConfig`` asks for ``responseModalities: ["IMAGE"]``
only (with TEXT allowed the model may answer in words alone: a paid answer with no image)
and, when the step sets them, ``imageConfig.aspectRatio`` / ``imageConfig.imageSize``. The
first image part of the first candidate is the output.

Limits are per model, from the profile (``backends/profiles.py``): ``image_sizes`` (e.g.
``1K``/``2K``/``4K``; ``512`` too on gemini-3.1-flash-image), ``aspect_ratios`` and
``max_input_images`` (input + references). Request params (optional): ``size`` (a preset of
the model) and ``aspect_ratio`` (default: the model follows the input image).

Seeds are sent as ``generationConfig.seed``; Google does not promise that an image model
reproduces an image from it, so ``seed_honoured`` is False.

Timeouts: google-genai sets none by default (it waits as long as the server works); Darkroom
waits ``timeout`` (default 600 s) and tells the server the same deadline (``X-Server-Timeout``,
as google-genai does when given a timeout), so the server stops rather than finishing work
nobody will collect.

Errors: 404 NOT_FOUND (a retired or unknown model), a key refused (API_KEY_INVALID, 401,
403), FAILED_PRECONDITION (billing/region) and 429 RESOURCE_EXHAUSTED for a daily quota
(``limit: 0``, a ``QuotaFailure`` with a per-day quota or a value of 0) ->
ConfigurationFault; other 400s -> InvalidRequest; ``promptFeedback.blockReason`` or a
finishReason that withholds the image (IMAGE_SAFETY, NO_IMAGE, ...) -> Refused with the
provider's reason; per-minute 429s are retried (``RetryInfo.retryDelay`` honoured); a 5xx or
a timeout after sending -> OutcomeUnknown (not resent).
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, ClassVar

from backends import hosted
from backends.base import (
    BackendError,
    ConfigurationFault,
    InvalidRequest,
    OutcomeUnknown,
    Refused,
    Request,
    Result,
)

PROVIDER = "gemini"
BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
# Aspect ratios every Gemini image model takes; a profile's ``aspect_ratios`` may add more.
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")


class GeminiImageBackend(hosted.HostedBackend):
    task: ClassVar[str] = "gemini-image"
    provider = PROVIDER
    base_url = BASE_URL
    key_env = "GEMINI_API_KEY"
    defaults: ClassVar[dict[str, float]] = {"timeout": 600.0, "connect_timeout": 10.0}

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key}

    def client_hooks(self) -> dict[str, Any]:
        deadline = {"x-server-timeout": str(math.ceil(self.options.timeout))}
        return {
            "describe": _describe,
            "wait_hint": _retry_delay,
            "fault": self._fault,
            "headers": deadline,
        }

    def validate(self, request: Request) -> None:
        limit = int(self.spec.option("max_input_images", 14))
        # Gemini makes images from text alone too: a brief's row sends the prompt (and its
        # references) without an input image.
        hosted.check_request(request, PROVIDER, max_images=limit, prompt_only=True)
        size = request.params.get("size")
        sizes = list(self.spec.option("image_sizes", []))
        if size is not None and size not in sizes:
            supported = (
                f"one of {', '.join(sizes)}" if sizes else "left out: it has no size presets"
            )
            raise InvalidRequest(
                f"size {size!r} is not a preset of {self.spec.model}: use {supported}"
            )
        ratio = request.params.get("aspect_ratio")
        ratios = list(self.spec.option("aspect_ratios", ASPECT_RATIOS))
        if ratio is not None and ratio not in ratios:
            raise InvalidRequest(
                f"aspect_ratio {ratio!r} is not one {self.spec.model} makes: use one of "
                f"{', '.join(ratios)}"
            )

    def run(self, request: Request) -> Result:
        self.validate(request)
        self.load()
        started = time.perf_counter()
        fmt = self.spec.option("upload_format", "jpeg")
        references = [_image_part(r, fmt) for r in request.references]
        jobs = []
        # A prompt-only request (a brief) is one "input" without an image part.
        inputs = [[_image_part(image, fmt)] for image in request.images] or [[]]
        for i, image_parts in enumerate(inputs):
            parts = [{"text": request.prompt}, *image_parts, *references]
            for seed in request.seeds:
                jobs.append(lambda parts=parts, seed=seed, i=i: self._one(parts, seed, i, request))
        key = f"{PROVIDER}:{self.options.base_url}:{self.spec.model}"
        outputs = hosted.in_parallel(jobs, key, self.options.concurrency)
        return hosted.split(
            self.spec,
            PROVIDER,
            outputs,
            started,
            size=request.params.get("size"),
            aspect_ratio=request.params.get("aspect_ratio"),
        )

    def body(self, parts: list[dict[str, Any]], seed: int, params: Any) -> dict[str, Any]:
        """The generateContent body (REST/JSON field names, as google-genai sends them)."""
        config: dict[str, Any] = {
            "responseModalities": list(self.spec.option("response_modalities", ["IMAGE"])),
            "candidateCount": 1,
            "seed": int(seed) % 2**31,
        }
        image_config = {}
        if params.get("aspect_ratio"):
            image_config["aspectRatio"] = params["aspect_ratio"]
        if params.get("size"):
            image_config["imageSize"] = params["size"]
        if image_config:
            config["imageConfig"] = image_config
        return {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}

    def _one(
        self, parts: list[dict[str, Any]], seed: int, index: int, request: Request
    ) -> tuple[Any, dict]:
        assert self._client is not None
        body = self.body(parts, seed, request.params)
        url = f"{self.options.base_url}/models/{self.spec.model}:generateContent"
        started, attempts = time.perf_counter(), [0]
        response = self._client.send("POST", url, json=body, attempts=attempts, paid=True)
        if response.status_code != 200:
            raise self._error(response)
        data = response.json()
        request_id = data.get("responseId") or hosted.header_request_id(response)
        image = _first_image(data, request_id)
        usage = data.get("usageMetadata") or {}
        return image, hosted.output(
            self.spec,
            PROVIDER,
            image,
            request_id=request_id,
            seconds=time.perf_counter() - started,
            seed=seed,
            seed_sent=True,
            seed_honoured=False,
            input_index=index,
            attempts=attempts[0],
            preset=request.params.get("size") or self.spec.option("default_size"),
            model_version=data.get("modelVersion"),
            output_tokens=usage.get("candidatesTokenCount"),
        )

    def check(self) -> hosted.ModelCheck:
        """``GET models/{model}`` (free): the model exists for this key and generates content."""
        assert self._client is not None
        response = self._client.send("GET", f"{self.options.base_url}/models/{self.spec.model}")
        if response.status_code != 200:
            raise self._error(response)
        data = response.json()
        methods = data.get("supportedGenerationMethods") or []
        if methods and "generateContent" not in methods:
            raise ConfigurationFault(
                f"{PROVIDER}: model {self.spec.model} exists but does not support generateContent "
                f"({', '.join(methods)}): set the profile's model to a Gemini image model"
            )
        return hosted.ModelCheck(
            PROVIDER,
            self.spec.model,
            True,
            f"{data.get('displayName') or data.get('name')} (version {data.get('version', '?')})",
        )

    def _fault(self, response: Any, message: str) -> Exception | None:
        """A 429 for a daily quota (or a quota of 0) is not transient: retrying pays nothing
        but fails until the quota resets or billing changes."""
        if response.status_code != 429 or not _daily_quota(response):
            return None
        return ConfigurationFault(
            f"{PROVIDER}: the quota of this key for {self.spec.model} is used up or zero: "
            f"{message} (enable billing or raise the quota in Google AI Studio; per-minute limits "
            "are retried, daily ones wait for the operator)"
        )

    def _error(self, response: Any) -> Exception:
        assert self._client is not None
        message = self._client.describe(response)
        status = _status(response)
        env = self.spec.option("api_key_env", "GEMINI_API_KEY")
        if response.status_code == 404 or status == "NOT_FOUND":
            return ConfigurationFault(
                f"{PROVIDER} does not know model {self.spec.model}: {message} (it may be retired: "
                "set profiles.<name>.model in the config to a current Gemini image model, see "
                "docs/hosted.md)"
            )
        if (
            response.status_code in (401, 403)
            or "API_KEY" in response.text
            or status in ("PERMISSION_DENIED", "UNAUTHENTICATED")
        ):
            return ConfigurationFault(
                f"{PROVIDER} refused the API key (from {env} or its credential): {message}"
            )
        if status == "FAILED_PRECONDITION":
            return ConfigurationFault(
                f"{PROVIDER} cannot serve {self.spec.model} to this account (billing or region): "
                f"{message}"
            )
        if 400 <= response.status_code < 500:
            return InvalidRequest(
                f"{PROVIDER} rejected the request for {self.spec.model}: {message}"
            )
        return BackendError(f"{PROVIDER}: {message}")


def _image_part(image: Any, fmt: str) -> dict[str, Any]:
    mime, data = hosted.encode(image, fmt)
    return {"inlineData": {"mimeType": mime, "data": data}}


def _first_image(data: dict[str, Any], request_id: str | None) -> Any:
    """The first image of the first candidate, or Refused with the provider's reason."""
    feedback = data.get("promptFeedback") or {}
    if feedback.get("blockReason"):
        reason = feedback["blockReason"]
        detail = feedback.get("blockReasonMessage")
        raise Refused(
            f"refused by {PROVIDER}: prompt blocked ({reason})"
            f"{': ' + detail if detail else ''} [request {request_id}]"
        )
    candidates = data.get("candidates") or []
    if not candidates:
        raise OutcomeUnknown(
            f"{PROVIDER} answered with no candidate and no block reason "
            f"[request {request_id}]; not requested again",
            request_id=request_id,
        )
    candidate = candidates[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    for part in parts:
        inline = part.get("inlineData") or part.get("inline_data")
        if inline and inline.get("data") and not part.get("thought"):
            return hosted.decode(inline["data"], PROVIDER, request_id)
    texts = [p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought")]
    reason = candidate.get("finishReason", "unknown")
    said = candidate.get("finishMessage") or " ".join(texts).strip()
    detail = f"finishReason {reason}{': ' + said[:300] if said else ''} [request {request_id}]"
    # With IMAGE the only modality asked for, an answer without an image is the model declining
    # (whatever the finishReason): the same request is declined again, and charged again.
    raise Refused(f"refused by {PROVIDER}: no image ({detail})")


def _body_error(response: Any) -> dict[str, Any]:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def _status(response: Any) -> str | None:
    return _body_error(response).get("status")


def _daily_quota(response: Any) -> bool:
    error = _body_error(response)
    if re.search(r"\blimit: 0\b", str(error.get("message", ""))):
        return True
    for detail in error.get("details") or []:
        for violation in (detail.get("violations") or []) if isinstance(detail, dict) else []:
            quota = str(violation.get("quotaId", "")) + str(violation.get("quotaMetric", ""))
            if str(violation.get("quotaValue", "")) == "0" or "PerDay" in quota:
                return True
    return False


def _describe(response: Any) -> str:
    error = _body_error(response)
    if not error:
        return response.text[:300]
    return f"{error.get('status', '')} {error.get('message', '')}".strip()


def _retry_delay(response: Any) -> float | None:
    """``google.rpc.RetryInfo.retryDelay`` ("37s") from a 429 body, if any."""
    for detail in _body_error(response).get("details") or []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(delay or ""))
        if match:
            return float(match.group(1))
    return None


__all__ = ["GeminiImageBackend"]
