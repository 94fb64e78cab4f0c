"""Task ``seedream``: ByteDance Seedream 4.x through the BytePlus ModelArk images API.

``POST {base_url}/images/generations`` with ``Authorization: Bearer <ARK_API_KEY>``. For
each input image: ``image`` is a list of data URIs (the input first, then the references),
``response_format`` is ``b64_json``, ``watermark`` false. Several seeds become one request
with ``sequential_image_generation: "auto"`` and
``sequential_image_generation_options.max_images`` = the number still wanted (the provider
caps input + output images at 15, so large batches are split); the returned images are
mapped to the seeds in order. "auto" lets the model return fewer images than asked: the
remainder is requested again, at most ``max_rounds`` (default 3) times per input.

Seedream 4.x does not take a seed by default (``seed_honoured`` False); profile option
``send_seed: true`` sends the first seed of each request for models that do.

Request params (optional): ``size`` — a preset in the profile option ``sizes``
(``1K``/``2K``/``4K``) or ``WIDTHxHEIGHT`` with a total of 1280x720 .. 4096x4096 pixels and
an aspect ratio within 1/16 .. 16.

Errors: ``error.code`` containing ``SensitiveContent`` (input or output moderation) ->
InvalidRequest("refused by seedream: ..."); ``InvalidEndpointOrModel`` / ``ModelNotOpen`` /
404 -> ModelUnavailable; 401/403 -> ModelUnavailable (the key); other 400s ->
InvalidRequest; 429 / 5xx retried, then BackendError.
"""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar

from backends import hosted
from backends.base import BackendError, InvalidRequest, ModelUnavailable, Request, Result

PROVIDER = "seedream"
BASE_URL = "https://ark.ap-southeast.bytepluses.com/api/v3"
MAX_TOTAL_IMAGES = 15  # input + reference + generated images in one request
MIN_PIXELS, MAX_PIXELS = 1280 * 720, 4096 * 4096


