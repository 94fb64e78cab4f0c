"""Hosted image models: what the provider backends (``gemini``, ``seedream``, ``bfl``) share.

A hosted backend fulfils the same contract as a local one (``backends.base``) but its
"model" is a provider's model id and ``load()`` only resolves an API key: no weights,
no device, no network call. Each output is one provider call (or one task, polled), made
through :class:`Client`, whose retries are **money-safe**:

- a request that may start paid work (``send(..., paid=True)``: a generation POST) is
  resent only when the provider cannot have started it: connection-phase errors (connect
  refused, connect timeout), 408 and 429. A read timeout, a dropped connection after the
  request was sent, or a 5xx raise :class:`~backends.base.OutcomeUnknown` with the
  provider's request id: resending could pay twice (BFL's own SDK refuses for the same reason);
- free requests (polls, downloads, model look-ups) are retried on 408/429/5xx/timeouts;
- ``Retry-After`` (seconds or HTTP date) and body-level hints (Gemini ``RetryInfo``) are
  honoured, within a total wait budget; a provider hook turns "quota used up for the day" and
  "no credits" into :class:`~backends.base.ConfigurationFault` before any retry.

Keys travel only in request headers — never in messages, logs or ``Result.info``.

Spec options every hosted profile understands (the provider modules document theirs):

- ``base_url``         the API root (tests and proxies point it elsewhere): https, or plain
                       http to a loopback address only; no user, query or fragment;
- ``api_key_env``      environment variable holding the key (GEMINI_API_KEY, ...);
- ``credential``       file name under ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential``),
                       default: the same name as ``api_key_env``;
- ``api_key_file``     an explicit file holding the key (wins over both);
- ``timeout``          seconds to wait for an answer (default: the provider SDK's, see each module);
- ``connect_timeout``  seconds to open the connection (default: the provider SDK's);
- ``retries``          extra attempts after the first (default 4);
- ``backoff``          first retry delay in seconds, doubled each attempt (default 1), capped
                       by ``max_backoff`` (default 30), at most ``max_wait`` seconds of waiting
                       in total per call (default 120);
- ``concurrency``      outputs in flight at once for this model in this process (default 4);
- ``price_per_image`` / ``price_per_megapixel`` / ``price_by_size``  USD estimates for
                       ``Result.info["outputs"][k]["cost"]``.

``Result.info["outputs"]`` lines up with ``Result.images``: one dict per output with
``provider``, ``model``, ``request_id``, ``seconds``, ``cost``, ``megapixels``, ``seed``,
``seed_sent``, ``seed_honoured``, ``input``, ``attempts``, ``refusal`` (the provider's reason,
None unless refused) and ``error`` (why a slot is empty when it was not a refusal).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from backends.base import (
    BackendError,
    BackendMissing,
    ConfigurationFault,
    InvalidRequest,
    ModelSpec,
    OutcomeUnknown,
    Refused,
    Request,
    Result,
)

if TYPE_CHECKING:
    import httpx
    from PIL.Image import Image

log = logging.getLogger("darkroom.backends.hosted")

# Free requests (polls, downloads, look-ups) are retried on these; paid ones only on 408/429.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
SAFE_TO_RESEND = frozenset({408, 429})  # the provider refused to start: nothing was charged
REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-goog-request-id", "x-tt-logid")
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    base_url: str
    timeout: float
    connect_timeout: float
    retries: int
    backoff: float
    max_backoff: float
    max_wait: float
    concurrency: int

    @classmethod
    def of(
        cls, spec: ModelSpec, base_url: str, defaults: Mapping[str, float] | None = None
    ) -> Options:
        """Options from the spec; ``defaults`` are the provider's (timeouts of its own SDK)."""
        given = dict(defaults or {})

        def number(name: str, default: float, low: float) -> float:
            value = spec.option(name, given.get(name, default))
            if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
                raise InvalidRequest(
                    f"profile option {name} must be a number >= {low:g}, not {value!r}"
                )
            return float(value)

        timeout = number("timeout", 120.0, 0.001)
        return cls(
            base_url=trusted_base_url(str(spec.option("base_url", base_url)).rstrip("/")),
            timeout=timeout,
            connect_timeout=min(timeout, number("connect_timeout", 10.0, 0.001)),
            retries=int(number("retries", 4, 0)),
            backoff=number("backoff", 1.0, 0),
            max_backoff=number("max_backoff", 30.0, 0),
            max_wait=number("max_wait", 120.0, 0),
            concurrency=int(number("concurrency", 4, 1)),
        )


