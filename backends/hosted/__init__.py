"""Hosted image models: what the provider backends (``gemini``, ``seedream``, ``bfl``) share.

A hosted backend fulfils the same contract as a local one (``backends.base``) but its
"model" is a provider's model name and ``load()`` only resolves an API key: no weights,
no device, no network call. Each output is one provider call (or one task, polled), made
through :class:`Client`: httpx underneath, bounded exponential backoff with jitter on
429/5xx/timeouts/connection errors, ``Retry-After`` honoured (seconds or HTTP date), a
total wait budget, and keys only ever in request headers — never in messages, logs or
``Result.info``.

Spec options every hosted profile understands (the provider modules document theirs):

- ``base_url``       the API root (tests and proxies point it elsewhere);
- ``api_key_env``    environment variable holding the key (GEMINI_API_KEY, ...);
- ``credential``     file name under ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential``),
                     default: the same name as ``api_key_env``;
- ``api_key_file``   an explicit file holding the key (wins over both);
- ``timeout``        seconds per HTTP call (default 120);
- ``retries``        extra attempts after the first (default 4);
- ``backoff``        first retry delay in seconds, doubled each attempt (default 1), capped
                     by ``max_backoff`` (default 30), at most ``max_wait`` seconds of waiting
                     in total per call (default 120);
- ``concurrency``    outputs in flight at once for this model in this process (default 4);
- ``price_per_image`` / ``price_per_megapixel`` / ``price_by_size``  USD estimates for
                     ``Result.info["outputs"][k]["cost"]``.

``Result.info["outputs"]`` lines up with ``Result.images``: one dict per output with
``provider``, ``model``, ``request_id``, ``seconds``, ``cost``, ``megapixels``, ``seed``,
``seed_honoured``, ``input``, ``attempts`` and ``refusal`` (None unless refused).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from backends.base import (
    BackendError,
    BackendMissing,
    InvalidRequest,
    ModelSpec,
    ModelUnavailable,
    Request,
    Result,
)

if TYPE_CHECKING:
    import httpx
    from PIL.Image import Image

log = logging.getLogger("darkroom.backends.hosted")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
T = TypeVar("T")


class Refused(Exception):
    """The provider refused one output (safety filter, moderation); carries its reason."""


@dataclass(frozen=True)
class Options:
    base_url: str
    timeout: float
    retries: int
    backoff: float
    max_backoff: float
    max_wait: float
    concurrency: int

    @classmethod
    def of(cls, spec: ModelSpec, base_url: str) -> Options:
        def number(name: str, default: float, low: float) -> float:
            value = spec.option(name, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
                raise InvalidRequest(f"profile option {name} must be a number >= {low:g}, not {value!r}")
            return float(value)

        return cls(
            base_url=str(spec.option("base_url", base_url)).rstrip("/"),
            timeout=number("timeout", 120.0, 0.001),
            retries=int(number("retries", 4, 0)),
            backoff=number("backoff", 1.0, 0),
            max_backoff=number("max_backoff", 30.0, 0),
            max_wait=number("max_wait", 120.0, 0),
            concurrency=int(number("concurrency", 4, 1)),
        )


def api_key(spec: ModelSpec, provider: str, default_env: str) -> str:
    """The key from ``api_key_file``, the env var, or ``$CREDENTIALS_DIRECTORY``; else say which to set."""
    env = str(spec.option("api_key_env", default_env))
    credential = str(spec.option("credential", env))
    explicit = spec.option("api_key_file")
    if explicit:
        try:
            key = Path(explicit).expanduser().read_text().strip()
        except OSError as exc:
            raise ModelUnavailable(
                f"{provider}: cannot read the API key file {explicit} (profile option api_key_file): "
                f"{exc.strerror or type(exc).__name__}") from None
        if key:
            return key
        raise ModelUnavailable(f"{provider}: the API key file {explicit} is empty")
    key = os.environ.get(env, "").strip()
    if key:
        return key
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and (Path(directory) / credential).is_file():
        key = (Path(directory) / credential).read_text().strip()
        if key:
            return key
    raise ModelUnavailable(
        f"{provider} needs an API key for {spec.model}: set the environment variable {env}, "
        f"or pass it with systemd LoadCredential={credential}:/path/to/key "
        f"(read from $CREDENTIALS_DIRECTORY/{credential}), or set the profile option api_key_file"
    )


def require_httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise BackendMissing("hosted models need httpx: pip install 'httpx>=0.27'") from None
    return httpx


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Client:
    """One provider's HTTP client: retries, backoff, ``Retry-After``, secrets kept out of text.

    ``auth`` headers go only with ``send(..., auth=True)`` (the default), so a download from a
    delivery host never carries the key. ``describe(response)`` turns an error body into the
    provider's own words; ``wait_hint(response)`` may read a body-level retry delay.
    """

    def __init__(self, provider: str, options: Options, auth: dict[str, str], *,
                 describe: Callable[[httpx.Response], str] | None = None,
                 wait_hint: Callable[[httpx.Response], float | None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        httpx = require_httpx()
        self.provider = provider
        self.options = options
        self._auth = dict(auth)
        self._secrets = [v.split(" ")[-1] for v in auth.values() if v]
        self._describe = describe or (lambda r: r.text[:300])
        self._wait_hint = wait_hint or (lambda r: None)
        self._sleep = sleep
        self._httpx = httpx
        timeout = httpx.Timeout(options.timeout, connect=min(options.timeout, 10.0))
        self._http = httpx.Client(timeout=timeout, headers={"user-agent": "darkroom"})

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def describe(self, response: httpx.Response) -> str:
        try:
            text = self._describe(response)
        except (ValueError, TypeError, KeyError, AttributeError):  # unparsable: still an error
            text = response.text[:300]
        return self.scrub(f"HTTP {response.status_code}: {text}".strip())

    def send(self, method: str, url: str, *, json: Any = None, auth: bool = True,
             attempts: list[int] | None = None) -> httpx.Response:
        """The first response that is not retryable; BackendError once retries or waiting run out.

        ``attempts`` (a one-item list) is increased by the number of HTTP calls made.
        """
        httpx, o = self._httpx, self.options
        headers = self._auth if auth else {}
        waited = 0.0
        for attempt in range(1, o.retries + 2):
            hint = None
            if attempts is not None:
                attempts[0] += 1
            try:
                # Redirects only without the key: httpx would forward a custom key header.
                response = self._http.request(method, url, json=json, headers=headers,
                                              follow_redirects=not auth)
            except httpx.TimeoutException:
                problem = f"no answer within {o.timeout:g} s (timeout)"
            except httpx.TransportError as exc:
                problem = f"connection failed ({type(exc).__name__})"
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                problem = self.describe(response)
                hint = retry_after(response.headers.get("retry-after"))
                if hint is None:
                    hint = self._wait_hint(response)
            if hint is not None:
                delay = hint
            else:
                delay = min(o.max_backoff, o.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            if attempt > o.retries:
                break
            if waited + delay > o.max_wait:
                problem += f"; the next retry would wait {delay:.1f} s, past max_wait {o.max_wait:g} s"
                break
            log.warning("%s: %s; retrying in %.2f s (attempt %d of %d)",
                        self.provider, problem, delay, attempt, o.retries + 1)
            self._sleep(delay)
            waited += delay
        raise BackendError(f"{self.provider}: {problem} (gave up after {attempt} attempts, "
                           f"{waited:.1f} s of backoff)")

    def close(self) -> None:
        self._http.close()


_LIMITS: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_LIMITS_LOCK = threading.Lock()


def limiter(key: str, limit: int) -> threading.BoundedSemaphore:
    """A process-wide semaphore: every backend with the same key and limit shares it."""
    with _LIMITS_LOCK:
        return _LIMITS.setdefault((key, limit), threading.BoundedSemaphore(limit))


def in_parallel(jobs: Sequence[Callable[[], T]], key: str, limit: int) -> list[T]:
    """Run ``jobs`` at most ``limit`` at a time (process-wide for ``key``); results in order.

    On the first failure the jobs not yet started are cancelled (no more money spent on a
    request that fails anyway); those already running are waited for, then the failure is
    raised: any non-refusal error first, else the refusal (with a count when partial).
    """
    gate = limiter(key, limit)

    def gated(job: Callable[[], T]) -> T | Refused:
        with gate:
            try:
                return job()
            except Refused as refused:  # one refused output does not stop the others
                return refused

    if len(jobs) == 1:
        results = [gated(jobs[0])]
    else:
        with ThreadPoolExecutor(max_workers=min(limit, len(jobs)), thread_name_prefix="hosted") as pool:
            futures = [pool.submit(gated, job) for job in jobs]
            wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:
                future.cancel()
        for future in futures:
            if not future.cancelled() and future.exception() is not None:
                raise future.exception()
        results = [f.result() for f in futures]
    refusals = [r for r in results if isinstance(r, Refused)]
    if len(refusals) == len(results):
        if len(results) == 1:
            raise refusals[0]
        raise Refused(f"{refusals[0]} (all {len(results)} outputs refused)")
    return results


def split(spec: ModelSpec, provider: str, results: list[Any], started: float, **extra: Any) -> Result:
    """A Result from ``in_parallel``'s (image, info) pairs, where a refused output becomes
    ``None`` with its reason in ``info["outputs"][k]["refusal"]`` (a failed variant)."""
    images, infos = [], []
    for result in results:
        if isinstance(result, Refused):
            images.append(None)
            infos.append({"provider": provider, "model": spec.model, "request_id": None, "cost": 0.0,
                          "refusal": f"refused by {provider}: {result}"})
        else:
            images.append(result[0])
            infos.append(result[1])
    return Result(images=images, seconds=time.perf_counter() - started,
                  info=summary(spec, provider, infos, **extra))


def check_request(request: Request, provider: str, *, max_images: int) -> None:
    """What every hosted backend needs: inputs, seeds, a prompt, no mask, not too many images."""
    if not request.images:
        raise InvalidRequest(f"{provider} needs at least one input image")
    if not request.seeds:
        raise InvalidRequest(f"{provider} needs at least one seed (one output per seed)")
    if not (request.prompt or "").strip():
        raise InvalidRequest(f"{provider} needs a prompt: the instruction for the edit")
    if request.mask is not None:
        raise InvalidRequest(f"{provider} takes no mask: describe the area in the prompt, "
                             "or use a local inpaint profile (sdxl-inpaint, flux-fill)")
    if 1 + len(request.references) > max_images:
        raise InvalidRequest(
            f"{provider} takes at most {max_images} images per request (the input plus "
            f"{max_images - 1} references); this step has {len(request.references)} references: "
            f"drop {1 + len(request.references) - max_images}")


def encode(image: Image, fmt: str = "jpeg") -> tuple[str, str]:
    """(mime type, base64) of ``image`` as JPEG (quality 95) or PNG."""
    buffer = io.BytesIO()
    fmt = fmt.lower()
    if fmt in ("jpeg", "jpg"):
        image.convert("RGB").save(buffer, "JPEG", quality=95)
        mime = "image/jpeg"
    elif fmt == "png":
        image.save(buffer, "PNG")
        mime = "image/png"
    else:
        raise InvalidRequest(f"upload_format {fmt!r} must be jpeg or png")
    return mime, base64.b64encode(buffer.getvalue()).decode("ascii")


def decode(data: bytes | str, provider: str) -> Image:
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(data) if isinstance(data, str) else data
        with Image.open(io.BytesIO(raw)) as image:
            return image.convert("RGB")
    except (ValueError, UnidentifiedImageError, OSError) as exc:
        raise BackendError(f"{provider} returned an image that cannot be decoded: {exc}") from None


def cost(spec: ModelSpec, image: Image, preset: str | None = None) -> float | None:
    """Estimated USD for one output from the profile's prices; None when it declares none."""
    by_size = spec.option("price_by_size") or {}
    if preset is not None and preset in by_size:
        return float(by_size[preset])
    per_image, per_mp = spec.option("price_per_image"), spec.option("price_per_megapixel")
    if per_image is None and per_mp is None:
        return None
    return round(float(per_image or 0) + float(per_mp or 0) * image.width * image.height / 1e6, 6)


