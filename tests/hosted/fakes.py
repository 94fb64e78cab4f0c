"""Fake provider APIs on 127.0.0.1 (port 0): they check requests the way each provider's
documentation describes them and answer with images, errors, rate limits and task states.

Every fake records its requests (``fake.requests``) and takes scripted answers first:
``fake.script(status, body, headers=..., delay=...)`` queues one answer for the next call of
the given kind ("submit", "poll", ...), so a test can say "429 with Retry-After, then the
normal answer". ``delay`` makes the server sleep before answering (timeouts). The fakes
track how many calls are in flight at once (``fake.max_in_flight``).

The fakes answer like the real services for what Darkroom must survive: the model ids they
serve are the hosted profiles' (``backends/profiles.py``), retired ids answer the provider's
404, per-model limits (sizes, aspect ratios, pixel ranges) come from the same profiles, and
quota, credit, moderation and partial answers have the providers' shapes. Every canned body
is built by a module-level function so ``test_contract.py`` can validate each one against
the providers' official SDK types.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from PIL import Image

from backends.profiles import PROFILES


def png_b64(colour: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def b64bytes(b64: str) -> bytes:
    """Standard or URL-safe base64 (protobuf JSON accepts both; google-genai sends URL-safe)."""
    if "-" in b64 or "_" in b64:
        return base64.urlsafe_b64decode(b64)
    return base64.b64decode(b64, validate=True)


def decodes(b64: str) -> bool:
    try:
        Image.open(io.BytesIO(b64bytes(b64))).verify()
        return True
    except (ValueError, OSError):
        return False


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None
    drop: bool = False  # read the request, then close the connection without an answer


class FakeServer:
    """A threaded HTTP server; subclasses implement ``handle(method, path, headers, body)``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.scripts: dict[str, deque[Answer]] = defaultdict(deque)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.latency = 0.0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                with fake.lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    fake.requests.append(
                        {
                            "method": method,
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                        }
                    )
                try:
                    answer = fake.handle(
                        method, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                    )
                    delay = answer.delay or fake.latency
                    if delay:
                        time.sleep(delay)
                    if answer.drop:
                        self.close_connection = True
                        return
                    payload = (
                        answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
                    )
                    self.send_response(answer.status)
                    self.send_header(
                        "content-type", "application/json" if answer.raw is None else "image/png"
                    )
                    self.send_header("content-length", str(len(payload)))
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def script(
        self,
        kind: str,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        drop: bool = False,
    ) -> None:
        self.scripts[kind].append(Answer(status, body, headers or {}, delay, drop=drop))

    def next_id(self, prefix: str) -> str:
        with self.lock:
            self.counter = getattr(self, "counter", 0) + 1
            return f"{prefix}-{self.counter}"

    def scripted(self, kind: str) -> Answer | None:
        with self.lock:
            queue = self.scripts.get(kind)
            return queue.popleft() if queue else None

    def calls(self, kind_path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if kind_path in r["path"]]

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        raise NotImplementedError


def profile_models(task: str) -> dict[str, dict[str, Any]]:
    """{model id: options} of the built-in profiles of ``task``: what the fakes serve."""
    return {p["model"]: p["options"] for p in PROFILES.values() if p["task"] == task}


def sized_png(width: int, height: int, colour: tuple[int, int, int]) -> str:
    """A small PNG with the aspect of ``width`` x ``height`` (tests need the shape, not the pixels)."""
    scale = 64 / max(width, height)
    return png_b64(colour, (max(1, round(width * scale)), max(1, round(height * scale))))


# -- Gemini API: POST /v1beta/models/{model}:generateContent, GET /v1beta/models/{model} ----------

GEMINI_MODELS = profile_models("gemini-image")
# Shut down (ai.google.dev/gemini-api/docs/deprecations, read 2026-11-28): the API answers 404.
GEMINI_RETIRED = {
    "gemini-2.5-flash-image": "2026-10-02",
    "gemini-3-pro-image-preview": "2026-06-25",
    "gemini-3.1-flash-image-preview": "2026-06-25",
}
GEMINI_BASE_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")


