"""The typed data that flows through the daemon: arrivals, plans and their units, outputs, manifests.

Vocabulary (one word, one meaning):

- a **rule step** is what a rule file lists under ``steps:`` (``daemon.rules.schema.Step``);
- a **unit** is one model run of a plan: a rule step expands to one unit per model it
  compares (``explore:sd-turbo``, ``explore:sdxl-turbo``); each unit is one ledger job;
- a **plan** is everything needed to run one rule on one version of one input (``Plan``);
- a **round** is one committed run of a plan's outputs in its output folder; a new version
  of an input (or an edited sidecar) starts the next round of the same folder.

These models are the seam between intake, the ledger, the runner and the output writers:
the ledger stores ``Plan`` as JSON and returns it parsed; the manifest is built and parsed
by :mod:`daemon.outputs.manifest` only. Every model is frozen; build a changed copy with
``model_copy(update=...)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class Arrival:
    """A complete input object, seen by a source and ready to be matched.

    ``key`` is the object's path relative to the source root with ``/`` separators
    (``shoots/may/a.jpg``); ``uri`` is where to read it (an absolute path, ``s3://...``).
    """

    source: str
    key: str
    uri: str
    size: int
    mtime_ns: int
    etag: str | None = None
    # What brought it: "arrival" (a file came), or a reviewer's decision on an output that
    # rules can follow ("approved", "rejected", "refine"; :mod:`daemon.review.triggers`).
    trigger: str = "arrival"
    # Template variables the trigger adds ({note}, {parent_rule}, ...); part of the plan's
    # identity, so a second refine with another note is new work.
    context: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def stem(self) -> str:
        return PurePosixPath(self.key).stem


class JobState(enum.StrEnum):
    """A ledger job's state. ``WAITING``: its input unit has not finished yet. ``HELD``: an
    environment fault (missing key, weights or tool; sink unreachable; disk full) stopped it;
    its input stays, it is retried with capped backoff without consuming attempts, and at
    once on a config reload or ``darkroom retry``."""

    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    HELD = "held"
    DONE = "done"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED)


class PlanState(enum.StrEnum):
    """A plan's state in the ledger. ``ACTIVE`` until its manifest is committed."""

    ACTIVE = "active"
    DONE = "done"
    PARTIAL = "partial"
    FAILED = "failed"
    ADOPTED = "adopted"  # another daemon sharing the sink committed this very plan


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Fields stored only when set keep older rows' shape. ``exclude_if`` rather than a wrapping
# serializer: that one builds every plan as Python dicts before the JSON, on each write.
def _is_none(value: object) -> bool:
    return value is None


def _is_empty(value: object) -> bool:
    return not value


class ArrivalRecord(_Frozen):
    """Where a plan's input came from, as stored with the plan."""

    source: str
    key: str
    uri: str
    size: int
    etag: str | None = None


class SidecarRef(_Frozen):
    """The sidecar a plan was made with. ``fault``: why it could not be used (the plan fails
    with that reason; the image stays in place, so fixing the sidecar runs it again)."""

    key: str
    sha256: str
    fault: str | None = None


class ReferenceFile(_Frozen):
    """A reference image resolved at planning time; its hash is part of the plan's identity."""

    path: str
    sha256: str


class CompanionFile(_Frozen):
    """An image that goes to a unit's model with the arriving one (a rule's ``companions``):
    read from the same source when the job runs, checked against ``sha256`` (part of the
    plan's identity: a changed companion is new work)."""

    name: str  # the rule's companion name ("scene")
    key: str  # its key in the source, next to the arriving file
    sha256: str


class BriefRef(_Frozen):
    """The brief row a plan was made from (``*.brief.yaml`` / ``*.brief.csv``): a plan
    without a photo, whose first steps make images from the prompt alone."""

    row: str  # the row's name, "row-N", or "" for a one-prompt brief
    line: int  # where the row starts in the brief
    prompt: str  # the row's prompt, as written


class Unit(_Frozen):
    """One model run of a plan (one ledger job)."""

    id: str  # step name, or "step:profile" in a compare step
    name: str  # the rule step's name
    model: str  # profile name
    input: str  # "source" or the name of an earlier rule step
    pick: Literal["all", "first"] | list[int] = "all"
    prompt: str
    negative_prompt: str | None = None
    seeds: list[int]
    params: dict[str, Any] = Field(default_factory=dict)
    size: str | None = None
    max_side: int | None = None
    references: list[ReferenceFile] = Field(default_factory=list)
    mask: str | None = None
    video_format: str = "mp4"
    # A prompt variation's short id ("p1", "calm-summer"); None for a step without them.
    # Stored only when set, so plans without variations keep the shape older rows have.
    variation: str | None = Field(default=None, exclude_if=_is_none)
    # Companion images this unit's model gets with its input (stored only when there are some).
    companions: list[CompanionFile] = Field(default_factory=list, exclude_if=_is_empty)


class Placement(_Frozen):
    """Where a plan's outputs went when the folder its templates asked for belongs to another
    asset (``requested``): a deterministic alternative beside it (``folder``), and why."""

    requested: str
    folder: str
    reason: str

    def apply(self, path: str) -> str:
        """``path`` moved from the requested folder into the placed one (others unchanged)."""
        if path == self.requested or path.startswith(self.requested + "/"):
            return self.folder + path[len(self.requested) :]
        return path


class Plan(_Frozen):
    """Everything needed to run one rule on one version of one input, as JSON-able data.

    Seeds are drawn at planning time, so retries and restarts reuse them. ``error`` is set
    when the plan cannot run (a template variable no one defines): its jobs then fail with
    that reason instead of running.
    """

    rule: str
    digest: str  # the rule's meaning (not its whitespace)
    sha256: str  # the input's bytes
    content: str  # bytes + sidecar + mask: what makes this work new
    sidecar: SidecarRef | None = None
    arrival: ArrivalRecord
    vars: dict[str, Any] = Field(default_factory=dict)
    prompt: str
    negative_prompt: str | None = None
    sink: str
    path: str  # the output path template
    format: str = "png"
    quality: int = 92
    keep_icc: bool = True
    on_success: str | None = None
    quarantine: str | None = None
    daily_budget: float | None = None
    animated: str = "first_frame"
    processed_dir: str = ".processed"
    manifest: str  # where the manifest goes in the sink (the folder is the asset's)
    sheet: str
    # Stored as "steps" by earlier versions; read either.
    units: list[Unit] = Field(validation_alias=AliasChoices("units", "steps"))
    error: str | None = None
    # Set by the ledger when the requested output folder is owned by another asset.
    placed: Placement | None = None
    # A brief's row (no photo): stored only when set, so other plans keep their shape.
    brief: BriefRef | None = Field(default=None, exclude_if=_is_none)

    def unit_at(self, index: int) -> Unit:
        return self.units[index]


class OutputRecord(BaseModel):
    """One output file of a unit, as recorded in the ledger and the manifest.

    A refused variant (hosted models) has ``path=None`` and ``error`` set. Videos have
    ``kind="video"`` and a ``poster`` strip.
    """

    model_config = ConfigDict(extra="allow")  # older manifests and review decisions

    path: str | None
    step: str
    model: str
    model_id: str | None = None
    variant: int
    seed: int
    input: str | None = None
    seconds: float = 0.0
    params: dict[str, Any] = Field(default_factory=dict)
    width: int | None = None
    height: int | None = None
    sha256: str | None = None
    error: str | None = None
    cost: float | None = None
    provider: str | None = None
    request_id: str | None = None
    seed_honoured: bool | None = None
    kind: Literal["image", "video"] = "image"
    poster: str | None = None
    frames: int | None = None
    fps: float | None = None
    duration: float | None = None
