"""Preparing a claimed job for a worker: its inputs decoded and sized, references, mask, request.

A unit's inputs are the plan's source (decoded once per plan, :mod:`.source_cache`) or the
outputs of an earlier rule step, read back from the sink. They are sized for the profile (a
``size`` the rule asks for, else the profile's ``max_side``), and the request gets the
unit's prompt, seeds and parameters, its reference images and its mask. A hosted profile
with a rule budget is checked against the day's spend here, before anything is paid for.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, ImageOps

from backends.base import ModelSpec, Request
from backends.sizes import fit_size, size_rule
from daemon.config.profiles import Profile
from daemon.errors import (
    BudgetReached,
    EnvironmentFault,
    InputChanged,
    InputError,
    JobError,
)
from daemon.execution.missing_files import MissingFile, MissingFiles, newer_plan_exists
from daemon.execution.source_cache import SourceCache
from daemon.outputs import imaging
from daemon.queue.ledger import JobRow, Ledger
from daemon.rules.schema import parse_size
from daemon.rules.sidecars import mask_key
from daemon.sinks.base import Sink
from daemon.sources.base import Source
from daemon.types import OutputRecord, Plan, Unit

__all__ = ["Prepared", "Preparer"]

# structlog's bound logger (its lazy proxy type is not public API).
BoundLog = Any

# How the reason of a job held for a missing mask starts (its resume looks for it).
WAITING_FOR_MASK = "waiting for the mask: "


@dataclass
class Prepared:
    """A claimed job with its inputs decoded and its request built, ready for a worker."""

    job: JobRow
    plan: Plan
    unit: Unit
    profile: Profile
    spec: ModelSpec
    request: Request
    labels: list[str]  # what each input image is: "source", or the earlier output's path
    icc: bytes | None  # the colour profile the outputs carry (the source's)
    params: dict[str, Any]  # what the model was given: profile defaults + the unit's params
    log: BoundLog


class Preparer:
    """Builds a :class:`Prepared` job from the ledger's plan, the sources and the sinks."""

    def __init__(
        self,
        ledger: Ledger,
        sources: Mapping[str, Source],
        sinks: Mapping[str, Sink],
        source_cache: SourceCache,
        device: str,
    ):
        self.ledger = ledger
        self.sources = sources
        self.sinks = sinks
        self.source_cache = source_cache
        self.device = device
        # Profile name -> why its jobs are held (a hosted model that failed its start-up
        # check: daemon.service.hosted_check). Written from that check's thread.
        self.held: dict[str, str] = {}
        # Jobs held for a mask that is not there: queued again once it is (periodic check).
        self.missing = MissingFiles()

    def prepare(self, job: JobRow, plan: Plan, profile: Profile, log: BoundLog) -> Prepared:
        held = self.held.get(profile.name)
        if held is not None:
            raise EnvironmentFault(held)  # before anything is decoded or paid for
        unit = plan.unit_at(job.unit_index)
        labels, images, icc = self._inputs(job, plan, unit)
        params = {**profile.defaults, **unit.params}
        params.pop("batch", None)  # the dispatcher's switch, not the model's
        sized = [_size(image, unit, profile, params) for image in images]
        if not sized:  # a brief's row: no photo; the size comes from the row, step or profile
            params = {**params, **_canvas(unit, profile, params)}
        request = Request(
            images=sized,
            prompt=unit.prompt,
            seeds=list(unit.seeds),
            negative_prompt=unit.negative_prompt,
            params=params,
            # Companions first (the images that arrived with the photo), then references.
            references=self._companions(plan, unit, profile) + _references(unit, profile),
            mask=self._mask(job, plan, unit, sized[0].size) if sized else None,
        )
        if profile.hosted and plan.daily_budget is not None:
            self._check_budget(plan, profile, len(sized) * len(unit.seeds))
        return Prepared(
            job=job,
            plan=plan,
            unit=unit,
            profile=profile,
            spec=profile.spec(self.device),
            request=request,
            labels=labels,
            icc=icc,
            params=params,
            log=log,
        )

    def _inputs(
        self, job: JobRow, plan: Plan, unit: Unit
    ) -> tuple[list[str], list[Image.Image], bytes | None]:
        if plan.brief is not None and unit.input == "source":
            return ["brief"], [], None  # a brief has no photo: its steps start from the prompt
        # A brief's later steps have no photo either: no source to read, no colour profile.
        source = self.source_cache.get(job.plan_id, plan) if plan.brief is None else None
        if unit.input == "source" and source is not None:
            return ["source"], [source.rgb], source.icc
        outputs = self._earlier_outputs(job, unit)
        sink = self.sinks[plan.sink]
        images = []
        for output in outputs:
            assert output.path is not None  # refused outputs were left out
            images.append(imaging.to_rgb(imaging.decode(sink.read(output.path), output.path)))
        return [o.path for o in outputs if o.path], images, source.icc if source else None

    def _earlier_outputs(self, job: JobRow, unit: Unit) -> list[OutputRecord]:
        """The outputs of the rule step this unit takes, as its ``pick`` selects them."""
        earlier = [j for j in self.ledger.jobs_of(job.plan_id) if j.unit_name == unit.input]
        outputs = [o for j in earlier for o in j.outputs if not o.error and o.path]
        pick = unit.pick
        if pick == "first":
            outputs = outputs[:1]
        elif isinstance(pick, list):
            missing = [i for i in pick if i >= len(outputs)]
            if missing:
                raise JobError(
                    f"pick {pick} asks for outputs {missing}, but step {unit.input!r} made "
                    f"{len(outputs)} (indices from 0)",
                    retryable=False,
                )
            outputs = [outputs[i] for i in pick]
        if not outputs:
            raise JobError(f"step {unit.input!r} produced no outputs to use", retryable=False)
        if any(o.kind == "video" for o in outputs):
            raise JobError(
                f"step {unit.input!r} made videos; a step cannot take a video as input",
                retryable=False,
            )
        return outputs

    def _mask(
        self, job: JobRow, plan: Plan, unit: Unit, size: tuple[int, int]
    ) -> Image.Image | None:
        kind = unit.mask
        if not kind:
            return None
        key = plan.arrival.key
        if kind == "alpha":
            source = self.source_cache.get(job.plan_id, plan).image
            if "A" not in source.getbands() and "transparency" not in source.info:
                raise InputError(f"{key} has no alpha channel, but the step's mask is 'alpha'")
            # Transparent pixels are the ones to change: the mask is white where alpha is 0.
            mask = Image.eval(source.convert("RGBA").getchannel("A"), lambda a: 255 - a)
        elif kind == "sidecar":
            mask = self._sidecar_mask(job, plan)
        else:
            mask = self._file_mask(job, kind)
        if mask.size == size:
            return mask
        # Covered like the input it belongs to (same centre crop); NEAREST keeps it black/white.
        return ImageOps.fit(mask, size, Image.Resampling.NEAREST)

    def _sidecar_mask(self, job: JobRow, plan: Plan) -> Image.Image:
        """The photo's ``.mask.png``. Not there: the job is held until it is (the user can
        add it; the input stays). There but undecodable: the input's fault (InputError)."""
        key = plan.arrival.key
        sidecar = mask_key(key)
        try:
            data = self.sources[plan.arrival.source].read(sidecar)
        except InputError:
            self.missing.note(
                MissingFile(job.id, job.plan_id, asset=(plan.arrival.source, key, plan.rule))
            )
            raise EnvironmentFault(
                f"{WAITING_FOR_MASK}the step's mask is 'sidecar' but {sidecar} does not exist"
                f" next to {key} (source {plan.arrival.source!r})",
                hint=f"add {PurePosixPath(sidecar).name} beside the photo (white where it may"
                " change): the job resumes once it arrives",
            ) from None
        if job.error and job.error.startswith(WAITING_FOR_MASK):
            # Held for this mask, which has come since: its arrival planned the photo again
            # with it (the mask is part of the content), and that plan runs instead.
            waited = MissingFile(job.id, job.plan_id, asset=(plan.arrival.source, key, plan.rule))
            if newer_plan_exists(self.ledger, waited):
                raise InputChanged(
                    f"{sidecar} arrived after {key} was planned; the plan made with it runs"
                )
        return imaging.decode(data, sidecar).convert("L")

    def _file_mask(self, job: JobRow, kind: str) -> Image.Image:
        """A mask in the rules folder or a reference folder: planning stored its full path
        (and found it inside its folder). Missing now (moved, deleted, a share unmounted,
        or a per-photo mask not made yet): held until it is there."""
        # A relative path (a plan from before) would be read from the working directory:
        # refused with the same words as a missing file.
        if not Path(kind).is_absolute():
            raise InputError(
                f"mask {kind!r} is not a file in the rules folder (a plan from an older"
                " version: `darkroom reprocess --rule` plans it again)"
            )
        path = Path(kind)
        try:
            data = path.read_bytes()
        except OSError as exc:
            self.missing.note(MissingFile(job.id, job.plan_id, path=path))
            why = "does not exist" if isinstance(exc, FileNotFoundError) else exc.strerror
            raise EnvironmentFault(
                f"{WAITING_FOR_MASK}{path} {why or 'cannot be read'}",
                hint="put the mask there (or fix the rule's mask: path): the job resumes"
                " once it exists",
            ) from None
        return imaging.decode(data, kind).convert("L")

    def _companions(self, plan: Plan, unit: Unit, profile: Profile) -> list[Image.Image]:
        """The unit's companion images, read from the plan's source and checked against the
        hashes it was planned with (a changed companion is planned again on its own)."""
        images = []
        source = self.sources.get(plan.arrival.source)
        for companion in unit.companions:
            if source is None:
                raise InputError(f"source {plan.arrival.source!r} is no longer configured")
            data = source.read(companion.key)
            if hashlib.sha256(data).hexdigest() != companion.sha256:
                raise InputChanged(
                    f"companion {companion.name!r} ({companion.key}) changed since"
                    f" {plan.arrival.key} was planned; its new version plans the photo again"
                )
            image = imaging.to_rgb(imaging.decode(data, companion.key))
            images.append(_fitted(image, profile))
        return images

    def _check_budget(self, plan: Plan, profile: Profile, outputs: int) -> None:
        """A rule's daily budget stops hosted calls (local models cost nothing): the job
        waits until tomorrow instead of spending more."""
        budget = plan.daily_budget
        assert budget is not None
        spent = self.ledger.spend_today(plan.rule)
        estimate = (profile.price_per_image or 0.0) * outputs
        if spent + estimate > budget + 1e-9:
            raise BudgetReached(
                f"daily budget ${budget:.2f} of rule {plan.rule!r} reached (${spent:.2f} spent"
                f" today, this step costs ~${estimate:.2f}); it runs after midnight, or raise"
                " daily_budget and `darkroom retry`"
            )


