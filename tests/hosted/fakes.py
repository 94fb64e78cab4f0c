"""Fake provider APIs on 127.0.0.1 (port 0): they check requests the way each provider's
documentation describes them and answer with images, errors, rate limits and task states.

Every fake records its requests (``fake.requests``) and takes scripted answers first:
``fake.script(status, body, headers=..., delay=...)`` queues one answer for the next call of
the given kind ("submit", "poll", ...), so a test can say "429 with Retry-After, then the
normal answer". ``delay`` makes the server sleep before answering (timeouts). The fakes
track how many calls are in flight at once (``fake.max_in_flight``).
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


def png_b64(colour: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decodes(b64: str) -> bool:
    try:
        Image.open(io.BytesIO(base64.b64decode(b64, validate=True))).verify()
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
                    fake.requests.append({"method": method, "path": self.path,
                                          "headers": {k.lower(): v for k, v in self.headers.items()},
                                          "body": body})
                try:
                    answer = fake.handle(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    delay = answer.delay or fake.latency
                    if delay:
                        time.sleep(delay)
                    payload = answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
                    self.send_response(answer.status)
                    self.send_header("content-type", "application/json" if answer.raw is None else "image/png")
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

    def script(self, kind: str, status: int, body: Any = None, *, headers: dict[str, str] | None = None,
               delay: float = 0.0) -> None:
        self.scripts[kind].append(Answer(status, body, headers or {}, delay))

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


# -- Gemini API: POST /v1beta/models/{model}:generateContent ---------------------------------

GEMINI_MODELS = {"gemini-2.5-flash-image", "gemini-3-pro-image-preview", "gemini-3.1-flash-image-preview"}


def gemini_error(code: int, status: str, message: str, details: list | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, **({"details": details} if details else {})}}


class FakeGemini(FakeServer):
    key = "test-gemini-key-123"

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        match = re.fullmatch(r"/v1beta/models/([^/:]+):generateContent", path)
        if method != "POST" or not match:
            return Answer(404, gemini_error(404, "NOT_FOUND", f"no route {path}"))
        if headers.get("x-goog-api-key") != self.key:
            return Answer(400, gemini_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                                            [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                              "reason": "API_KEY_INVALID"}]))
        model = match.group(1)
        if model not in GEMINI_MODELS:
            return Answer(404, gemini_error(404, "NOT_FOUND", f"models/{model} is not found for API version "
                                            "v1beta, or is not supported for generateContent."))
        scripted = self.scripted("generate")
        if scripted:
            return scripted
        # The documented request shape.
        problems = []
        contents = body.get("contents") if isinstance(body, dict) else None
        parts = contents[0].get("parts", []) if contents else []
        texts = [p["text"] for p in parts if "text" in p]
        images = [p.get("inline_data") or p.get("inlineData") for p in parts if "inline_data" in p or "inlineData" in p]
        if not texts:
            problems.append("contents[0].parts needs a text part")
        for image in images:
            mime = image.get("mime_type") or image.get("mimeType")
            if mime not in ("image/png", "image/jpeg", "image/webp") or not decodes(image.get("data", "")):
                problems.append("inline_data must have mime_type and base64 image data")
        if len(images) > 14:
            problems.append(f"at most 14 input images are supported, got {len(images)}")
        config = body.get("generationConfig") or {}
        if "IMAGE" not in [m.upper() for m in config.get("responseModalities", [])]:
            problems.append("generationConfig.responseModalities must include IMAGE")
        image_config = config.get("imageConfig") or {}
        size = image_config.get("imageSize")
        if size is not None and (model == "gemini-2.5-flash-image" or size not in ("512", "1K", "2K", "4K")):
            problems.append(f"imageSize {size} is not supported by {model}")
        if problems:
            return Answer(400, gemini_error(400, "INVALID_ARGUMENT", "; ".join(problems)))
        prompt = " ".join(texts)
        request_id = self.next_id("resp")
        if "forbidden" in prompt:
            return Answer(200, {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                                "modelVersion": model, "responseId": request_id})
        if "unsafe-output" in prompt:
            return Answer(200, {"candidates": [{"content": {"role": "model", "parts": [
                {"text": "I can't create that image."}]}, "finishReason": "IMAGE_SAFETY", "index": 0}],
                "modelVersion": model, "responseId": request_id})
        seed = config.get("seed", 0)
        colour = (seed * 37 % 256, len(images) * 20 % 256, 100)
        return Answer(200, {
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "Here is your edited image."},
                {"inlineData": {"mimeType": "image/png", "data": png_b64(colour)}}]},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 300, "candidatesTokenCount": 1290, "totalTokenCount": 1590},
            "modelVersion": model, "responseId": request_id})


# -- BytePlus ModelArk: POST /api/v3/images/generations ----------------------------------------

ARK_MODELS = {"seedream-4-0-250828", "seedream-4-5-251128"}


def ark_error(code: str, message: str, kind: str = "BadRequest") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "param": "", "type": kind}}


class FakeArk(FakeServer):
    key = "test-ark-key-456"
    short_by = 0  # answer with this many fewer images than max_images (sequential "auto")

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        if method != "POST" or path != "/api/v3/images/generations":
            return Answer(404, ark_error("NotFound", f"no route {path}", "NotFound"))
        if headers.get("authorization") != f"Bearer {self.key}":
            return Answer(401, ark_error("AuthenticationError", "the API key in the request is missing or invalid",
                                         "Unauthorized"))
        rid = {"x-request-id": self.next_id("ark")}
        if not isinstance(body, dict) or body.get("model") not in ARK_MODELS:
            model = body.get("model") if isinstance(body, dict) else None
            return Answer(404, ark_error("InvalidEndpointOrModel.NotFound",
                                         f"The model or endpoint {model} does not exist or you do not have access "
                                         "to it.", "NotFound"), headers=rid)
        scripted = self.scripted("generate")
        if scripted:
            scripted.headers = {**rid, **scripted.headers}
            return scripted
        problems = []
        if not body.get("prompt"):
            problems.append("prompt is required")
        images = body.get("image", [])
        images = [images] if isinstance(images, str) else images
        for uri in images:
            m = re.fullmatch(r"data:image/(png|jpeg);base64,(.+)", uri, re.DOTALL)
            if not m or not decodes(m.group(2)):
                problems.append("image must be a URL or data:image/<format>;base64,<data>")
        if len(images) > 14:
            problems.append("at most 14 reference images")
        size = body.get("size", "2048x2048")
        if size not in ("1K", "2K", "4K") and not re.fullmatch(r"\d+x\d+", size):
            problems.append(f"size {size} is invalid")
        if body.get("response_format", "url") != "b64_json":
            problems.append("this fake only serves b64_json")
        mode = body.get("sequential_image_generation", "disabled")
        wanted = 1
        if mode == "auto":
            wanted = (body.get("sequential_image_generation_options") or {}).get("max_images", 15)
            if not 1 <= wanted <= 15 or wanted + len(images) > 15:
                problems.append("max_images plus input images must be at most 15")
        elif mode != "disabled":
            problems.append("sequential_image_generation must be auto or disabled")
        if problems:
            return Answer(400, ark_error("InvalidParameter", "; ".join(problems)), headers=rid)
        if "forbidden" in body["prompt"]:
            return Answer(400, ark_error("InputTextSensitiveContentDetected",
                                         "The request failed because the input text may contain sensitive "
                                         "information."), headers=rid)
        count = max(1, wanted - self.short_by)
        self.short_by = 0
        data = [{"b64_json": png_b64((k * 60 % 256, len(images) * 10, 50), (48, 32)), "size": "48x32"}
                for k in range(count)]
        return Answer(200, {"model": body["model"], "created": 1757469561, "data": data,
                            "usage": {"generated_images": count, "output_tokens": 16280 * count,
                                      "total_tokens": 16280 * count}}, headers=rid)


# -- Black Forest Labs: POST /v1/{model}, GET polling_url, GET result.sample ----------------------

BFL_MODELS = {"flux-kontext-pro", "flux-kontext-max"}


class FakeBFL(FakeServer):
    key = "test-bfl-key-789"
    polls_needed = 3  # polls answered Pending before Ready

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
        if method == "GET" and path.startswith("/v1/get_result"):
            scripted = self.scripted("poll")
            if scripted:
                return scripted
            task_id = path.split("id=", 1)[-1]
            task = self.tasks.get(task_id)
            if task is None:
                return Answer(200, {"id": task_id, "status": "Task not found"})
            task["polls"] += 1
            if task["moderated"]:
                return Answer(200, {"id": task_id, "status": "Content Moderated", "result": None,
                                    "details": {"Moderation Reasons": ["Derivative Works Filter"]}})
            if task["polls"] < self.polls_needed:
                return Answer(200, {"id": task_id, "status": "Pending", "result": None,
                                    "progress": task["polls"] / self.polls_needed})
            return Answer(200, {"id": task_id, "status": "Ready", "result": {
                "sample": f"{self.url}/delivery/{task_id}", "prompt": task["prompt"], "seed": task["seed"]}})
        model = path.removeprefix("/v1/")
        if method != "POST" or model not in BFL_MODELS:
            return Answer(404, {"detail": "Not Found"})
        scripted = self.scripted("submit")
        if scripted:
            return scripted
        problems = []
        if not isinstance(body, dict) or not body.get("prompt"):
            problems.append({"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"})
            body = body if isinstance(body, dict) else {}
        for name in ("input_image", "input_image_2", "input_image_3", "input_image_4"):
            if name in body and body[name] is not None and not decodes(body[name]):
                problems.append({"loc": ["body", name], "msg": "not a base64 image", "type": "value_error"})
        extra = set(body) - {"prompt", "input_image", "input_image_2", "input_image_3", "input_image_4", "seed",
                             "aspect_ratio", "output_format", "webhook_url", "webhook_secret",
                             "prompt_upsampling", "safety_tolerance"}
        if extra:
            problems.append({"loc": ["body", min(extra)], "msg": "Extra inputs are not permitted",
                             "type": "extra_forbidden"})
        if not 0 <= body.get("safety_tolerance", 2) <= 6:
            problems.append({"loc": ["body", "safety_tolerance"], "msg": "must be 0..6", "type": "value_error"})
        if body.get("output_format", "png") not in ("png", "jpeg"):
            problems.append({"loc": ["body", "output_format"], "msg": "png or jpeg", "type": "enum"})
        if problems:
            return Answer(422, {"detail": problems})
        task_id = self.next_id("task")
        refs = sum(1 for n in ("input_image_2", "input_image_3", "input_image_4") if body.get(n))
        self.tasks[task_id] = {"polls": 0, "prompt": body["prompt"], "seed": body.get("seed"),
                               "moderated": "forbidden" in body["prompt"],
                               "colour": ((body.get("seed") or 0) * 13 % 256, refs * 40, 200)}
        answer: dict[str, Any] = {"id": task_id, "cost": 4.0, "input_mp": 0.0, "output_mp": 1.0}
        if "webhook_url" in body:
            answer.update(status="Pending", webhook_url=body["webhook_url"])
        else:
            answer["polling_url"] = f"{self.url}/v1/get_result?id={task_id}"
        return Answer(200, answer)
