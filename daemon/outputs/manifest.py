"""The manifest: the model of what one committed round of a plan produced, and its parser.

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

The models and :func:`parse_manifest` are here; building is :mod:`.manifest_build`, the
file's bytes :mod:`.manifest_json` (both re-exported here).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daemon.errors import DarkroomError
from daemon.outputs.manifest_json import manifest_bytes, to_json_data
from daemon.types import JobState, OutputRecord

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
    "manifest_bytes",
    "parse_manifest",
    "to_json_data",
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
    # Which version of the source the round's files came from (its sha256), and where each
    # kept file was before (kept path -> the path it had in the folder): once the next round
    # is committed, the folder's top level holds only that round's files (daemon/execution/rounds.py).
    source_sha256: str | None = None
    kept_from: dict[str, str] = Field(default_factory=dict)


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