def fitted_size(
    width: int, height: int, unit: Unit, profile: Profile, params: Mapping[str, Any]
) -> tuple[int, int]:
    """The size a ``width`` x ``height`` input is brought to for ``profile``'s model.

    An explicit ``size: WxH`` on the step is used as written (``darkroom check`` validates it
    against the task's size rule, with file:line). Everything else — an aspect ratio, a
    ``width``/``height`` parameter, the profile's ``max_side`` — is only a wish that
    :func:`backends.sizes.fit_size` turns into a size the model accepts (floored to the task's
    multiple, brought to its area): a size the daemon chose never fails a job.
    """
    rule = size_rule(profile.task, profile.options)
    max_side = unit.max_side or profile.max_side
    if unit.size:
        w, h = parse_size(unit.size)
        if isinstance(w, int) and isinstance(h, int):
            return w, h
        # An aspect ratio: the largest centred crop of that ratio, then fitted.
        ratio = w / h
        if width / height > ratio:
            width = max(1, round(height * ratio))
        else:
            height = max(1, round(width / ratio))
    else:
        wanted_w, wanted_h = params.get("width"), params.get("height")
        if wanted_w and wanted_h:
            return fit_size(
                int(wanted_w), int(wanted_h), dataclasses.replace(rule, target_area=None)
            )
        if wanted_w or wanted_h:
            scale = int(wanted_w) / width if wanted_w else int(wanted_h or 1) / height
            width, height = max(1, round(width * scale)), max(1, round(height * scale))
            max_side = None  # the parameter says how big
    return fit_size(width, height, rule, max_side=max_side)


