"""Task ``seedream``: ByteDance Seedream 4.x through the BytePlus ModelArk images API.

``POST {base_url}/images/generations`` with ``Authorization: Bearer <ARK_API_KEY>``, **one
request per (input image, seed)**: ``image`` is a list of data URIs (the input first, then
the references), ``sequential_image_generation: "disabled"`` (one image per request: in
"auto" mode the model decides how many images to return, so a batch could be paid for and
still come back short), ``response_format: "b64_json"``, ``watermark`` false, and always an
explicit ``size`` of ``WIDTHxHEIGHT``: without one the service returns a 2048x2048 square
whatever the input's shape.

The size: the step's ``size`` param, either ``WIDTHxHEIGHT`` (checked against the model's
limits) or a preset (``1K``/``2K``/``4K``, default the profile's ``default_size``) turned
into about that many pixels at the input image's aspect ratio, clamped to the model's pixel
range (``min_pixels`` .. ``max_pixels``) and aspect range (1:``max_aspect`` ..
``max_aspect``:1), sides multiples of 8. The limits are per model, in the profile.

Seeds: Seedream 4.x does not take one (the SDK's ``seed`` is for older models), so it is
not sent (``seed_sent``/``seed_honoured`` False); profile option ``send_seed: true`` sends it
for a model that documents it.

Timeouts: the Ark SDK's (``byteplussdkarkruntime``): 600 s to answer, 60 s to connect.

Errors: ``error.code`` with ``SensitiveContent``, ``RiskDetection`` or ``PolicyViolation`` (input
or output moderation, the whole request or one image) -> Refused with the code and message;
``InvalidEndpointOrModel`` / ``ModelNotOpen`` / 404, a refused key (401/403,
``AuthenticationError``), ``AccountOverdue``, ``QuotaExceeded`` / ``SetLimitExceeded`` (the
account's limits) -> ConfigurationFault; other 400s -> InvalidRequest; rate limits (429
``RateLimitExceeded``, ``ServerOverloaded``) retried; 5xx or a timeout after sending ->
OutcomeUnknown (not resent).
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

PROVIDER = "seedream"
BASE_URL = "https://ark.ap-southeast.bytepluses.com/api/v3"
PRESET_PIXELS = {"1K": 1024 * 1024, "2K": 2048 * 2048, "4K": 4096 * 4096}
REFUSAL_CODES = ("SensitiveContent", "RiskDetection", "PolicyViolation")
# Account state, not the request: hold the job until the operator fixes it.
ACCOUNT_CODES = (
    "InvalidEndpointOrModel",
    "ModelNotOpen",
    "Authentication",
    "AccessDenied",
    "AccountOverdue",
    "QuotaExceeded",
    "SetLimitExceeded",
    "InvalidAccountStatus",
)


class SeedreamBackend(hosted.HostedBackend):
    task: ClassVar[str] = "seedream"
    provider = PROVIDER
    base_url = BASE_URL
    key_env = "ARK_API_KEY"
    defaults: ClassVar[dict[str, float]] = {"timeout": 600.0, "connect_timeout": 60.0}

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def client_hooks(self) -> dict[str, Any]:
        return {"describe": _describe, "fault": self._fault}

    # -- the model's limits (profile options) ------------------------------------------------

    def limits(self) -> tuple[int, int, float]:
        return (
            int(self.spec.option("min_pixels", 1280 * 720)),
            int(self.spec.option("max_pixels", 4096 * 4096)),
            float(self.spec.option("max_aspect", 16)),
        )

    def dimensions(self, size: Any, aspect: float) -> tuple[int, int]:
        """The ``WIDTHxHEIGHT`` sent for ``size`` (param) and an input of ``aspect`` (w/h)."""
        low, high, max_aspect = self.limits()
        match = re.fullmatch(r"(\d+)x(\d+)", str(size or ""))
        if match:
            width, height = int(match.group(1)), int(match.group(2))
            ratio = width / max(height, 1)
            if not low <= width * height <= high or not 1 / max_aspect <= ratio <= max_aspect:
                raise InvalidRequest(
                    f"size {size} is outside what {self.spec.model} makes: between {low:,} and "
                    f"{high:,} pixels in total, aspect ratio within 1:{max_aspect:g} .. "
                    f"{max_aspect:g}:1"
                )
            return width, height
        preset = size or self.spec.option("default_size", "2K")
        sizes = list(self.spec.option("sizes", list(PRESET_PIXELS)))
        if preset not in sizes or preset not in PRESET_PIXELS:
            raise InvalidRequest(
                f"size {preset!r} must be one of {', '.join(sizes)} or "
                f"WIDTHxHEIGHT (e.g. 2560x1440) for {self.spec.model}"
            )
        area = min(max(PRESET_PIXELS[preset], low), high)
        ratio = min(max(aspect, 1 / max_aspect), max_aspect)
        width = max(8, round(math.sqrt(area * ratio) / 8) * 8)
        height = max(8, round(math.sqrt(area / ratio) / 8) * 8)
        while width * height > high:  # rounding up may pass the cap: trim the longer side
            width, height = (width - 8, height) if width >= height else (width, height - 8)
        while width * height < low:
            width, height = (width + 8, height) if width <= height else (width, height + 8)
        return width, height

    def validate(self, request: Request) -> None:
        limit = int(self.spec.option("max_input_images", 14))
        hosted.check_request(request, PROVIDER, max_images=limit)
        first = request.images[0]
        self.dimensions(request.params.get("size"), first.width / max(first.height, 1))

    # -- running -----------------------------------------------------------------------------

    def run(self, request: Request) -> Result:
        self.validate(request)
        self.load()
        started = time.perf_counter()
        fmt = self.spec.option("upload_format", "jpeg")
        references = [_data_uri(r, fmt) for r in request.references]
        jobs = []
        for i, image in enumerate(request.images):
            inputs = [_data_uri(image, fmt), *references]
            width, height = self.dimensions(
                request.params.get("size"), image.width / max(image.height, 1)
            )
            for seed in request.seeds:
                body = self.body(request.prompt, inputs, f"{width}x{height}", seed)
                jobs.append(lambda body=body, seed=seed, i=i: self._one(body, seed, i, request))
        key = f"{PROVIDER}:{self.options.base_url}:{self.spec.model}"
        outputs = hosted.in_parallel(jobs, key, self.options.concurrency)
        return hosted.split(self.spec, PROVIDER, outputs, started, size=request.params.get("size"))

    def body(self, prompt: str, inputs: list[str], size: str, seed: int) -> dict[str, Any]:
        """The images/generations body (field names as in the Ark SDK's ``images.generate``)."""
        body: dict[str, Any] = {
            "model": self.spec.model,
            "prompt": prompt,
            "image": inputs,
            "size": size,
            "sequential_image_generation": "disabled",
            "response_format": "b64_json",
            "watermark": bool(self.spec.option("watermark", False)),
            "stream": False,
        }
        if self.spec.option("send_seed", False):
            body["seed"] = int(seed) % 2**31
        return body

    def _one(
        self, body: dict[str, Any], seed: int, index: int, request: Request
    ) -> tuple[Any, dict]:
        assert self._client is not None
        started, attempts = time.perf_counter(), [0]
        response = self._client.send(
            "POST",
            f"{self.options.base_url}/images/generations",
            json=body,
            attempts=attempts,
            paid=True,
        )
        if response.status_code != 200:
            raise self._error(response)
        data = response.json()
        request_id = hosted.header_request_id(response) or data.get("id")
        items = data.get("data") or []
        generated = (data.get("usage") or {}).get("generated_images")
        item = items[0] if items else {}
        error = item.get("error") or data.get("error")
        if error:
            code, text = str(error.get("code", "")), str(error.get("message", ""))
            if _refusal(code):
                raise Refused(f"refused by {PROVIDER}: {code}: {text} [request {request_id}]")
            raise BackendError(
                f"{PROVIDER}: the image failed ({code}: {text}) [request {request_id}]"
            )
        if not item.get("b64_json"):
            problem = f"{PROVIDER} returned no image data [request {request_id}]"
            if generated:  # generated (and charged) but not delivered: do not pay again
                raise OutcomeUnknown(
                    f"{problem}, though usage counts {generated} generated", request_id=request_id
                )
            raise BackendError(problem)
        image = hosted.decode(item["b64_json"], PROVIDER, request_id)
        sent = "seed" in body
        return image, hosted.output(
            self.spec,
            PROVIDER,
            image,
            request_id=request_id,
            seconds=time.perf_counter() - started,
            seed=seed,
            seed_sent=sent,
            seed_honoured=sent,
            input_index=index,
            attempts=attempts[0],
            preset=request.params.get("size"),
            size_sent=body["size"],
            size_returned=item.get("size"),
        )

    def check(self) -> hosted.ModelCheck:
        # ModelArk has no model look-up for API keys (its management API needs an access key
        # pair), and any images/generations call that passes validation is charged.
        return hosted.ModelCheck(
            PROVIDER,
            self.spec.model,
            False,
            "not verifiable without a paid request: the key is configured; an unknown or "
            "retired model id is reported (and held) on the first job",
        )

    def _fault(self, response: Any, message: str) -> Exception | None:
        code = _code(response)
        if response.status_code == 429 and code.startswith(("QuotaExceeded", "SetLimitExceeded")):
            return ConfigurationFault(
                f"{PROVIDER}: the account's limit for {self.spec.model} is reached: {message} "
                "(raise it in the ModelArk console; the job waits for the operator)"
            )
        return None

    def _error(self, response: Any) -> Exception:
        assert self._client is not None
        message = self._client.describe(response)
        code = _code(response)
        if _refusal(code):
            return Refused(f"refused by {PROVIDER}: {message}")
        if response.status_code == 404 or code.startswith(ACCOUNT_CODES[:2]):
            return ConfigurationFault(
                f"{PROVIDER} does not know model {self.spec.model} for this key: {message} (it may "
                "be retired in this region or not activated: set profiles.<name>.model to a model "
                "or endpoint id enabled in the ModelArk console)"
            )
        if response.status_code in (401, 403) or code.startswith(ACCOUNT_CODES):
            env = self.spec.option("api_key_env", "ARK_API_KEY")
            return ConfigurationFault(
                f"{PROVIDER} refused the account or key (from {env} or its credential): {message}"
            )
        if 400 <= response.status_code < 500:
            return InvalidRequest(
                f"{PROVIDER} rejected the request for {self.spec.model}: {message}"
            )
        return BackendError(f"{PROVIDER}: {message}")


def _refusal(code: str) -> bool:
    return any(marker in code for marker in REFUSAL_CODES)


def _data_uri(image: Any, fmt: str) -> str:
    mime, data = hosted.encode(image, fmt)
    return f"data:{mime};base64,{data}"


def _error_body(response: Any) -> dict[str, Any]:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def _code(response: Any) -> str:
    return str(_error_body(response).get("code", ""))


def _describe(response: Any) -> str:
    error = _error_body(response)
    if not error:
        return response.text[:300]
    return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")


__all__ = ["SeedreamBackend"]
