"""The manifest: what one committed round of a plan produced, built, parsed and written here only.

    build_manifest(plan, plan_id=..., status=..., units=..., ...) -> Manifest
    parse_manifest(data: bytes) -> Manifest        tolerant of manifests older daemons wrote
    manifest_bytes(manifest: Manifest) -> bytes    the file's bytes (indent=2, stable key order)

The file is the commit marker of an output folder: the runner writes it last, and the review
page, the root index, the sheet, the digest, webhooks and ``darkroom review`` read it back
through :class:`Manifest` attributes. Its JSON keys are a public format (users and scripts
read ``manifest.json``), so a field keeps its key even where the code's vocabulary moved on:
``steps`` holds one :class:`StepRecord` per *unit* of the plan.

Tolerance: every model keeps keys it does not know (``extra="allow"``) and writes them back,
so a file written by a newer or older daemon survives a ``darkroom review`` rewrite. A key is
written only when the file it was read from had it (or the builder set it): re-writing an old
manifest adds no keys it never had.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daemon.errors import DarkroomError
from daemon.outputs.paths import page_path_for
from daemon.types import JobState, OutputRecord, Plan, PlanState, Unit

__all__ = [
    "Decision",
    "Manifest",
    "ManifestError",
    "ManifestPlacement",
    "ManifestRule",
    "ManifestSidecar",
    "ManifestSource",
    "RoundSummary",
    "StepRecord",
    "UnitOutcome",
    "build_manifest",
    "manifest_bytes",
    "parse_manifest",
]


class ManifestError(DarkroomError, ValueError):
    """Bytes that are not a Darkroom manifest (not JSON, not an object, no ``steps``)."""


class _Record(BaseModel):
    # Frozen like every seam type; unknown keys are kept (and written back) for tolerance.
    model_config = ConfigDict(frozen=True, extra="allow")


def _none_as_empty(value: Any, empty: Any) -> Any:
    """Older files (and hand edits) wrote ``null`` where a list or object was meant."""
    return empty if value is None else value


class ManifestSidecar(_Record):
    key: str
    sha256: str


class ManifestBrief(_Record):
    """The brief row a round was made from (a brief has no photo)."""

    row: str = ""
    line: int | None = None
    prompt: str | None = None


class ManifestCompanion(_Record):
    """An image that went to the step's model with the arriving one."""

    name: str | None = None
    key: str | None = None
    sha256: str | None = None


class ManifestSource(_Record):
    """The input the round was made from: the arrival, its hash, its pixel size."""

    source: str | None = None
    key: str | None = None
    uri: str | None = None
    size: int | None = None
    etag: str | None = None
    sha256: str | None = None
    sidecar: ManifestSidecar | None = None
    width: int | None = None
    height: int | None = None
    brief: ManifestBrief | None = None  # written only for a brief's row

    @property
    def label(self) -> str:
        """How pages and sheets name the source: its key, else its URI."""
        return self.key or self.uri or "?"


class ManifestRule(_Record):
    name: str | None = None
    digest: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None