def _size(
    image: Image.Image, unit: Unit, profile: Profile, params: Mapping[str, Any]
) -> Image.Image:
    """``image`` covered (scaled, centre-cropped: never distorted) to its fitted size."""
    width, height = fitted_size(image.width, image.height, unit, profile, params)
    if (width, height) == image.size:
        return image
    return imaging.cover(image, width, height)


def _canvas(unit: Unit, profile: Profile, params: Mapping[str, Any]) -> dict[str, int]:
    """The output size of a unit without an input image (a brief's row): the row's or step's
    ``size`` (WxH, or an aspect ratio of the profile's ``max_side``), else a square of it."""
    side = unit.max_side or profile.max_side or 1024
    width, height = fitted_size(side, side, unit, profile, params)  # honours width/height
    return {"width": width, "height": height}


def _fitted(image: Image.Image, profile: Profile) -> Image.Image:
    """An extra image (companion) fitted like an input, at the model's own multiple."""
    width, height = fit_size(
        image.width, image.height, size_rule(profile.task, profile.options), profile.max_side
    )
    return image if image.size == (width, height) else imaging.cover(image, width, height)


def _references(unit: Unit, profile: Profile) -> list[Image.Image]:
    images = []
    for ref in unit.references:
        try:
            data = Path(ref.path).read_bytes()
        except OSError as exc:
            raise JobError(f"reference {ref.path}: {exc.strerror}", retryable=False) from None
        image = imaging.to_rgb(imaging.decode(data, ref.path))
        # Fitted like an input (a multi-image model takes references at its own multiple).
        width, height = fit_size(
            image.width, image.height, size_rule(profile.task, profile.options), profile.max_side
        )
        images.append(
            image if image.size == (width, height) else imaging.cover(image, width, height)
        )
    return images