def gemini_error(
    code: int, status: str, message: str, details: list | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "status": status,
            **({"details": details} if details else {}),
        }
    }


def gemini_not_found(model: str) -> dict[str, Any]:
    return gemini_error(
        404,
        "NOT_FOUND",
        f"models/{model} is not found for API version v1beta, or is not "
        "supported for generateContent. Call ListModels to see the list of available models "
        "and their supported methods.",
    )


def gemini_key_invalid() -> dict[str, Any]:
    return gemini_error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ],
    )


def gemini_quota(model: str, *, per_day: bool, delay: str = "37s") -> dict[str, Any]:
    """The 429 the API sends when a quota is used up: per day (limit 0 on a free key) or per minute."""
    quota_id = (
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
        if per_day
        else "GenerateRequestsPerMinutePerProjectPerModel"
    )
    value = "0" if per_day else "10"
    return gemini_error(
        429,
        "RESOURCE_EXHAUSTED",
        f"You exceeded your current quota, please check your plan and billing details.\n"
        f"* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_requests, "
        f"limit: {value}, model: {model}\nPlease retry in {delay}.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                        "quotaId": quota_id,
                        "quotaDimensions": {"model": model, "location": "global"},
                        "quotaValue": value,
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
        ],
    )


def gemini_image(model: str, request_id: str, colour: tuple[int, int, int]) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"inlineData": {"mimeType": "image/png", "data": png_b64(colour)}}],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 300,
            "candidatesTokenCount": 1120,
            "totalTokenCount": 1420,
        },
        "modelVersion": model,
        "responseId": request_id,
    }


def gemini_blocked(model: str, request_id: str) -> dict[str, Any]:
    return {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "modelVersion": model,
        "responseId": request_id,
        "usageMetadata": {"promptTokenCount": 300, "totalTokenCount": 300},
    }


def gemini_withheld(model: str, request_id: str, reason: str = "IMAGE_SAFETY") -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "I can't create that image."}]},
                "finishReason": reason,
                "index": 0,
            }
        ],
        "modelVersion": model,
        "responseId": request_id,
    }


def gemini_text_only(model: str, request_id: str) -> dict[str, Any]:
    """What a model asked for TEXT+IMAGE may answer: words, STOP, no image (and it is billed)."""
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {
                            "text": "Sure! Picture the cup on a marble counter, soft morning light from the left."
                        }
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 300,
            "candidatesTokenCount": 40,
            "totalTokenCount": 340,
        },
        "modelVersion": model,
        "responseId": request_id,
    }


def gemini_model(model: str) -> dict[str, Any]:
    return {
        "name": f"models/{model}",
        "version": "1.0",
        "displayName": model,
        "description": "image generation and editing",
        "inputTokenLimit": 65536,
        "outputTokenLimit": 32768,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
        "temperature": 1.0,
        "maxTemperature": 2.0,
        "topP": 0.95,
        "topK": 64,
    }