class StepRecord(_Record):
    """One unit of the plan and what it produced (the file's key is ``steps``)."""

    name: str | None = None  # the rule step's name
    model: str | None = None  # profile name
    model_id: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    seeds: list[int] = Field(default_factory=list)
    references: list[str] = Field(default_factory=list)
    mask: str | None = None
    # Written only when the step took companions (several inputs for one output).
    companions: list[ManifestCompanion] = Field(default_factory=list)
    variation: str | None = None  # a prompt variation's id ("p1", "calm-summer")
    state: str | None = None  # a JobState value; kept as text so an unknown one still parses
    error: str | None = None
    attempts: int = 0
    seconds: float | None = None
    outputs: list[OutputRecord] = Field(default_factory=list)

    @field_validator("seeds", "references", "outputs", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _none_as_empty(value, [])

    @property
    def failed(self) -> bool:
        return self.state == JobState.FAILED.value


class RoundSummary(_Record):
    """An earlier round of the same folder, whose files were kept under ``rounds/N/``."""

    round: int | None = None
    prompt: str | None = None
    created_at: str | None = None
    sheet: str | None = None
    outputs: list[str] = Field(default_factory=list)
    # Not written by the runner; shown on the page when a file carries them.
    version: int | str | None = None
    status: str | None = None
    page: str | None = None
    manifest: str | None = None
    summary: str | None = None


class ManifestPlacement(_Record):
    """Why this round is not where the rule's templates asked: that folder belongs to another
    input (``requested``), so it was placed in ``folder`` beside it."""

    requested: str | None = None
    folder: str | None = None
    reason: str | None = None


class Decision(_Record):
    """A reviewer's verdict on one output, recorded by ``darkroom review`` or the review server.

    Only the fields a reviewer set are written (a star alone leaves ``decision`` out)."""

    decision: str | None = None  # "approved" or "rejected"; None: not decided (yet)
    at: str | None = None
    by: str | None = None
    note: str | None = None
    starred: bool | None = None


class Follows(_Record):
    """What a decision-started plan follows: the decided output and the decision."""

    trigger: str  # approved, rejected or refine
    manifest: str  # the parent's manifest (same sink)
    output: str  # the decided output: this plan's input
    rule: str | None = None  # the parent's rule
    note: str | None = None
    by: str | None = None
    round: int = 1  # refine rounds count from the first run (1)


class FollowUp(_Record):
    """A plan a decision on one of this manifest's outputs started (listed on its page)."""

    rule: str
    trigger: str
    manifest: str
    page: str
    output: str  # which of this manifest's outputs it followed
    note: str | None = None
    round: int = 1
    outputs: list[str] = Field(default_factory=list)
    status: str | None = None


class Manifest(_Record):
    """One committed round of a plan: the source, the rule, every unit and its outputs."""

    darkroom_version: str | None = None
    plan_id: str | None = None
    source: ManifestSource = Field(default_factory=ManifestSource)
    rule: ManifestRule = Field(default_factory=ManifestRule)
    status: str | None = None  # a PlanState value: done, partial or failed
    steps: list[StepRecord] = Field(default_factory=list)
    sheet: str | None = None
    page: str | None = None
    rounds: list[RoundSummary] = Field(default_factory=list)
    created_at: str | None = None
    sheet_error: str | None = None
    decisions: dict[str, Decision] = Field(default_factory=dict)
    placed: ManifestPlacement | None = None  # written only when the plan was placed elsewhere
    # Review follow-ups, written only when there are some: what this plan follows (a
    # decision on another output), and what decisions on its outputs started.
    follows: Follows | None = None
    follow_ups: list[FollowUp] = Field(default_factory=list)
    # A step reference's path (as in steps[].references) -> the sink path of its small copy
    # in this folder (refs/<sha>.webp): pages and sheets show references from the sink, never
    # from the server's rules folder. Written only when a step had references.
    reference_thumbs: dict[str, str] = Field(default_factory=dict)
    # Not written by the runner; shown on the page when a file carries them.
    version: int | str | None = None
    previous: Any = None

    @field_validator("source", "rule", mode="before")
    @classmethod
    def _objects(cls, value: Any) -> Any:
        if isinstance(value, str):  # very old files named the rule only
            return {"name": value}
        return _none_as_empty(value, {})

    @field_validator("steps", "rounds", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        value = _none_as_empty(value, [])
        return [v for v in value if isinstance(v, Mapping | BaseModel)]

    @field_validator("decisions", mode="before")
    @classmethod
    def _decisions(cls, value: Any) -> Any:
        # A hand-edited file can hold anything here: keep only what reads as a decision.
        if not isinstance(value, Mapping):
            return {}
        return {
            str(path): d
            for path, d in value.items()
            if isinstance(d, Decision)
            or (isinstance(d, Mapping) and any(d.get(k) for k in ("decision", "starred", "note")))
        }

    # -- views -----------------------------------------------------------------------

    def outputs(self) -> Iterator[tuple[StepRecord, OutputRecord]]:
        """Every output with the unit that made it, in file order."""
        for step in self.steps:
            for output in step.outputs:
                yield step, output

    def written(self) -> list[OutputRecord]:
        """The outputs that exist as files (not refused, not failed)."""
        return [o for _, o in self.outputs() if o.path and not o.error]

    def files(self) -> list[str]:
        """Every file the round wrote except the manifest and the views: outputs and posters."""
        return [p for _, o in self.outputs() for p in (o.path, o.poster) if p]

    def total_cost(self) -> float | None:
        """The sum of every output's estimated cost, or None when no output has one."""
        costs = [o.cost for _, o in self.outputs() if o.cost is not None]
        return sum(costs) if costs else None

    def decision_for(self, path: str | None) -> Decision | None:
        return self.decisions.get(path) if path else None

    # -- changed copies --------------------------------------------------------------

    def without_sheet(self, error: str) -> Manifest:
        """This manifest after the sheet failed to render: no sheet, and why."""
        return self.model_copy(update={"sheet": None, "sheet_error": error})

    def with_follow_up(self, entry: FollowUp) -> Manifest:
        """This manifest listing ``entry`` (replacing an earlier one for the same plan)."""
        kept = [f for f in self.follow_ups if f.manifest != entry.manifest]
        return self.model_copy(update={"follow_ups": [*kept, entry]})

    def with_decisions(self, decisions: Mapping[str, Decision]) -> Manifest:
        """This manifest with ``decisions`` recorded (replacing earlier ones for the same paths)."""
        return self.model_copy(update={"decisions": {**self.decisions, **decisions}})


# --------------------------------------------------------------------------- building


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


# --------------------------------------------------------------------------- the file


def parse_manifest(data: bytes | str) -> Manifest:
    """The manifest in ``data``; raises ManifestError when it is not one."""
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ManifestError(f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or "steps" not in raw:
        raise ManifestError("not a Darkroom manifest (no 'steps')")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(f"not a Darkroom manifest: {exc}") from None


def manifest_bytes(manifest: Manifest) -> bytes:
    """The file's bytes: ``json.dumps(..., indent=2)`` with the keys in the order the daemon
    has always written them."""
    return json.dumps(to_json_data(manifest), indent=2).encode()


def to_json_data(manifest: Manifest) -> dict[str, Any]:
    """The manifest as plain JSON data (what :func:`manifest_bytes` writes)."""
    return _plain(manifest)


# The order the runner writes an output's keys in; keys set to None that a runner only writes
# when they have a value are left out, as it always did.
_OUTPUT_ORDER: tuple[str, ...] = (
    "path", "step", "model", "model_id", "variant", "seed", "input", "seconds", "params",
    "cost", "provider", "request_id", "seed_honoured", "error", "width", "height",
    "kind", "poster", "frames", "fps", "duration", "sha256",
)  # fmt: skip
_OUTPUT_ONLY_WHEN_SET = frozenset(_OUTPUT_ORDER[9:])
# A field added to OutputRecord later is written after these, when set.
_OUTPUT_ORDER += tuple(f for f in OutputRecord.model_fields if f not in _OUTPUT_ORDER)


def _plain(model: BaseModel) -> dict[str, Any]:
    if isinstance(model, OutputRecord):
        return _plain_output(model)
    fields_set = model.model_fields_set
    data = {
        name: _value(getattr(model, name))
        for name in type(model).model_fields
        if name in fields_set
    }
    data.update((k, _value(v)) for k, v in (model.model_extra or {}).items())
    return data


def _plain_output(output: OutputRecord) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in _OUTPUT_ORDER:
        value = getattr(output, name)
        if name == "kind":
            if value != "image":  # an image is the default; only videos say what they are
                data[name] = value
        elif name in _OUTPUT_ONLY_WHEN_SET:
            if value is not None:
                data[name] = _value(value)
        elif name in output.model_fields_set:
            data[name] = _value(value)
    data.update((k, _value(v)) for k, v in (output.model_extra or {}).items())
    return data


def _value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _plain(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {k: _value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_value(v) for v in value]
    return value
