"""Building a round's manifest: a plan whose units have all ended, and how each unit ended.

    build_manifest(plan, plan_id=..., status=..., units=..., ...) -> Manifest

The models are :mod:`daemon.outputs.manifest`'s (which re-exports :func:`build_manifest`);
a key the builder does not set stays out of the file (see its docstring on tolerance).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from daemon.outputs.manifest import (
    Follows,
    Manifest,
    ManifestBrief,
    ManifestCompanion,
    ManifestPlacement,
    ManifestRule,
    ManifestSidecar,
    ManifestSource,
    RoundSummary,
    StepRecord,
)
from daemon.outputs.paths import page_path_for
from daemon.types import JobState, OutputRecord, Plan, PlanState, Unit

__all__ = ["UnitOutcome", "build_manifest", "step_record"]


class UnitOutcome(Protocol):
    """How a unit ended, as the ledger reports it (``daemon.queue.ledger.JobRow`` fits)."""

    @property
    def unit_index(self) -> int: ...
    @property
    def state(self) -> JobState: ...
    @property
    def error(self) -> str | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def seconds(self) -> float | None: ...
    @property
    def outputs(self) -> Sequence[OutputRecord]: ...


def step_record(unit: Unit, outcome: UnitOutcome, *, model_id: str | None) -> StepRecord:
    """The manifest's record of one unit: what it was asked to do and how it ended."""
    record = StepRecord(
        name=unit.name,
        model=unit.model,
        model_id=model_id,
        prompt=unit.prompt,
        negative_prompt=unit.negative_prompt,
        seeds=list(unit.seeds),
        references=[r.path for r in unit.references],
        mask=unit.mask,
        state=outcome.state.value,
        error=outcome.error if outcome.state is JobState.FAILED else None,
        attempts=outcome.attempts,
        seconds=outcome.seconds,
        outputs=list(outcome.outputs),
        # Written only for a prompt variation: other manifests keep their shape.
        **_only_when_set(variation=unit.variation),
    )
    if unit.companions:  # written only when the step took companions
        companions = [ManifestCompanion(**c.model_dump()) for c in unit.companions]
        record = record.model_copy(update={"companions": companions})
        record.model_fields_set.add("companions")
    return record


def _only_when_set(**values: Any) -> dict[str, Any]:
    """Keyword arguments for the values that are set (the others stay out of the file)."""
    return {k: v for k, v in values.items() if v}


def build_manifest(
    plan: Plan,
    *,
    plan_id: str,
    status: PlanState,
    units: Sequence[UnitOutcome],
    model_id: Callable[[str], str | None],
    rounds: Sequence[RoundSummary],
    created_at: float,
    source_size: tuple[int, int] | None,
    darkroom_version: str,
) -> Manifest:
    """The manifest of a plan whose units have all ended.

    ``model_id`` maps a profile name to the model it loads (None when unknown);
    ``created_at`` is the plan's creation time (epoch seconds); ``source_size`` the decoded
    source's (width, height), None when it cannot be decoded.
    """
    width, height = source_size if source_size else (None, None)
    manifest = Manifest(
        darkroom_version=darkroom_version,
        plan_id=plan_id,
        source=ManifestSource(
            **plan.arrival.model_dump(),
            sha256=plan.sha256,
            sidecar=ManifestSidecar(**plan.sidecar.model_dump(exclude_none=True))
            if plan.sidecar
            else None,
            width=width,
            height=height,
        ),
        rule=ManifestRule(
            name=plan.rule,
            digest=plan.digest,
            prompt=plan.prompt,
            negative_prompt=plan.negative_prompt,
        ),
        status=status.value,
        steps=[
            step_record(unit, outcome, model_id=model_id(unit.model))
            for outcome in units
            for unit in [plan.unit_at(outcome.unit_index)]
        ],
        sheet=plan.sheet,
        page=page_path_for(plan.manifest),
        rounds=list(rounds),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created_at)),
    )
    if plan.brief is not None:  # written only for a brief's row (no photo)
        source = manifest.source.model_copy(
            update={"brief": ManifestBrief(**plan.brief.model_dump())}
        )
        source.model_fields_set.add("brief")
        manifest = manifest.model_copy(update={"source": source})
    follows = _follows(plan)
    if follows is not None:  # written only for a plan a decision started
        manifest = manifest.model_copy(update={"follows": follows})
    if plan.placed is None:
        return manifest  # "placed" is written only when it says something
    return manifest.model_copy(update={"placed": ManifestPlacement(**plan.placed.model_dump())})


def _follows(plan: Plan) -> Follows | None:
    """What a decision-started plan follows, from the decision's variables (see
    :mod:`daemon.review.triggers`)."""
    v = plan.vars
    if not v.get("parent_manifest") or not v.get("decision"):
        return None
    try:
        round_ = int(v.get("round") or 1)
    except ValueError:
        round_ = 1
    return Follows(
        trigger=str(v["decision"]),
        manifest=str(v["parent_manifest"]),
        output=str(v.get("parent_output") or plan.arrival.key),
        rule=str(v.get("parent_rule") or "") or None,
        note=str(v.get("note") or "") or None,
        by=str(v.get("decided_by") or "") or None,
        round=round_,
    )