class FakeGemini(FakeServer):
    key = "test-gemini-key-123"
    daily_quota_used = False  # every generateContent answers the daily-quota 429

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        got = re.fullmatch(r"/v1beta/models/([^/:]+)", path)
        match = re.fullmatch(r"/v1beta/models/([^/:]+):generateContent", path)
        if not (method == "POST" and match) and not (method == "GET" and got):
            return Answer(404, gemini_error(404, "NOT_FOUND", f"no route {path}"))
        if headers.get("x-goog-api-key") != self.key:
            return Answer(400, gemini_key_invalid())
        model = (match or got).group(1)
        if model not in GEMINI_MODELS:
            return Answer(404, gemini_not_found(model))
        if got:
            return self.scripted("get") or Answer(200, gemini_model(model))
        scripted = self.scripted("generate")
        if scripted:
            return scripted
        if self.daily_quota_used:
            return Answer(429, gemini_quota(model, per_day=True))
        limits = GEMINI_MODELS[model]
        problems = []
        contents = body.get("contents") if isinstance(body, dict) else None
        parts = contents[0].get("parts", []) if contents else []
        texts = [p["text"] for p in parts if "text" in p]
        images = [
            p.get("inline_data") or p.get("inlineData")
            for p in parts
            if "inline_data" in p or "inlineData" in p
        ]
        if not texts:
            problems.append("contents[0].parts needs a text part")
        for image in images:
            mime = image.get("mime_type") or image.get("mimeType")
            if mime not in ("image/png", "image/jpeg", "image/webp") or not decodes(
                image.get("data", "")
            ):
                problems.append("inline_data must have mime_type and base64 image data")
        if len(images) > limits.get("max_input_images", 14):
            problems.append(
                f"at most {limits.get('max_input_images', 14)} input images are supported"
            )
        config = body.get("generationConfig") or {}
        modalities = [m.upper() for m in config.get("responseModalities", ["TEXT"])]
        if "IMAGE" not in modalities:
            problems.append("generationConfig.responseModalities must include IMAGE")
        image_config = config.get("imageConfig") or {}
        size, ratio = image_config.get("imageSize"), image_config.get("aspectRatio")
        if size is not None and size not in limits.get("image_sizes", []):
            problems.append(f"imageSize {size} is not supported by {model}")
        if ratio is not None and ratio not in limits.get("aspect_ratios", GEMINI_BASE_RATIOS):
            problems.append(f"aspectRatio {ratio} is not supported by {model}")
        if problems:
            return Answer(400, gemini_error(400, "INVALID_ARGUMENT", "; ".join(problems)))
        prompt = " ".join(texts)
        request_id = self.next_id("resp")
        if "forbidden" in prompt:
            return Answer(200, gemini_blocked(model, request_id))
        if "unsafe-output" in prompt:
            return Answer(200, gemini_withheld(model, request_id))
        if "chatty" in prompt and "TEXT" in modalities:
            return Answer(200, gemini_text_only(model, request_id))
        seed = config.get("seed", 0)
        return Answer(
            200, gemini_image(model, request_id, (seed * 37 % 256, len(images) * 20 % 256, 100))
        )


# -- BytePlus ModelArk: POST /api/v3/images/generations ----------------------------------------

ARK_MODELS = profile_models("seedream")
ARK_PRESETS = {"1K": (1024, 1024), "2K": (2048, 2048), "4K": (4096, 4096)}


def ark_error(code: str, message: str, kind: str = "BadRequest") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "param": "", "type": kind}}


def ark_images(model: str, sizes: list[tuple[int, int]], n_inputs: int) -> dict[str, Any]:
    data = [
        {"b64_json": sized_png(w, h, (k * 60 % 256, n_inputs * 10, 50)), "size": f"{w}x{h}"}
        for k, (w, h) in enumerate(sizes)
    ]
    return {
        "model": model,
        "created": 1757469561,
        "data": data,
        "usage": {
            "generated_images": len(data),
            "output_tokens": 16384 * len(data),
            "total_tokens": 16384 * len(data),
        },
    }


def ark_withheld(model: str, code: str = "OutputImageSensitiveContentDetected") -> dict[str, Any]:
    """A 200 whose one image was withheld by output moderation (not generated, not billed)."""
    return {
        "model": model,
        "created": 1757469561,
        "data": [
            {
                "error": {
                    "code": code,
                    "message": "The request failed because the output image may contain sensitive "
                    "information.",
                }
            }
        ],
        "usage": {"generated_images": 0, "output_tokens": 0, "total_tokens": 0},
    }


