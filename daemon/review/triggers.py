"""Rules started by decisions: an approved (or rejected) variant, or a refine round.

A decision recorded in the ledger's log reaches :class:`DecisionTriggers` once
(``variant_decided``). It hands intake an arrival from the sink's ``review:<sink>`` source
(:mod:`daemon.sources.decided`) whose key is the decided output and whose context carries
the decision - ``{decision}``, ``{note}``, ``{decided_by}``, ``{parent_rule}``,
``{parent_key}``, ``{round}`` - so the same matching, planning, ledger and outputs run it:

- approve / reject: every ``on: approved`` / ``on: rejected`` rule that follows the output's
  rule (``after``) takes the variant as its input (channel renditions, an upscale, a clip);
- refine (a note): the output's rule runs again (or the rule its ``refine:`` names) on the
  variant, its prompt extended by the note - round N+1.

When such a plan commits, :class:`FollowUps` adds it to the parent manifest's
``follow_ups`` and republishes the parent's page, so the source's page links what followed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog

from daemon.hooks import Hooks
from daemon.outputs.manifest import FollowUp, Manifest
from daemon.outputs.paths import page_path_for
from daemon.review.decisions import Action, load_manifest, rewrite_manifest
from daemon.review.log import DecisionRow
from daemon.rules.match import RuleSet
from daemon.sinks.base import Sink
from daemon.sources.decided import source_name_for
from daemon.types import Arrival

__all__ = ["DecisionTriggers", "FollowUps"]

log = structlog.get_logger("darkroom.review")

TRIGGERS = {Action.APPROVE: "approved", Action.REJECT: "rejected", Action.REFINE: "refine"}


class DecisionTriggers(Hooks):
    """Turns decisions into arrivals for the rules that follow them."""

    def __init__(self, emit: Callable[[Arrival], None], rules: Callable[[], RuleSet]) -> None:
        self.emit = emit
        self.rules = rules  # the current rule set (a reload swaps it)

    def variant_decided(self, sink: Sink, decision: DecisionRow) -> None:
        trigger = TRIGGERS.get(decision.action)
        if trigger is None:
            return
        rules = self.rules()
        parent = _manifest(sink, decision.manifest)
        parent_round = parent.follows.round if parent and parent.follows else 1
        context = {
            "decision": trigger,
            "note": decision.note or "",
            "decided_by": decision.by,
            "parent_rule": decision.rule,
            "parent_key": decision.source_key,
            "parent_manifest": decision.manifest,
            "parent_output": decision.output,
            "round": str(parent_round + 1 if trigger == "refine" else parent_round),
        }
        if trigger == "refine":
            rule = rules.by_name.get(decision.rule)
            if rule is None:
                log.warning("refine: the output's rule is gone", rule=decision.rule)
                return
            context["refine_rule"] = rule.rule.refine or decision.rule
            made_with = _prompt_of(parent, decision.output) if parent else None
            if made_with:  # round N+1 extends round N's prompt, notes included
                context["parent_prompt"] = made_with
        elif not any(r.rule.on == trigger for r in rules.rules):
            return  # no rule follows this kind of decision: nothing to read
        self.emit(
            Arrival(
                source=source_name_for(sink.name),
                key=decision.output,
                uri=sink.location(decision.output),
                size=_size_of(sink, decision.output),
                mtime_ns=decision.id,  # each decision is its own event
                trigger=trigger,
                context=tuple(sorted(context.items())),
            )
        )


def _size_of(sink: Sink, path: str) -> int:
    """The decided output's size, for the follow-up's page (0 when it cannot be read now:
    intake reads it again and says why)."""
    try:
        return len(sink.read(path))
    except Exception:  # noqa: BLE001 - reported by intake, which reads it for real
        return 0


def _manifest(sink: Sink, manifest_path: str) -> Manifest | None:
    try:
        return load_manifest(sink.read(manifest_path), manifest_path)
    except Exception:  # noqa: BLE001 - no parent to read: round 1, the rule's prompt
        return None


def _prompt_of(manifest: Manifest, output: str) -> str | None:
    """The prompt the unit that wrote ``output`` was given."""
    for step, record in manifest.outputs():
        if record.path == output:
            return step.prompt
    return None


class FollowUps(Hooks):
    """Links a committed follow-up (a decision-started plan) from its parent's page."""

    def __init__(self, sinks: Mapping[str, Sink], attempts: int = 20) -> None:
        self.sinks = sinks
        self.attempts = attempts

    def plan_committed(self, sink: Sink, manifest: Manifest, manifest_path: str) -> None:
        follows = manifest.follows
        if follows is None:
            return
        from daemon.errors import WriteConflict
        from daemon.outputs.page import publish

        entry = FollowUp(
            rule=manifest.rule.name or "",
            trigger=follows.trigger,
            note=follows.note,
            round=follows.round,
            output=follows.output,
            manifest=manifest_path,
            page=page_path_for(manifest_path),
            outputs=[str(o.path) for o in manifest.written()],
            status=manifest.status,
        )
        try:
            updated = rewrite_manifest(
                sink,
                follows.manifest,
                lambda parent: parent.with_follow_up(entry),
                where=follows.manifest,
                attempts=self.attempts,
            )
        except WriteConflict:
            log.warning("could not link a follow-up from its parent", parent=follows.manifest)
            return
        if updated is not None:  # else the parent is gone: nothing to link from
            publish(sink, updated, manifest_path=follows.manifest)
