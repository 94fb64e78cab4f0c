"""The boto3 seam: client construction and error translation, in one place.

boto3 is imported here, lazily (``import daemon`` never imports it). Credentials come from
boto3's standard chain only — environment, shared config/credentials files, SSO, container or
instance role — and are never read from Darkroom's config nor logged. ``endpoint_url`` points
the clients at an S3-compatible store (MinIO, R2, Ceph) or a test server.

Errors are translated where they are met::

    botocore ClientError / BotoCoreError
    ├── 404 NoSuchKey, NoSuchBucket, 403 AccessDenied, 400 ...  -> permanent  (retryable=False)
    ├── 412 PreconditionFailed                                 -> "changed"  (retryable=False)
    └── throttling, 5xx, timeouts, connection errors            -> transient  (retryable=True)

``translate(exc, where, error=InputError)`` returns a ``DarkroomError`` of the wanted class
whose message names the bucket/key (``where``) and, for access problems, the missing
permission; its ``retryable`` says whether trying again later can help. Retries of transient
errors inside one call are botocore's (``retries={"mode": "standard"}``).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from daemon.errors import ConfigError, DarkroomError, EnvironmentFault, InputError, OutputError

__all__ = [
    "client",
    "error_code",
    "http_status",
    "is_not_found",
    "is_precondition_failed",
    "stop_path_client",
    "translate",
    "translated",
]

_NOT_FOUND = {
    "NoSuchKey",
    "NotFound",
    "404",
    "NoSuchBucket",
    "NoSuchUpload",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
}
_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
    "AccessDeniedException",
    "InvalidClientTokenId",
}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
# Codes that say the setup is wrong, not one object: met while writing outputs, they hold
# the job instead of failing it.
_ENVIRONMENT = _DENIED | {
    "NoSuchBucket",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
}
_TRANSIENT = {
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "OperationAborted",
    "ProvisionedThroughputExceededException",
    "500",
    "503",
}


def client(
    service: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    max_pool_connections: int = 10,
    connect_timeout: float = 10,
    read_timeout: float = 60,  # above SQS's longest long poll (20 s)
    max_attempts: int = 5,
) -> Any:
    """A botocore client for ``service`` ("s3", "sqs") with standard-mode retries.

    A new session per client: boto3's default session is not thread-safe to create clients
    from, and each source/sink owns its clients. Clients themselves are thread-safe. Calls
    made while the daemon stops use :func:`stop_path_client` instead.
    """
    try:
        import boto3.session
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - boto3 is a dependency
        raise DarkroomError(
            f"S3 support needs boto3 ({exc}); install it: pip install boto3"
        ) from None
    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    from botocore.exceptions import NoRegionError

    session = boto3.session.Session()
    try:
        return session.client(service, endpoint_url=endpoint_url, region_name=region, config=config)
    except NoRegionError:
        raise ConfigError(
            f"{service}: no AWS region; set `region:` on the source or sink, or "
            "AWS_DEFAULT_REGION / AWS_REGION in the environment"
        ) from None


# The stop path: SIGTERM must end the daemon within worker.stop_timeout plus a few seconds,
# so a call made on the way out (releasing held SQS messages) gets one try and short
# timeouts; what it could not do, the queue's visibility timeout does later.
STOP_CONNECT_TIMEOUT = 2.0
STOP_READ_TIMEOUT = 3.0


def stop_path_client(
    service: str, *, endpoint_url: str | None = None, region: str | None = None
) -> Any:
    """A client for calls made while stopping: one attempt, short connect/read timeouts."""
    return client(
        service,
        endpoint_url=endpoint_url,
        region=region,
        max_pool_connections=2,
        connect_timeout=STOP_CONNECT_TIMEOUT,
        read_timeout=STOP_READ_TIMEOUT,
        max_attempts=1,
    )


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ("NoSuchKey", "412", ...), else ""."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", "") or "")
    return ""


def http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in _NOT_FOUND or http_status(exc) == 404


def is_precondition_failed(exc: BaseException) -> bool:
    """412 PreconditionFailed (If-Match / If-None-Match did not hold) or 409
    ConditionalRequestConflict (a concurrent conditional write won the race)."""
    return error_code(exc) in _PRECONDITION or http_status(exc) == 412


def _is_transient(exc: BaseException) -> bool:
    code, status = error_code(exc), http_status(exc)
    if code in _TRANSIENT or (status is not None and status >= 500):
        return True
    try:
        from botocore.exceptions import (
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )
    except ImportError:  # pragma: no cover
        return False
    return isinstance(
        exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)
    )


_URL = re.compile(r"""https?://[^\s"'<>]+""")