class FakeArk(FakeServer):
    key = "test-ark-key-456"
    auto_returns: int | None = None  # sequential "auto": images returned (None: as many as asked)
    retired: frozenset[str] = frozenset()  # model ids this "region" no longer serves
    quota_exceeded = False

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        if method != "POST" or path != "/api/v3/images/generations":
            return Answer(404, ark_error("NotFound", f"no route {path}", "NotFound"))
        if headers.get("authorization") != f"Bearer {self.key}":
            return Answer(
                401,
                ark_error(
                    "AuthenticationError",
                    "the API key in the request is missing or invalid",
                    "Unauthorized",
                ),
            )
        rid = {"x-request-id": self.next_id("ark")}
        model = body.get("model") if isinstance(body, dict) else None
        if model not in ARK_MODELS or model in self.retired:
            return Answer(
                404,
                ark_error(
                    "InvalidEndpointOrModel.NotFound",
                    f"The model or endpoint {model} does not exist or you do not have access "
                    "to it.",
                    "NotFound",
                ),
                headers=rid,
            )
        scripted = self.scripted("generate")
        if scripted:
            scripted.headers = {**rid, **scripted.headers}
            return scripted
        if self.quota_exceeded:
            return Answer(
                429,
                ark_error(
                    "QuotaExceeded",
                    "The request has exceeded the quota of your account.",
                    "TooManyRequests",
                ),
                headers=rid,
            )
        limits = ARK_MODELS[model]
        problems = []
        if not body.get("prompt"):
            problems.append("prompt is required")
        images = body.get("image", [])
        images = [images] if isinstance(images, str) else images
        for uri in images:
            m = re.fullmatch(r"data:image/(png|jpeg);base64,(.+)", uri, re.DOTALL)
            if not m or not decodes(m.group(2)):
                problems.append("image must be a URL or data:image/<format>;base64,<data>")
        if len(images) > limits.get("max_input_images", 14):
            problems.append("at most 14 reference images")
        size = body.get("size", "2048x2048")  # the service's default: a square
        if size in ARK_PRESETS and size in limits.get("sizes", []):
            width, height = ARK_PRESETS[size]
        elif re.fullmatch(r"\d+x\d+", size):
            width, height = map(int, size.split("x"))
            low, high = limits.get("min_pixels", 1280 * 720), limits.get("max_pixels", 4096 * 4096)
            aspect = limits.get("max_aspect", 16)
            if not low <= width * height <= high or not 1 / aspect <= width / height <= aspect:
                problems.append(f"size {size} is outside the range of {model}")
        else:
            problems.append(f"size {size} is invalid")
        if body.get("response_format", "url") != "b64_json":
            problems.append("this fake only serves b64_json")
        mode = body.get("sequential_image_generation", "disabled")
        wanted = 1
        if mode == "auto":
            wanted = (body.get("sequential_image_generation_options") or {}).get("max_images", 15)
            if not 1 <= wanted <= 15 or wanted + len(images) > 15:
                problems.append("max_images plus input images must be at most 15")
            # The model decides how many it returns; every one returned is billed.
            wanted = min(wanted, self.auto_returns or wanted)
        elif mode != "disabled":
            problems.append("sequential_image_generation must be auto or disabled")
        if problems:
            return Answer(400, ark_error("InvalidParameter", "; ".join(problems)), headers=rid)
        if "forbidden" in body["prompt"]:
            return Answer(
                400,
                ark_error(
                    "InputTextSensitiveContentDetected",
                    "The request failed because the input text may contain sensitive information.",
                ),
                headers=rid,
            )
        if "unsafe-output" in body["prompt"]:
            return Answer(200, ark_withheld(model), headers=rid)
        return Answer(200, ark_images(model, [(width, height)] * wanted, len(images)), headers=rid)


# -- Black Forest Labs: POST /v1/{model}, GET polling_url, GET result.sample ----------------------

BFL_MODELS = profile_models("bfl-kontext")
BFL_STATUSES = (
    "Task not found",
    "Pending",
    "Request Moderated",
    "Content Moderated",
    "Ready",
    "Error",
)


def bfl_submitted(task_id: str, polling_url: str | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"id": task_id, "cost": 4.0, "input_mp": 1.0, "output_mp": 1.0}
    if polling_url:
        answer["polling_url"] = polling_url
    return answer


def bfl_result(task_id: str, status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "status": status,
        "result": None,
        "progress": None,
        "details": None,
        "preview": None,
        **fields,
    }


