"""S3 event notifications as SQS delivers them: which messages are tests, which records count.

Bodies come straight from S3, or wrapped in an SNS envelope (``Type: Notification``) when the
topic's raw delivery is off. Only ObjectCreated records matter; keys are form-encoded in events
and are decoded with ``unquote_plus``; ETags are stored without quotes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

import structlog

from daemon.sources.s3.common import ns, unquote_etag

log = structlog.get_logger("darkroom.sources")

__all__ = ["Record", "parse_message"]


@dataclass(frozen=True)
class Record:
    """One ObjectCreated record of an S3 event notification."""

    bucket: str
    key: str  # full object key, decoded
    size: int
    etag: str | None
    mtime_ns: int
    event: str


def parse_message(body: str) -> tuple[Literal["test", "records", "unknown"], list[Record]]:
    """Classify an SQS message body: ``("test", [])`` for s3:TestEvent, ``("records", [...])``
    for S3 event notifications (ObjectCreated records only; SNS envelopes unwrapped), and
    ``("unknown", [])`` for anything else."""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and data.get("Type") == "Notification" and "Message" in data:
            data = json.loads(data["Message"])  # S3 -> SNS -> SQS without raw delivery
    except (TypeError, ValueError):
        return "unknown", []
    if not isinstance(data, dict):
        return "unknown", []
    if data.get("Event") == "s3:TestEvent":
        return "test", []
    records = data.get("Records")
    if not isinstance(records, list):
        return "unknown", []
    out = []
    for raw in records:
        try:
            name = str(raw.get("eventName", ""))
            name = name[3:] if name.startswith("s3:") else name
            if raw.get("eventSource", "aws:s3") != "aws:s3" or not name.startswith(
                "ObjectCreated:"
            ):
                continue
            s3 = raw["s3"]
            etag = s3["object"].get("eTag") or s3["object"].get("etag")
            out.append(
                Record(
                    bucket=s3["bucket"]["name"],
                    key=unquote_plus(s3["object"]["key"]),
                    size=int(s3["object"].get("size", 0)),
                    etag=unquote_etag(etag) if etag else None,
                    mtime_ns=_event_time_ns(raw.get("eventTime")),
                    event=name,
                )
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            log.warning("malformed S3 event record skipped", record=str(raw)[:500])
    return "records", out


def _event_time_ns(text: Any) -> int:
    """An S3 eventTime ("2026-11-27T01:07:49.180Z") in ns; 0 when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return 0
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return 0
    return ns(when)