def redact_urls(text: str) -> str:
    """``text`` with each URL cut to scheme, host and path: botocore repeats the request URL
    (a presigned query, a user:password endpoint) in its messages, which reach logs."""

    def cut(match: re.Match[str]) -> str:
        parts = urllib.parse.urlsplit(match.group(0))
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))

    return _URL.sub(cut, text)


def _describe(exc: BaseException) -> str:
    code = error_code(exc)
    if code:
        message = getattr(exc, "response", {}).get("Error", {}).get("Message") or ""
        return redact_urls(f"{code}: {message}".rstrip(": "))
    return redact_urls(str(exc) or type(exc).__name__)


def translate(
    exc: BaseException,
    where: str,
    *,
    action: str = "access",
    error: type[DarkroomError] = InputError,
) -> DarkroomError:
    """A DarkroomError of class ``error`` for a botocore exception met at ``where``.

    ``where`` is ``s3://bucket/key`` or a queue URL; ``action`` is the verb the user reads
    ("read", "write", "list", "receive from"). Credentials never appear: botocore's messages
    do not contain them and we add none.
    """
    if isinstance(exc, DarkroomError):
        return exc
    retryable = False
    try:
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError

        no_credentials = isinstance(exc, (NoCredentialsError, PartialCredentialsError))
    except ImportError:  # pragma: no cover
        no_credentials = False
    if no_credentials:
        text = (
            f"cannot {action} {where}: no AWS credentials found; set them for boto3's standard "
            "chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials, "
            "or an instance/container role) — never in Darkroom's config"
        )
    elif is_precondition_failed(exc):
        text = f"{where} changed since it was announced (a newer version replaced it): {_describe(exc)}"
    elif is_not_found(exc):
        what = (
            "bucket"
            if error_code(exc) == "NoSuchBucket"
            else "queue"
            if "Queue" in error_code(exc)
            else "object"
        )
        text = f"cannot {action} {where}: no such {what} ({_describe(exc)})"
    elif error_code(exc) in _DENIED or http_status(exc) == 403:
        text = (
            f"cannot {action} {where}: access denied ({_describe(exc)}); check the IAM policy "
            "for this mode in docs/s3.md"
        )
    elif _is_transient(exc):
        retryable = True
        text = f"cannot {action} {where} right now, will try again: {_describe(exc)}"
    else:
        text = f"cannot {action} {where}: {_describe(exc)}"
    if (
        issubclass(error, OutputError)
        and not is_precondition_failed(exc)
        and (
            no_credentials
            or retryable
            or error_code(exc) in _ENVIRONMENT
            or http_status(exc) == 403
        )
    ):
        # Writing outputs: a missing bucket, refused or missing credentials, a throttled or
        # failing endpoint are the environment's faults. The job is held (the input stays)
        # and resumes once the cause is fixed; see daemon.errors.EnvironmentFault.
        return EnvironmentFault(text)
    out = error(text)
    out.retryable = retryable  # instance attribute: transient input errors are worth retrying
    if isinstance(out, InputError):
        # Replaced or deleted inputs are gone: nothing to quarantine, a newer event may follow.
        out.gone = is_precondition_failed(exc) or is_not_found(exc)
    return out


def _botocore_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


@contextmanager
def translated(
    where: str, *, action: str = "access", error: type[DarkroomError] = InputError
) -> Iterator[None]:
    """``with translated("s3://b/k", action="read"): ...`` raises ``error`` for botocore errors."""
    try:
        yield
    except _botocore_errors() as exc:
        raise translate(exc, where, action=action, error=error) from None