class FakeBFL(FakeServer):
    key = "test-bfl-key-789"
    polls_needed = 3  # polls answered Pending before Ready
    credits = 100.0

    def __init__(self) -> None:
        super().__init__()
        self.tasks: dict[str, dict[str, Any]] = {}

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        if method == "GET" and path.startswith("/delivery/"):
            if "x-key" in headers:
                return Answer(400, {"detail": "the delivery host must not get the API key"})
            task = self.tasks.get(path.rsplit("/", 1)[-1])
            if task is None:
                return Answer(404, {"detail": "expired"})
            return Answer(200, raw=base64.b64decode(png_b64(task["colour"], (40, 40))))
        if headers.get("x-key") != self.key:
            return Answer(403, {"detail": "Not authenticated"})
        if method == "GET" and path == "/v1/credits":
            return Answer(200, {"credits": self.credits})
        if method == "GET" and path.startswith("/v1/get_result"):
            scripted = self.scripted("poll")
            if scripted:
                return scripted
            task_id = path.split("id=", 1)[-1]
            task = self.tasks.get(task_id)
            if task is None:
                return Answer(200, bfl_result(task_id, "Task not found"))
            task["polls"] += 1
            if task["moderated"]:
                return Answer(
                    200,
                    bfl_result(
                        task_id,
                        "Content Moderated",
                        details={"Moderation Reasons": ["Derivative Works Filter"]},
                    ),
                )
            if task["polls"] < self.polls_needed:
                return Answer(
                    200, bfl_result(task_id, "Pending", progress=task["polls"] / self.polls_needed)
                )
            return Answer(
                200,
                bfl_result(
                    task_id,
                    "Ready",
                    result={
                        "sample": f"{self.url}/delivery/{task_id}",
                        "prompt": task["prompt"],
                        "seed": task["seed"],
                        "start_time": 1757469561.0,
                        "end_time": 1757469571.0,
                        "duration": 10.0,
                    },
                ),
            )
        model = path.removeprefix("/v1/")
        if method != "POST" or model not in BFL_MODELS:
            return Answer(404, {"detail": "Not Found"})
        scripted = self.scripted("submit")
        if scripted:
            return scripted
        if self.credits <= 0:
            return Answer(
                402,
                {
                    "detail": "Insufficient credits. Add credits at https://dashboard.bfl.ai",
                    "message": "Payment Required",
                },
            )
        problems = []
        if not isinstance(body, dict) or not body.get("prompt"):
            problems.append({"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"})
            body = body if isinstance(body, dict) else {}
        for name in ("input_image", "input_image_2", "input_image_3", "input_image_4"):
            if name in body and body[name] is not None and not decodes(body[name]):
                problems.append(
                    {"loc": ["body", name], "msg": "not a base64 image", "type": "value_error"}
                )
        extra = set(body) - {
            "prompt",
            "input_image",
            "input_image_2",
            "input_image_3",
            "input_image_4",
            "seed",
            "aspect_ratio",
            "output_format",
            "webhook_url",
            "webhook_secret",
            "prompt_upsampling",
            "safety_tolerance",
        }
        if extra:
            problems.append(
                {
                    "loc": ["body", min(extra)],
                    "msg": "Extra inputs are not permitted",
                    "type": "extra_forbidden",
                }
            )
        if not 0 <= body.get("safety_tolerance", 2) <= 6:
            problems.append(
                {"loc": ["body", "safety_tolerance"], "msg": "must be 0..6", "type": "value_error"}
            )
        if body.get("output_format", "png") not in ("png", "jpeg"):
            problems.append(
                {"loc": ["body", "output_format"], "msg": "png or jpeg", "type": "enum"}
            )
        if problems:
            return Answer(422, {"detail": problems})
        task_id = self.next_id("task")
        refs = sum(1 for n in ("input_image_2", "input_image_3", "input_image_4") if body.get(n))
        self.tasks[task_id] = {
            "polls": 0,
            "prompt": body["prompt"],
            "seed": body.get("seed"),
            "moderated": "forbidden" in body["prompt"],
            "colour": ((body.get("seed") or 0) * 13 % 256, refs * 40, 200),
        }
        self.credits -= 4.0
        if "webhook_url" in body:
            return Answer(
                200,
                {
                    **bfl_submitted(task_id, None),
                    "status": "Pending",
                    "webhook_url": body["webhook_url"],
                },
            )
        return Answer(200, bfl_submitted(task_id, f"{self.url}/v1/get_result?id={task_id}"))