class SeedreamBackend(hosted.HostedBackend):
    task: ClassVar[str] = "seedream"
    provider = PROVIDER
    base_url = BASE_URL
    key_env = "ARK_API_KEY"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def client_hooks(self) -> dict[str, Any]:
        return {"describe": _describe}

    def validate(self, request: Request) -> None:
        hosted.check_request(request, PROVIDER, max_images=int(self.spec.option("max_input_images", 14)))
        size = request.params.get("size")
        sizes = list(self.spec.option("sizes", ["1K", "2K", "4K"]))
        if size is None or size in sizes:
            return
        match = re.fullmatch(r"(\d+)x(\d+)", str(size))
        if not match:
            raise InvalidRequest(f"size {size!r} must be one of {', '.join(sizes)} or WIDTHxHEIGHT (2048x2048)")
        width, height = int(match.group(1)), int(match.group(2))
        if not MIN_PIXELS <= width * height <= MAX_PIXELS or not 1 / 16 <= width / max(height, 1) <= 16:
            raise InvalidRequest(f"size {size} is outside what {self.spec.model} makes: between 1280x720 "
                                 "and 4096x4096 pixels in total, aspect ratio within 1:16 .. 16:1")

    def run(self, request: Request) -> Result:
        self.validate(request)
        self.load()
        started = time.perf_counter()
        fmt = self.spec.option("upload_format", "jpeg")
        references = [_data_uri(r, fmt) for r in request.references]
        per_request = MAX_TOTAL_IMAGES - 1 - len(references)
        jobs = []
        for i, image in enumerate(request.images):
            inputs = [_data_uri(image, fmt), *references]
            seeds = list(request.seeds)
            for start in range(0, len(seeds), per_request):
                chunk = seeds[start:start + per_request]
                jobs.append(lambda inputs=inputs, chunk=chunk, i=i: self._batch(inputs, chunk, i, request))
        key = f"{PROVIDER}:{self.options.base_url}:{self.spec.model}"
        try:
            batches = hosted.in_parallel(jobs, key, self.options.concurrency)
        except hosted.Refused as exc:
            raise InvalidRequest(f"refused by {PROVIDER}: {exc}") from None
        outputs = [item for batch in batches for item in batch]
        return Result(
            images=[image for image, _ in outputs],
            seconds=time.perf_counter() - started,
            info=hosted.summary(self.spec, PROVIDER, [info for _, info in outputs],
                                size=request.params.get("size")),
        )

    def _batch(self, inputs: list[str], seeds: list[int], index: int, request: Request) -> list[tuple[Any, dict]]:
        """Images for ``seeds`` (in order) from as few requests as the provider allows."""
        results: list[tuple[Any, dict]] = []
        rounds = int(self.spec.option("max_rounds", 3))
        for _ in range(rounds):
            wanted = seeds[len(results):]
            if not wanted:
                break
            results.extend(self._call(inputs, wanted, index, request))
        if len(results) < len(seeds):
            raise BackendError(f"{PROVIDER} returned {len(results)} of {len(seeds)} images after "
                               f"{rounds} requests (sequential generation decides the count itself)")
        return results

    def _call(self, inputs: list[str], seeds: list[int], index: int, request: Request) -> list[tuple[Any, dict]]:
        assert self._client is not None
        body: dict[str, Any] = {
            "model": self.spec.model, "prompt": request.prompt, "image": inputs,
            "response_format": "b64_json", "watermark": bool(self.spec.option("watermark", False)),
            "stream": False,
        }
        if request.params.get("size"):
            body["size"] = request.params["size"]
        if len(seeds) > 1:
            body["sequential_image_generation"] = "auto"
            body["sequential_image_generation_options"] = {"max_images": len(seeds)}
        else:
            body["sequential_image_generation"] = "disabled"
        honoured = bool(self.spec.option("send_seed", False))
        if honoured:
            body["seed"] = int(seeds[0]) % 2**31
        started, attempts = time.perf_counter(), [0]
        response = self._client.send("POST", f"{self.options.base_url}/images/generations",
                                     json=body, attempts=attempts)
        if response.status_code != 200:
            raise self._error(response)
        data = response.json()
        request_id = response.headers.get("x-request-id") or data.get("id")
        items = data.get("data") or []
        images = []
        for item in items[:len(seeds)]:
            error = item.get("error")
            if error:
                code, text = error.get("code", ""), error.get("message", "")
                if "Sensitive" in code:
                    raise hosted.Refused(f"{code}: {text} [request {request_id}]")
                raise BackendError(f"{PROVIDER}: image failed ({code}: {text}) [request {request_id}]")
            if not item.get("b64_json"):
                raise BackendError(f"{PROVIDER} returned no b64_json (response_format ignored?) "
                                   f"[request {request_id}]")
            images.append(hosted.decode(item["b64_json"], PROVIDER))
        if not images:
            raise BackendError(f"{PROVIDER} returned no images [request {request_id}]")
        seconds = (time.perf_counter() - started) / len(images)
        return [
            (image, hosted.output(self.spec, PROVIDER, image, request_id=request_id, seconds=seconds,
                                  seed=seed, seed_honoured=honoured and k == 0, input_index=index,
                                  attempts=attempts[0], preset=request.params.get("size"),
                                  batch_position=k, batch_size=len(images)))
            for k, (image, seed) in enumerate(zip(images, seeds, strict=False))
        ]

    def _error(self, response: Any) -> Exception:
        assert self._client is not None
        message = self._client.describe(response)
        code = _code(response)
        if "Sensitive" in code:
            return InvalidRequest(f"refused by {PROVIDER}: {message}")
        if response.status_code == 404 or code.startswith(("InvalidEndpointOrModel", "ModelNotOpen")):
            return ModelUnavailable(f"{PROVIDER} does not know model {self.spec.model}: {message} "
                                    "(use a model id or endpoint id enabled in the ModelArk console)")
        if response.status_code in (401, 403) or code.startswith("Authentication"):
            env = self.spec.option("api_key_env", "ARK_API_KEY")
            return ModelUnavailable(f"{PROVIDER} refused the API key (from {env} or its credential): {message}")
        if 400 <= response.status_code < 500:
            return InvalidRequest(f"{PROVIDER} rejected the request for {self.spec.model}: {message}")
        return BackendError(f"{PROVIDER}: {message}")



def _data_uri(image: Any, fmt: str) -> str:
    mime, data = hosted.encode(image, fmt)
    return f"data:{mime};base64,{data}"


def _code(response: Any) -> str:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return ""
    return str(error.get("code", "")) if isinstance(error, dict) else ""


def _describe(response: Any) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        return response.text[:300]
    return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")


__all__ = ["SeedreamBackend"]
