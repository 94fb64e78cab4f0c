"""Live: each S3 source in events mode has a queue that exists and that its bucket notifies.

The queue is looked up (``GetQueueAttributes``: it exists, these credentials may read it);
then the bucket's notification configuration must send ``s3:ObjectCreated:*`` events for the
source's prefix to that queue's ARN. Without it the queue stays empty: the daemon would only
see new objects at each reconciliation listing. No message is received or sent, so a running
daemon sharing the queue loses nothing.
"""

from __future__ import annotations

from typing import Any

from daemon.config.settings import S3SourceConfig, Settings
from daemon.diagnose.findings import Finding, fail, ok, warn
from daemon.diagnose.s3 import client, explain


def check_events_source(name: str, source: S3SourceConfig) -> Finding:
    check = f"sqs source {name}"
    url = source.queue_url or ""
    try:
        sqs = client(source, "sqs")
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
    except Exception as exc:  # noqa: BLE001 - translated into one line
        message, fix = explain(exc, url, "read", f"sources.{name}")
        if "queue" in message or "Queue" in type(exc).__name__ or "NonExistent" in message:
            fix = f"create the queue, or fix sources.{name}.queue_url"
        return fail(check, message, fix)
    try:
        config = client(source).get_bucket_notification_configuration(Bucket=source.bucket)
    except Exception as exc:  # noqa: BLE001
        message, fix = explain(
            exc,
            f"s3://{source.bucket}",
            "read the notification configuration of",
            f"sources.{name}",
        )
        return warn(check, f"queue {arn} exists; {message}", fix)
    return _routes(check, name, source, arn, config)


def _routes(
    check: str, name: str, source: S3SourceConfig, arn: str, config: dict[str, Any]
) -> Finding:
    bucket = source.bucket
    queues = config.get("QueueConfigurations") or []
    ours = [q for q in queues if q.get("QueueArn") == arn]
    setup = (
        f"configure s3://{bucket} to send s3:ObjectCreated:* events to {arn}"
        " (aws s3api put-bucket-notification-configuration; docs/s3.md)"
    )
    if not ours:
        others = sorted({str(q.get("QueueArn")) for q in queues})
        if others:
            return fail(
                check,
                f"s3://{bucket} sends its notifications to {', '.join(others)}, not to"
                f" {arn}: this queue receives none",
                f"point sources.{name}.queue_url at that queue, or {setup}",
            )
        return fail(
            check,
            f"s3://{bucket} has no notification to {arn}: the queue receives no events"
            " (new objects are only found by the reconciliation listing)",
            setup,
        )
    prefix = source.prefix.strip("/")
    for entry in ours:
        events = entry.get("Events") or []
        created = any(e in ("s3:ObjectCreated:*", "s3:ObjectCreated:Put") for e in events)
        rules = entry.get("Filter", {}).get("Key", {}).get("FilterRules", [])
        wanted = next(
            (r.get("Value", "") for r in rules if r.get("Name", "").lower() == "prefix"), ""
        )
        covers = not wanted or prefix.startswith(wanted) or wanted.startswith(prefix)
        if created and covers:
            partial = (
                ""
                if "s3:ObjectCreated:*" in events
                else " (Put only: copies and multipart uploads are missed)"
            )
            return ok(
                check,
                f"{source.queue_url} exists and receives s3://{bucket}'s ObjectCreated events{partial}",
            )
    return fail(
        check,
        f"s3://{bucket} notifies {arn}, but not of ObjectCreated events under {source.where()}",
        setup,
    )


def check_sqs(settings: Settings) -> list[Finding]:
    return [
        check_events_source(name, source)
        for name, source in settings.sources.items()
        if isinstance(source, S3SourceConfig) and source.mode == "events"
    ]