def output(spec: ModelSpec, provider: str, image: Image, *, request_id: str | None, seconds: float,
           seed: int, seed_honoured: bool, input_index: int, attempts: int, preset: str | None = None,
           **extra: Any) -> dict[str, Any]:
    return {
        "provider": provider, "model": spec.model, "request_id": request_id,
        "seconds": round(seconds, 3), "cost": cost(spec, image, preset), "currency": "USD",
        "megapixels": round(image.width * image.height / 1e6, 3), "seed": seed,
        "seed_honoured": seed_honoured, "input": input_index, "attempts": attempts, "refusal": None,
        **extra,
    }


def summary(spec: ModelSpec, provider: str, outputs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    costs = [o["cost"] for o in outputs]
    return {
        "provider": provider, "model": spec.model, "outputs": outputs,
        "cost": None if any(c is None for c in costs) else round(sum(costs), 6),
        "request_ids": [o.get("request_id") for o in outputs], **extra,
    }


__all__ = ["Client", "Options", "Refused", "api_key", "check_request", "cost", "decode", "encode",
           "in_parallel", "limiter", "output", "retry_after", "split", "summary"]


class HostedBackend:
    """What every provider's backend shares: options from the spec, the API key found at
    load (never earlier, never logged), one HTTP client, closed on unload. A provider sets
    the class attributes and ``auth_headers``; ``client_hooks`` adds its error reading."""

    task: ClassVar[str]
    provider: ClassVar[str]
    base_url: ClassVar[str]
    key_env: ClassVar[str]

    def __init__(self, spec: ModelSpec, cache_dir: Path) -> None:
        self.spec = spec
        self.cache_dir = Path(cache_dir)
        self.options = Options.of(spec, self.base_url)
        self._client: Client | None = None

    def auth_headers(self, key: str) -> dict[str, str]:
        raise NotImplementedError

    def client_hooks(self) -> dict[str, Any]:
        return {}

    def load(self) -> None:
        if self._client is None:
            key = api_key(self.spec, self.provider, self.key_env)
            self._client = Client(self.provider, self.options, self.auth_headers(key), **self.client_hooks())

    def unload(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

