"""Webhook events: the JSON object sent when a source is finished or a reviewer decides.

See :mod:`daemon.service.webhooks` for the event's shape; ``id`` is what receivers
de-duplicate on (``webhook-id``).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from typing import Any

from daemon.outputs.manifest import Manifest
from daemon.review.log import DecisionRow

__all__ = ["EVENT_TYPES", "event_from_decision", "event_from_manifest", "now_iso"]

EVENT_TYPES = ("source.done", "source.failed")


def event_from_manifest(
    manifest: Manifest,
    *,
    manifest_url: str,
    sheet_url: str | None = None,
    page_url: str | None = None,
    output_url: Callable[[str], str] = str,
) -> dict[str, Any]:
    """The webhook event for a committed manifest.

    Locations are whatever the sink calls them (``sink.location(path)``): file paths or
    ``s3://`` URLs. ``partial`` (some steps failed) is sent as ``source.failed`` with
    ``status: partial``."""
    status = manifest.status or "failed"
    source = manifest.source
    return {
        "type": "source.done" if status == "done" else "source.failed",
        "id": str(uuid.uuid4()),
        "created_at": now_iso(),
        "source": {"source": source.source, "key": source.key, "sha256": source.sha256},
        "rule": manifest.rule.name,
        "status": status,
        "outputs": [output_url(str(o.path)) for o in manifest.written()],
        "manifest": manifest_url,
        "sheet": sheet_url,
        "page": page_url,
    }


def event_from_decision(
    decision: DecisionRow,
    *,
    output_url: str,
    manifest_url: str,
    page_url: str,
    approved_url: str | None = None,
) -> dict[str, Any]:
    """The webhook event for a reviewer's decision: ``variant.approved``, ``.rejected``,
    ``.starred``, ``.unstarred`` or ``.noted``. Its id is the decision's, so a redelivery
    after a restart is recognisable as the same message."""
    return {
        "type": decision.action.event,
        "id": f"decision-{decision.id}-{decision.at}",
        "created_at": decision.at,
        "source": {"key": decision.source_key},
        "rule": decision.rule,
        "output": output_url,
        "decision": decision.decision,
        "starred": decision.starred,
        "note": decision.note,
        "by": decision.by,
        "approved_copy": approved_url,
        "manifest": manifest_url,
        "page": page_url,
    }


def now_iso() -> str:
    """Now, as events write it (ISO 8601 UTC, whole seconds)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
