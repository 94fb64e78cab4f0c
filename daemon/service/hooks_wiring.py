"""The webhook observer and the announcing of review decisions, as the daemon wires them.

:class:`WebhookHooks` turns committed manifests and recorded decisions into webhook events
(for whichever sender is current: a reload may replace it). :class:`DecisionAnnouncer`
takes the decision log's outbox to the hooks, once per decision, whoever made it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from daemon.config.settings import Settings
from daemon.hooks import Hooks
from daemon.outputs.manifest import Manifest
from daemon.outputs.paths import page_path_for
from daemon.review.decisions import Decided
from daemon.review.log import DecisionLog, DecisionRow
from daemon.service.webhooks import (
    OnFailure,
    WebhookSender,
    event_from_decision,
    event_from_manifest,
)
from daemon.sinks.base import Sink

__all__ = ["DecisionAnnouncer", "WebhookHooks", "build_webhook_sender"]

log = structlog.get_logger("darkroom.app")  # the composition root's logger, as before the split


def build_webhook_sender(
    settings: Settings, on_failure: OnFailure, *, any_source: bool
) -> WebhookSender | None:
    """The sender for ``webhooks``, or None when no URL is set (or for ``darkroom process``)."""
    w = settings.webhooks
    if not w.urls or any_source:
        return None
    return WebhookSender(
        w.urls,
        w.secret.get_secret_value() if w.secret else None,
        timeout=w.timeout,
        max_attempts=w.max_attempts,
        backoff=w.backoff,
        queue_size=w.queue_size,
        on_failure=on_failure,
        legacy_signature=w.legacy_signature,
    )


class WebhookHooks(Hooks):
    """Sends the webhook event of each committed manifest (to whichever sender is current:
    a reload may replace it)."""

    def __init__(self, sender: Callable[[], WebhookSender | None]):
        self.sender = sender

    def plan_committed(self, sink: Sink, manifest: Manifest, manifest_path: str) -> None:
        sender = self.sender()
        if sender is None:
            return
        sender.send(
            event_from_manifest(
                manifest,
                manifest_url=sink.location(manifest_path),
                sheet_url=sink.location(manifest.sheet) if manifest.sheet else None,
                page_url=sink.location(page_path_for(manifest_path)),
                output_url=sink.location,
            )
        )

    def variant_decided(self, sink: Sink, decision: DecisionRow) -> None:
        sender = self.sender()
        if sender is None:
            return
        sender.send(
            event_from_decision(
                decision,
                output_url=sink.location(decision.output),
                manifest_url=sink.location(decision.manifest),
                page_url=sink.location(page_path_for(decision.manifest)),
                approved_url=sink.location(decision.approved_copy)
                if decision.approved_copy
                else None,
            )
        )


class DecisionAnnouncer:
    """Records the review server's decisions and announces every pending one to the hooks."""

    def __init__(self, decisions: DecisionLog, sinks: dict[str, Sink], hooks: Hooks) -> None:
        self.decisions = decisions
        self.sinks = sinks
        self.hooks = hooks
        self._announcing = threading.Lock()

    def record(self, sink: str, decided: list[Decided]) -> None:
        """The review server's decisions: into the ledger's log, then announced at once."""
        self.decisions.record(sink, decided)
        self.announce()

    def announce(self) -> None:
        """Tell the hooks (webhooks first) about decisions not announced yet, whoever made
        them: the server, or ``darkroom review`` while this daemon was running or down."""
        with self._announcing:
            while rows := self.decisions.pending():
                for row in rows:
                    sink = self.sinks.get(row.sink)
                    if sink is None:
                        log.warning("decision for a sink not configured", sink=row.sink)
                    else:
                        self.hooks.variant_decided(sink, row)
                self.decisions.mark_handled(r.id for r in rows)