def is_loopback_host(host: str | None) -> bool:
    """``localhost`` or a loopback address: traffic that never leaves this machine."""
    import ipaddress

    if not host:
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, for messages: never a user, password, path or
    query (a signed delivery URL carries its signature there)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    host = parts.hostname or ""
    return f"{parts.scheme}://{'[' + host + ']' if ':' in host else host}{port}"


def trusted_base_url(url: str) -> str:
    """``url`` if an API key may be sent there: https, or plain http to this machine (a
    test fake, a local proxy); no user, password, query or fragment. Else ConfigurationFault
    (the key would cross the network in clear text, or the URL hides something)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigurationFault(
            f"profile option base_url {origin(url)} is not a valid URL"
        ) from None
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ConfigurationFault(
            f"profile option base_url {origin(url)}: put no user, password, query or fragment "
            "in it (keys go in api_key_env or a credential, see docs/hosted.md)"
        )
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return url
    raise ConfigurationFault(
        f"profile option base_url {origin(url)} must be https:// (plain http only to "
        "localhost/127.0.0.1): the API key would otherwise cross the network in clear text"
    )


def api_key(spec: ModelSpec, provider: str, default_env: str) -> str:
    """The key from ``api_key_file``, the env var, or ``$CREDENTIALS_DIRECTORY``; else say
    which to set (a ConfigurationFault: the job waits for the operator, it is not the input)."""
    env = str(spec.option("api_key_env", default_env))
    credential = str(spec.option("credential", env))
    explicit = spec.option("api_key_file")
    if explicit:
        try:
            key = Path(explicit).expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigurationFault(
                f"{provider}: cannot read the API key file {explicit} (profile option "
                f"api_key_file): {exc.strerror or type(exc).__name__}"
            ) from None
        if key:
            return key
        raise ConfigurationFault(f"{provider}: the API key file {explicit} is empty")
    key = os.environ.get(env, "").strip()
    if key:
        return key
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and (Path(directory) / credential).is_file():
        key = (Path(directory) / credential).read_text().strip()
        if key:
            return key
    raise ConfigurationFault(
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


def header_request_id(response: httpx.Response) -> str | None:
    for name in REQUEST_ID_HEADERS:
        if response.headers.get(name):
            return str(response.headers[name])
    return None


class Client:
    """One provider's HTTP client: money-safe retries, backoff, ``Retry-After``, secrets scrubbed.

    ``auth`` headers go only with ``send(..., auth=True)`` (the default), so a download from a
    delivery host never carries the key. Provider hooks: ``describe(response)`` turns an error
    body into the provider's own words; ``wait_hint(response)`` may read a body-level retry
    delay; ``fault(response, text)`` returns an exception for an answer that must not be
    retried although its status usually is (a daily quota at 0, no credits).
    """

    def __init__(
        self,
        provider: str,
        options: Options,
        auth: dict[str, str],
        *,
        describe: Callable[[httpx.Response], str] | None = None,
        wait_hint: Callable[[httpx.Response], float | None] | None = None,
        fault: Callable[[httpx.Response, str], Exception | None] | None = None,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        httpx = require_httpx()
        self.provider = provider
        self.options = options
        self._auth = dict(auth)
        self._secrets = [v.split(" ")[-1] for v in auth.values() if v]
        self._describe = describe or (lambda r: r.text[:300])
        self._wait_hint = wait_hint or (lambda r: None)
        self._fault = fault or (lambda r, text: None)
        self._sleep = sleep
        self._httpx = httpx
        timeout = httpx.Timeout(options.timeout, connect=options.connect_timeout)
        self._http = httpx.Client(
            timeout=timeout, headers={"user-agent": "darkroom", **(headers or {})}
        )

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

    def send(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        auth: bool = True,
        attempts: list[int] | None = None,
        paid: bool = False,
    ) -> httpx.Response:
        """The first response that is not retried; see the module docstring for which are.

        ``paid``: the request may start work the provider charges for: it is resent only when
        the provider cannot have started it. ``attempts`` (a one-item list) is increased by the
        number of HTTP calls made. Raises ConfigurationFault (``fault`` hook), OutcomeUnknown
        (paid, outcome unknown) or BackendError once retries or waiting run out (transient).
        """
        httpx, o = self._httpx, self.options
        headers = self._auth if auth else {}
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            hint = None
            if attempts is not None:
                attempts[0] += 1
            try:
                # Redirects only without the key: httpx would forward a custom key header.
                response = self._http.request(
                    method, url, json=json, headers=headers, follow_redirects=not auth
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # The request never left this machine: resending cannot pay twice.
                problem = f"cannot connect ({type(exc).__name__})"
            except httpx.TimeoutException:
                if paid:
                    raise self._unknown(
                        f"no answer within {o.timeout:g} s (timeout) after the request was sent",
                        None,
                    ) from None
                problem = f"no answer within {o.timeout:g} s (timeout)"
            except httpx.TransportError as exc:
                if paid:
                    raise self._unknown(
                        f"the connection failed after the request was sent ({type(exc).__name__})",
                        None,
                    ) from None
                problem = f"connection failed ({type(exc).__name__})"
            else:
                status = response.status_code
                if status < 400 and status not in RETRY_STATUSES:
                    return response
                problem = self.describe(response)
                fault = self._fault(response, problem)
                if fault is not None:
                    raise fault
                if paid and status >= 500:
                    raise self._unknown(problem, header_request_id(response))
                if status not in (SAFE_TO_RESEND if paid else RETRY_STATUSES):
                    return response
                hint = retry_after(response.headers.get("retry-after"))
                if hint is None:
                    hint = self._wait_hint(response)
            if hint is not None:
                delay = hint
            else:
                delay = min(o.max_backoff, o.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1)
            if attempt > o.retries:
                break
            if waited + delay > o.max_wait:
                problem += (
                    f"; the next retry would wait {delay:.1f} s, past max_wait {o.max_wait:g} s"
                )
                break
            log.warning(
                "%s: %s; retrying in %.2f s (attempt %d of %d)",
                self.provider,
                problem,
                delay,
                attempt,
                o.retries + 1,
            )
            self._sleep(delay)
            waited += delay
        raise BackendError(
            f"{self.provider}: {problem} (gave up after {attempt} attempts, "
            f"{waited:.1f} s of backoff; nothing was charged for these attempts)"
        )

    def _unknown(self, problem: str, request_id: str | None) -> OutcomeUnknown:
        ref = f" [request {request_id}]" if request_id else ""
        return OutcomeUnknown(
            f"{self.provider}: {problem}{ref}. The provider may have started (and will charge "
            "for) this generation, so it was not resent; check the provider's console, then "
            "retry the job by hand if nothing was delivered",
            request_id=request_id,
        )

    def close(self) -> None:
        self._http.close()


_LIMITS: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_LIMITS_LOCK = threading.Lock()


def limiter(key: str, limit: int) -> threading.BoundedSemaphore:
    """A process-wide semaphore: every backend with the same key and limit shares it."""
    with _LIMITS_LOCK:
        return _LIMITS.setdefault((key, limit), threading.BoundedSemaphore(limit))


@dataclass(frozen=True)
class Failed:
    """One output that produced no image: its error (a Refused, or what stopped it)."""

    error: BaseException


# The order in which a request whose every output failed reports its outputs' errors: the
# one an operator must act on first. Lower wins.
_SEVERITY = ((ConfigurationFault, 0), (OutcomeUnknown, 1), (Refused, 3), (BackendError, 2))


def _severity(error: BaseException) -> int:
    return next((rank for cls, rank in _SEVERITY if isinstance(error, cls)), 2)


def in_parallel(jobs: Sequence[Callable[[], T]], key: str, limit: int) -> list[T | Failed]:
    """Run ``jobs`` at most ``limit`` at a time (process-wide for ``key``); results in order.

    Every output is paid for separately, so an output that succeeded is never thrown away
    because another failed (a job retry would pay for it again): a failed output becomes a
    ``Failed`` slot. After the first failure that is not a refusal, jobs not yet started are
    skipped (no more money on requests that fail anyway). Only when *no* output succeeded is
    an error raised: the most pressing one (configuration, then unknown outcome, then
    transient, then refusal), with a count when there were several.
    """
    gate = limiter(key, limit)
    stop = threading.Event()

    def gated(job: Callable[[], T]) -> T | Failed:
        with gate:
            if stop.is_set():
                return Failed(BackendError("not attempted: an earlier output of this step failed"))
            try:
                return job()
            except Refused as refused:  # one refused output does not stop the others
                return Failed(refused)
            except BackendError as exc:
                stop.set()
                return Failed(exc)

    if len(jobs) == 1:
        results = [gated(jobs[0])]
    else:
        with ThreadPoolExecutor(
            max_workers=min(limit, len(jobs)), thread_name_prefix="hosted"
        ) as pool:
            results = list(pool.map(gated, jobs))
    failures = [r.error for r in results if isinstance(r, Failed)]
    if failures and len(failures) == len(results):
        first = min(failures, key=_severity)
        if len(results) == 1:
            raise first
        if isinstance(first, Refused):
            raise Refused(f"{first} (all {len(results)} outputs refused)")
        first.args = (f"{first} (no output of {len(results)} succeeded)",)
        raise first
    return results


def split(
    spec: ModelSpec, provider: str, results: list[Any], started: float, **extra: Any
) -> Result:
    """A Result from ``in_parallel``'s (image, info) pairs; a ``Failed`` slot becomes ``None``
    with its reason in ``info["outputs"][k]["refusal"]`` (refused) or ``["error"]`` (a failed
    variant: the other outputs were paid for and are kept)."""
    images: list[Any] = []
    infos: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, Failed):
            error = result.error
            images.append(None)
            refused = isinstance(error, Refused)
            reason = str(error)
            if refused and not reason.startswith("refused by"):
                reason = f"refused by {provider}: {reason}"
            infos.append(
                {
                    "provider": provider,
                    "model": spec.model,
                    "request_id": getattr(error, "request_id", None),
                    "cost": 0.0,
                    "refusal": reason if refused else None,
                    "error": None if refused else f"{type(error).__name__}: {error}",
                }
            )
        else:
            images.append(result[0])
            infos.append(result[1])
    return Result(
        images=images,
        seconds=time.perf_counter() - started,
        info=summary(spec, provider, infos, **extra),
    )


def check_request(
    request: Request, provider: str, *, max_images: int, prompt_only: bool = False
) -> None:
    """What every hosted backend needs: inputs, seeds, a prompt, no mask, not too many images.
    ``prompt_only``: the model also makes images from the prompt alone (a brief's row)."""
    if not request.images and not prompt_only:
        raise InvalidRequest(f"{provider} needs at least one input image")
    if not request.seeds:
        raise InvalidRequest(f"{provider} needs at least one seed (one output per seed)")
    if not (request.prompt or "").strip():
        raise InvalidRequest(f"{provider} needs a prompt: the instruction for the edit")
    if request.mask is not None:
        raise InvalidRequest(
            f"{provider} takes no mask: describe the area in the prompt, "
            "or use a local inpaint profile (sdxl-inpaint, flux-fill)"
        )
    if len(request.images[:1]) + len(request.references) > max_images:
        raise InvalidRequest(
            f"{provider} takes at most {max_images} images per request (the input plus "
            f"{max_images - 1} references); this step has {len(request.references)} references: "
            f"drop {1 + len(request.references) - max_images}"
        )


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


def decode(data: bytes | str, provider: str, request_id: str | None = None) -> Image:
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(data) if isinstance(data, str) else data
        with Image.open(io.BytesIO(raw)) as image:
            return image.convert("RGB")
    except (ValueError, UnidentifiedImageError, OSError) as exc:
        # Delivered and charged: asking again would pay again.
        raise OutcomeUnknown(
            f"{provider} returned an image that cannot be decoded ({exc}); it was charged, "
            "so it is not requested again",
            request_id=request_id,
        ) from None


def cost(spec: ModelSpec, image: Image, preset: str | None = None) -> float | None:
    """Estimated USD for one output from the profile's prices; None when it declares none."""
    by_size = spec.option("price_by_size") or {}
    if preset is not None and preset in by_size:
        return float(by_size[preset])
    per_image, per_mp = spec.option("price_per_image"), spec.option("price_per_megapixel")
    if per_image is None and per_mp is None:
        return None
    return round(float(per_image or 0) + float(per_mp or 0) * image.width * image.height / 1e6, 6)


def output(
    spec: ModelSpec,
    provider: str,
    image: Image,
    *,
    request_id: str | None,
    seconds: float,
    seed: int,
    seed_sent: bool,
    seed_honoured: bool,
    input_index: int,
    attempts: int,
    preset: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": spec.model,
        "request_id": request_id,
        "seconds": round(seconds, 3),
        "cost": cost(spec, image, preset),
        "currency": "USD",
        "megapixels": round(image.width * image.height / 1e6, 3),
        "seed": seed,
        "seed_sent": seed_sent,
        "seed_honoured": seed_honoured,
        "input": input_index,
        "attempts": attempts,
        "refusal": None,
        "error": None,
        **extra,
    }


def summary(
    spec: ModelSpec, provider: str, outputs: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    costs = [o["cost"] for o in outputs]
    return {
        "provider": provider,
        "model": spec.model,
        "outputs": outputs,
        "cost": None if any(c is None for c in costs) else round(sum(costs), 6),
        "request_ids": [o.get("request_id") for o in outputs],
        **extra,
    }


@dataclass(frozen=True)
class ModelCheck:
    """What ``check_model`` found: ``verified`` False means the provider has no free way to
    look the model up for an API key (``detail`` says what was checked instead)."""

    provider: str
    model: str
    verified: bool
    detail: str


class HostedBackend:
    """What every provider's backend shares: options from the spec, the API key found at
    load (never earlier, never logged), one HTTP client, closed on unload. A provider sets
    the class attributes and ``auth_headers``; ``client_hooks`` adds its error reading;
    ``check`` looks the model up without paying for a generation."""

    task: ClassVar[str]
    provider: ClassVar[str]
    base_url: ClassVar[str]
    key_env: ClassVar[str]
    # The provider's own SDK timeouts (seconds): what a generation may legitimately take.
    defaults: ClassVar[dict[str, float]] = {}

    def __init__(self, spec: ModelSpec, cache_dir: Path) -> None:
        self.spec = spec
        self.cache_dir = Path(cache_dir)
        self.options = Options.of(spec, self.base_url, self.defaults)
        self._client: Client | None = None

    def auth_headers(self, key: str) -> dict[str, str]:
        raise NotImplementedError

    def client_hooks(self) -> dict[str, Any]:
        return {}

    def load(self) -> None:
        if self._client is None:
            key = api_key(self.spec, self.provider, self.key_env)
            self._client = Client(
                self.provider, self.options, self.auth_headers(key), **self.client_hooks()
            )

    def unload(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def check(self) -> ModelCheck:
        """Whether the model exists for this key; ConfigurationFault when it does not."""
        raise NotImplementedError


def check_model(spec: ModelSpec, cache_dir: Path | str = ".") -> ModelCheck:
    """Look up ``spec``'s hosted model with the configured key, without paying for an image.

    For ``darkroom doctor`` and the daemon's start-up check. Raises ConfigurationFault (no key,
    key refused, model unknown or retired for this key, no credits), BackendError (provider
    unreachable: try again later), InvalidRequest (``spec`` is not a hosted task).
    """
    from backends import backend_class

    cls = backend_class(spec.task)
    if not (isinstance(cls, type) and issubclass(cls, HostedBackend)):
        raise InvalidRequest(f"task {spec.task!r} is not a hosted model: nothing to check")
    backend = cls(spec, Path(cache_dir))
    backend.load()
    try:
        return backend.check()
    finally:
        backend.unload()


__all__ = [
    "Client",
    "Failed",
    "HostedBackend",
    "ModelCheck",
    "Options",
    "Refused",
    "api_key",
    "check_model",
    "check_request",
    "cost",
    "decode",
    "encode",
    "in_parallel",
    "limiter",
    "output",
    "retry_after",
    "split",
    "summary",
]
