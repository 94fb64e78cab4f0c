"""The daemon's hooks: what the runner and the pool tell the rest of the service.

In the style of dramatiq's middleware: :class:`Hooks` has one no-op method per event, and
an observer (metrics, webhooks, settlement) overrides only the events it cares about. The
composition root (:mod:`daemon.service.app`) builds one :class:`HookChain` of them and hands
it to the runner and the pool, which call it without knowing who listens::

    class Metrics(Hooks):
        def job_ended(self, rule, state, profile, model_seconds): ...

    hooks = HookChain([metrics, settlement, webhooks])
    runner = Runner(..., hooks=hooks)

Events are called on the pipeline and loop threads, after the fact they report is durable
(a job's outcome is in the ledger, a manifest is committed): a hook must be quick and
thread-safe, and may not raise — :class:`HookChain` logs and swallows what one raises, so a
broken observer never costs a job.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import structlog

from daemon.types import JobState, PlanState

if TYPE_CHECKING:
    from daemon.outputs.manifest import Manifest
    from daemon.review.log import DecisionRow
    from daemon.sinks.base import Sink

log = structlog.get_logger("darkroom.hooks")

__all__ = ["HookChain", "Hooks"]


class Hooks:
    """Every event the daemon reports; each method is a no-op here."""

    def job_ended(
        self, rule: str, state: JobState, profile: str | None, model_seconds: float | None
    ) -> None:
        """A job reached a final state (``DONE`` or ``FAILED``; a retry is not an end).
        ``profile`` and ``model_seconds`` are set when a model call produced its outputs."""

    def plan_committed(self, sink: Sink, manifest: Manifest, manifest_path: str) -> None:
        """A plan's manifest (the commit marker) was written to ``sink`` at ``manifest_path``."""

    def plan_finished(self, plan_id: str, status: PlanState) -> None:
        """A plan is closed in the ledger: committed by this daemon, or adopted from another."""

    def model_loaded(self, profile: str, device: str, seconds: float) -> None:
        """A worker loaded a model pipeline (preloads included)."""

    def model_evicted(self, profile: str, device: str) -> None:
        """A worker unloaded a model pipeline to stay within its memory budget."""

    def worker_restarted(self, device: str, reason: str) -> None:
        """A worker process was replaced after a crash, a hang or a device error."""

    def variant_decided(self, sink: Sink, decision: DecisionRow) -> None:
        """A reviewer approved, rejected, starred or noted an output (from the review server
        or ``darkroom review``); called once per recorded decision, after it is stored."""


class HookChain(Hooks):
    """Calls every hook in order; one that raises is logged and skipped, never propagated."""

    def __init__(self, hooks: Iterable[Hooks] = ()) -> None:
        self.hooks: list[Hooks] = list(hooks)

    def add(self, hook: Hooks) -> None:
        self.hooks.append(hook)

    def job_ended(
        self, rule: str, state: JobState, profile: str | None, model_seconds: float | None
    ) -> None:
        for hook in self.hooks:
            try:
                hook.job_ended(rule, state, profile, model_seconds)
            except Exception:
                log.exception("hook failed", hook=type(hook).__name__, call="job_ended")

    def plan_committed(self, sink: Sink, manifest: Manifest, manifest_path: str) -> None:
        for hook in self.hooks:
            try:
                hook.plan_committed(sink, manifest, manifest_path)
            except Exception:
                log.exception("hook failed", hook=type(hook).__name__, call="plan_committed")

    def plan_finished(self, plan_id: str, status: PlanState) -> None:
        for hook in self.hooks:
            try:
                hook.plan_finished(plan_id, status)
            except Exception:
                log.exception("hook failed", hook=type(hook).__name__, call="plan_finished")

    def model_loaded(self, profile: str, device: str, seconds: float) -> None:
        for hook in self.hooks:
            try:
                hook.model_loaded(profile, device, seconds)
            except Exception:
                log.exception("hook failed", hook=type(hook).__name__, call="model_loaded")

    def model_evicted(self, profile: str, device: str) -> None:
        for hook in self.hooks:
            try:
                hook.model_evicted(profile, device)
            except Exception:
                log.exception("hook failed", hook=type(hook).__name__, call="model_evicted")

    def worker_restarted(self, device: str, reason: str) -> None:
        for hook in self.hooks:
            try:
                hook.worker_restarted(device, reason)
            except Exception:
                log.exception("hook failed", hook=type(hook).__name__, call="worker_restarted")

    def variant_decided(self, sink: Sink, decision: DecisionRow) -> None:
        for hook in self.hooks:
            try:
                hook.variant_decided(sink, decision)
            except Exception:
                log.exception("hook failed", hook=type(hook).__name__, call="variant_decided")
