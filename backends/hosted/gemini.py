"""Task ``gemini-image``: Google Gemini image models ("Nano Banana") through the Gemini API.

One ``POST {base_url}/models/{model}:generateContent`` per (input image, seed), key in the
``x-goog-api-key`` header. The request is one user turn: the prompt as a text part, then
the input image and each reference as ``inline_data`` parts (base64 JPEG by default);
``generationConfig`` asks for ``responseModalities`` TEXT+IMAGE and, when the step sets
them, ``imageConfig.aspectRatio`` / ``imageConfig.imageSize``. The first ``inlineData``
image part of the first candidate is the output; text parts are kept in the info.

Request params (optional):

- ``size``          an output size preset the model supports (profile option ``image_sizes``:
                    ``1K``/``2K``/``4K`` for gemini-3-pro-image, none for gemini-2.5-flash-image);
- ``aspect_ratio``  one of ``ASPECT_RATIOS`` (default: the model follows the input image).

Seeds are sent as ``generationConfig.seed``; the API does not promise that an image model
honours them (``seed_honoured`` is False in the info).

Spec options (besides those in :mod:`backends.hosted`): ``max_input_images`` (default 14:
the input plus references), ``image_sizes``, ``upload_format`` (jpeg|png),
``response_modalities``.

Errors: HTTP 404 / NOT_FOUND -> ModelUnavailable("gemini does not know model ..."); a bad or
missing key (400 API_KEY_INVALID, 401, 403) -> ModelUnavailable; other 400s -> InvalidRequest;
``promptFeedback.blockReason`` or a safety ``finishReason`` -> InvalidRequest("refused by
gemini: ..."); 429 / 5xx are retried (``RetryInfo.retryDelay`` honoured like Retry-After),
then BackendError.
"""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar

from backends import hosted
from backends.base import BackendError, InvalidRequest, ModelUnavailable, Request, Result

PROVIDER = "gemini"
BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
# finishReason / blockReason values that mean "refused", not "failed".
REFUSALS = frozenset({"SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT",
                      "BLOCKLIST", "SPII", "RECITATION", "IMAGE_RECITATION"})


