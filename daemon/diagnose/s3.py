"""Live: AWS credentials, and each S3 source readable and each S3 sink writable.

A sink is probed the way it writes: a conditional ``PutObject`` (``IfNoneMatch="*"``, which
manifests need) of a small object under ``<prefix>/.darkroom-doctor/``, read back, then
deleted. A source is listed (its prefix) and, when it has a ``quarantine_prefix``, probed there
too. botocore errors become one line each with the fix (:func:`explain`); boto3 is imported
only here, inside the calls.
"""

from __future__ import annotations

import uuid
from typing import Any

from daemon import aws
from daemon.config.settings import S3Endpoint, S3SinkConfig, S3SourceConfig, Settings
from daemon.diagnose.findings import Finding, fail, ok, warn

PROBE_FOLDER = ".darkroom-doctor"
PROBE_BODY = b"written by darkroom doctor; safe to delete\n"


def client(endpoint: S3Endpoint, service: str = "s3") -> Any:
    """A client that gives up fast: doctor reports, it does not wait out outages."""
    return aws.client(
        service,
        endpoint_url=endpoint.endpoint_url,
        region=endpoint.region,
        connect_timeout=5,
        read_timeout=15,
        max_attempts=2,
    )


def explain(exc: BaseException, where: str, action: str, owner: str) -> tuple[str, str]:
    """(message, fix) for a botocore error met while ``action``-ing ``where``; ``owner`` is
    the config key of the bucket (``sinks.out``)."""
    message = str(aws.translate(exc, where, action=action))
    code = aws.error_code(exc)
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        fix = "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role"
    elif code == "NoSuchBucket" or (aws.is_not_found(exc) and action != "read back"):
        fix = f"create the bucket, or fix {owner}.bucket"
    elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
        fix = "the credentials were refused: renew them or fix AWS_ACCESS_KEY_ID/SECRET"
    elif code in ("AccessDenied", "403", "Forbidden") or aws.http_status(exc) == 403:
        fix = f"grant this role the {action} permission on {where} (IAM policy in docs/s3.md)"
    elif code in ("NotImplemented", "501"):
        fix = "this store does not support conditional writes (If-None-Match), which sinks need"
    elif "Endpoint" in name or "Connect" in name or "Timeout" in name:
        fix = f"check {owner}.endpoint_url / the network: the endpoint did not answer"
    else:
        fix = "see the error above; docs/s3.md lists what each mode needs"
    return message, fix


def check_credentials(endpoints: list[S3Endpoint]) -> Finding | None:
    """Where boto3 finds credentials (never their values); None when nothing uses S3."""
    if not endpoints:
        return None
    import boto3.session

    try:
        credentials = boto3.session.Session().get_credentials()
    except Exception as exc:  # noqa: BLE001 - a broken shared config file raises its own
        return fail("aws credentials", f"cannot be read: {type(exc).__name__}: {exc}", None)
    if credentials is None:
        return fail(
            "aws credentials",
            "none found by boto3's chain",
            "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (systemd: EnvironmentFile or "
            "LoadCredential), AWS_PROFILE, or use an instance/container role",
        )
    return ok("aws credentials", f"found ({credentials.method}); the bucket checks use them")


def check_source(name: str, source: S3SourceConfig) -> list[Finding]:
    check = f"s3 source {name}"
    where = source.where()
    try:
        s3 = client(source)
        s3.head_bucket(Bucket=source.bucket)
    except Exception as exc:  # noqa: BLE001 - translated into one line
        message, fix = explain(exc, where, "list", f"sources.{name}")
        if aws.is_not_found(exc):  # HeadBucket's 404 names no code
            message = f"cannot list {where}: no such bucket"
        return [fail(check, message, fix)]
    try:
        listed = s3.list_objects_v2(Bucket=source.bucket, Prefix=_prefix(source), MaxKeys=1)
    except Exception as exc:  # noqa: BLE001 - translated into one line
        message, fix = explain(exc, where, "list", f"sources.{name}")
        return [fail(check, message, fix)]
    some = "objects there" if listed.get("KeyCount") else "empty so far"
    findings = [ok(check, f"{where} readable ({some})")]
    if source.quarantine_prefix:
        target = S3Endpoint(
            bucket=source.bucket,
            prefix=source.quarantine_prefix,
            endpoint_url=source.endpoint_url,
            region=source.region,
        )
        findings.append(_probe_write(f"{check} quarantine", target, f"sources.{name}", s3))
    return findings


def check_sink(name: str, sink: S3SinkConfig) -> Finding:
    try:
        s3 = client(sink)
    except Exception as exc:  # noqa: BLE001
        message, fix = explain(exc, sink.where(), "write", f"sinks.{name}")
        return fail(f"s3 sink {name}", message, fix)
    return _probe_write(f"s3 sink {name}", sink, f"sinks.{name}", s3)


def _probe_write(check: str, endpoint: S3Endpoint, owner: str, s3: Any) -> Finding:
    key = f"{_prefix(endpoint)}{PROBE_FOLDER}/{uuid.uuid4().hex}.txt"
    where = f"s3://{endpoint.bucket}/{key}"
    try:
        s3.put_object(Bucket=endpoint.bucket, Key=key, Body=PROBE_BODY, IfNoneMatch="*")
    except Exception as exc:  # noqa: BLE001
        message, fix = explain(exc, where, "write", owner)
        return fail(check, message, fix)
    try:
        s3.get_object(Bucket=endpoint.bucket, Key=key)["Body"].read()
    except Exception as exc:  # noqa: BLE001
        message, fix = explain(exc, where, "read back", owner)
        _delete(s3, endpoint.bucket, key)
        return fail(check, message, fix)
    if not _delete(s3, endpoint.bucket, key):
        return warn(
            check,
            f"{endpoint.where()} writable, but the probe {where} could not be deleted",
            f"delete it; grant s3:DeleteObject on {endpoint.where()}{PROBE_FOLDER}/ to tidy up",
        )
    return ok(check, f"{endpoint.where()} writable (probe written, read and deleted)")


def _delete(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.delete_object(Bucket=bucket, Key=key)
    except Exception:  # noqa: BLE001 - reported by the caller
        return False
    return True


def _prefix(endpoint: S3Endpoint) -> str:
    prefix = endpoint.prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def check_s3(settings: Settings) -> list[Finding]:
    sources = {n: s for n, s in settings.sources.items() if isinstance(s, S3SourceConfig)}
    sinks = {n: s for n, s in settings.sinks.items() if isinstance(s, S3SinkConfig)}
    findings: list[Finding] = []
    credentials = check_credentials([*sources.values(), *sinks.values()])
    if credentials is not None:
        findings.append(credentials)
    for name, source in sources.items():
        findings += check_source(name, source)
    for name, sink in sinks.items():
        findings.append(check_sink(name, sink))
    return findings