class GeminiImageBackend(hosted.HostedBackend):
    task: ClassVar[str] = "gemini-image"
    provider = PROVIDER
    base_url = BASE_URL
    key_env = "GEMINI_API_KEY"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key}

    def client_hooks(self) -> dict[str, Any]:
        return {"describe": _describe, "wait_hint": _retry_delay}

    def validate(self, request: Request) -> None:
        hosted.check_request(request, PROVIDER, max_images=int(self.spec.option("max_input_images", 14)))
        size = request.params.get("size")
        sizes = list(self.spec.option("image_sizes", []))
        if size is not None and size not in sizes:
            supported = f"one of {', '.join(sizes)}" if sizes else "left out: it has no size presets"
            raise InvalidRequest(f"size {size!r} is not a preset of {self.spec.model}: use {supported}")
        ratio = request.params.get("aspect_ratio")
        if ratio is not None and ratio not in ASPECT_RATIOS:
            raise InvalidRequest(f"aspect_ratio {ratio!r} must be one of {', '.join(ASPECT_RATIOS)}")

    def run(self, request: Request) -> Result:
        self.validate(request)
        self.load()
        started = time.perf_counter()
        fmt = self.spec.option("upload_format", "jpeg")
        references = [_image_part(r, fmt) for r in request.references]
        jobs = []
        for i, image in enumerate(request.images):
            parts = [{"text": request.prompt}, _image_part(image, fmt), *references]
            for seed in request.seeds:
                jobs.append(lambda parts=parts, seed=seed, i=i: self._one(parts, seed, i, request))
        key = f"{PROVIDER}:{self.options.base_url}:{self.spec.model}"
        try:
            outputs = hosted.in_parallel(jobs, key, self.options.concurrency)
        except hosted.Refused as exc:
            raise InvalidRequest(f"refused by {PROVIDER}: {exc}") from None
        return hosted.split(self.spec, PROVIDER, outputs, started, size=request.params.get("size"),
                            aspect_ratio=request.params.get("aspect_ratio"))

    def _one(self, parts: list[dict[str, Any]], seed: int, index: int, request: Request) -> tuple[Any, dict]:
        assert self._client is not None
        config: dict[str, Any] = {
            "responseModalities": list(self.spec.option("response_modalities", ["TEXT", "IMAGE"])),
            "candidateCount": 1,
            "seed": int(seed) % 2**31,
        }
        image_config = {}
        if request.params.get("aspect_ratio"):
            image_config["aspectRatio"] = request.params["aspect_ratio"]
        if request.params.get("size"):
            image_config["imageSize"] = request.params["size"]
        if image_config:
            config["imageConfig"] = image_config
        body = {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}
        url = f"{self.options.base_url}/models/{self.spec.model}:generateContent"
        started, attempts = time.perf_counter(), [0]
        response = self._client.send("POST", url, json=body, attempts=attempts)
        if response.status_code != 200:
            raise self._error(response)
        data = response.json()
        request_id = data.get("responseId")
        image, text = _first_image(data, request_id)
        return image, hosted.output(
            self.spec, PROVIDER, image, request_id=request_id, seconds=time.perf_counter() - started,
            seed=seed, seed_honoured=False, input_index=index, attempts=attempts[0],
            preset=request.params.get("size") or self.spec.option("default_size"),
            model_version=data.get("modelVersion"), text=text or None,
            output_tokens=(data.get("usageMetadata") or {}).get("candidatesTokenCount"),
        )

    def _error(self, response: Any) -> Exception:
        assert self._client is not None
        message = self._client.describe(response)
        status = _status(response)
        env = self.spec.option("api_key_env", "GEMINI_API_KEY")
        if response.status_code == 404 or status == "NOT_FOUND":
            return ModelUnavailable(f"{PROVIDER} does not know model {self.spec.model}: {message} "
                                    "(set the profile's model to a current Gemini image model)")
        if response.status_code in (401, 403) or "API_KEY" in response.text or status == "PERMISSION_DENIED":
            return ModelUnavailable(f"{PROVIDER} refused the API key (from {env} or its credential): {message}")
        if status == "FAILED_PRECONDITION":
            return ModelUnavailable(f"{PROVIDER} cannot serve {self.spec.model} to this account: {message}")
        if 400 <= response.status_code < 500:
            return InvalidRequest(f"{PROVIDER} rejected the request for {self.spec.model}: {message}")
        return BackendError(f"{PROVIDER}: {message}")



def _image_part(image: Any, fmt: str) -> dict[str, Any]:
    mime, data = hosted.encode(image, fmt)
    return {"inline_data": {"mime_type": mime, "data": data}}


def _first_image(data: dict[str, Any], request_id: str | None) -> tuple[Any, str]:
    """The first image of the first candidate, or Refused / BackendError with the reason."""
    feedback = data.get("promptFeedback") or {}
    if feedback.get("blockReason"):
        reason = feedback["blockReason"]
        detail = feedback.get("blockReasonMessage")
        raise hosted.Refused(f"prompt blocked ({reason}){': ' + detail if detail else ''} "
                             f"[request {request_id}]")
    candidates = data.get("candidates") or []
    if not candidates:
        raise BackendError(f"{PROVIDER} returned no candidates [request {request_id}]")
    candidate = candidates[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    texts = [p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought")]
    for part in parts:
        inline = part.get("inlineData") or part.get("inline_data")
        if inline and inline.get("data") and not part.get("thought"):
            return hosted.decode(inline["data"], PROVIDER), " ".join(texts).strip()
    reason = candidate.get("finishReason", "unknown")
    said = candidate.get("finishMessage") or " ".join(texts).strip()
    detail = f"finishReason {reason}{': ' + said[:300] if said else ''} [request {request_id}]"
    if reason in REFUSALS:
        raise hosted.Refused(detail)
    raise BackendError(f"{PROVIDER} returned no image ({detail})")


def _body_error(response: Any) -> dict[str, Any]:
    try:
        error = response.json().get("error")
    except ValueError:
        return {}
    return error if isinstance(error, dict) else {}


def _status(response: Any) -> str | None:
    return _body_error(response).get("status")


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
