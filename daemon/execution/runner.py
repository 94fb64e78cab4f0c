"""The runner: claims jobs from the ledger, runs them on the pool, commits outputs.

For each job: read and decode the inputs (the source, or an earlier step's outputs),
size them for the profile, add references and mask, run the model on a worker, encode
every output with its provenance and write it atomically to the sink, and only then mark
the job done. When every job of a plan has ended, the review sheet and then the manifest
— the commit marker — are written and the plan is closed.

Threads: :meth:`loop` (one thread) only claims — a batch of compatible jobs at a time,
chosen by :mod:`daemon.dispatch` (fair between rules, sticky to loaded models) — and hands
each batch to a small pool of pipeline threads, at most two batches per worker in flight.
A pipeline thread decodes its batch's inputs, waits for a worker, runs the batch
(:mod:`daemon.batching`), then encodes and writes the outputs, marks the jobs done and
closes finished plans. So while one batch occupies a device, the next one is already
decoded and queued for it, and the previous one's outputs, sheet and manifest are being
written: the device does not wait for I/O. :meth:`step` does the same for one batch,
synchronously (tests, ``darkroom process``).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import structlog
from PIL import Image

from backends.base import ModelSpec, Request, Result
from daemon import __version__, faults, rules
from daemon.execution import batching
from daemon.outputs import imaging, review, sheet
from daemon.queue.dispatch import Dispatcher, FairShare
from daemon.errors import AlreadyCommitted, DarkroomError, InputError, JobError, WorkerDied
from daemon.types import JobState
from daemon.queue.ledger import JobRow, Ledger
from daemon.execution.pool import WorkerPool
from daemon.config.profiles import Profile

log = structlog.get_logger("darkroom.runner")


@dataclass
class Prepared:
    """A claimed job with its inputs decoded and its request built, ready for a worker."""

    job: JobRow
    plan: dict[str, Any]
    unit: dict[str, Any]
    profile: Profile
    spec: ModelSpec
    request: Request
    labels: list[str]
    icc: bytes | None
    params: dict[str, Any]
    bound: Any


class BudgetReached(DarkroomError):
    """A rule's daily spend on hosted models is used up."""


def _next_midnight() -> float:
    tomorrow = time.localtime(time.time() + 86400)
    return time.mktime((tomorrow.tm_year, tomorrow.tm_mon, tomorrow.tm_mday, 0, 0, 1, 0, 0, -1))


class Runner:
    def __init__(
        self,
        ledger: Ledger,
        sources: Mapping[str, Any],
        sinks: Mapping[str, Any],
        pool: WorkerPool,
        profiles: Mapping[str, Profile],
        device: str,
        on_plan_done: Callable[[str, str], None] | None = None,
        on_manifest: Callable[[Any, dict[str, Any], str], None] | None = None,
        on_job_end: Callable[[str, str, str | None, float | None], None] | None = None,
        tick: Callable[[], None] | None = None,
        ping_interval: float = 30.0,
        *,
        max_batch: int = 1,
        max_wait_ms: float = 0.0,
        priorities: Mapping[str, float] | None = None,
        in_flight: int | None = None,
    ):
        self.ledger = ledger
        self.sources = sources
        self.sinks = sinks
        self.pool = pool
        self.profiles = profiles
        self.device = device
        self.on_plan_done = on_plan_done
        self.on_manifest = on_manifest  # after the manifest is committed (webhooks)
        self.on_job_end = on_job_end  # (rule, state, profile, model seconds): metrics
        self.tick = tick or (lambda: None)  # the health check's proof that this loop turns
        self.ping_interval = ping_interval
        self._last_ping = time.monotonic()
        self.owner = f"runner-{id(self):x}"
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.current: JobRow | None = None  # the latest job a pipeline thread started
        self.last_error: str | None = None
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        # Two batches per worker: one on the device, the next decoded and waiting for it.
        self.in_flight = in_flight or 2 * max(1, len(pool) if hasattr(pool, "__len__") else 1)
        self.dispatcher = Dispatcher(
            ledger,
            self.owner,
            FairShare(priorities, slack=max(4, max_batch)),
            self._batch_limit,
            self._model_loaded,
        )
        self._finalize_lock = threading.RLock()

    # -- the loop --------------------------------------------------------------------

    def loop(self) -> None:
        slots = threading.BoundedSemaphore(self.in_flight)
        with ThreadPoolExecutor(
            self.in_flight, thread_name_prefix="darkroom-pipeline"
        ) as pipelines:
            while not self.stopping.is_set():
                self.tick()
                if not slots.acquire(timeout=0.5):
                    continue  # every slot busy: the tick above keeps the health check fed
                batch = self.dispatcher.claim(self.max_wait, self.stopping)
                if batch:
                    pipelines.submit(self._pipeline, batch, slots.release)
                    continue
                slots.release()
                self.finalize_ended()
                if time.monotonic() - self._last_ping > self.ping_interval:
                    self._last_ping = time.monotonic()
                    self.pool.ping()
                due = self.ledger.next_due()
                wait = 1.0 if due is None else max(0.01, min(1.0, due - time.time()))
                self.wake.wait(wait)
                self.wake.clear()
        # Leaving the with-block waits for the batches in flight: each one finishes, or puts
        # its jobs back in the ledger once the pool is stopped.

    def step(self) -> bool:
        """Run one batch (one job when batching is off) if one is due; False when the queue
        had nothing runnable."""
        batch = self.dispatcher.claim(self.max_wait, self.stopping)
        if not batch:
            return False
        self.run_batch(batch)
        return True

    def _pipeline(self, batch: list[JobRow], done: Callable[[], None]) -> None:
        try:
            self.run_batch(batch)
        except Exception:  # never lose the slot; the jobs' states are settled in run_batch
            log.exception("pipeline failed", jobs=[j.id for j in batch])
        finally:
            done()
            self.wake.set()

    def run_job(self, job: JobRow) -> None:
        self.run_batch([job])

    def run_batch(self, batch: list[JobRow]) -> None:
        """Prepare every job, run the compatible ones together, commit each job's outputs."""
        prepared = [p for p in (self._prepare_job(job) for job in batch) if p is not None]
        for group in batching.group(prepared, self._batch_key, self.max_batch):
            if self.stopping.is_set():
                for p in group:
                    self.ledger.release(p.job.id)
                    p.bound.info("job put back for the next start", reason="stopping")
                continue
            outcomes = batching.run_batch(
                self._run_on_pool,
                group[0].spec,
                [p.request for p in group],
                getattr(self.pool, "job_timeout", 600.0),
            )
            for p, outcome in zip(group, outcomes, strict=True):
                self._settle(p, outcome)

    def _run_on_pool(self, spec: ModelSpec, request: Request, **kwargs: Any) -> Result:
        cancel = self.stopping.is_set
        try:
            return self.pool.run(spec, request, cancel=cancel, **kwargs)
        except TypeError as exc:  # a stand-in pool without these keywords (tests)
            if "unexpected keyword" not in str(exc):
                raise
            return self.pool.run(spec, request)

    def _prepare_job(self, job: JobRow) -> Prepared | None:
        """Decode and size the job's inputs; None when the job ended here (failed, adopted)."""
        self.current = job
        plan_row = self.ledger.plan(job.plan_id)
        plan = plan_row.plan
        bound = log.bind(
            job_id=job.id, rule=job.rule, source=plan_row.source, key=plan_row.key, step=job.step
        )
        if job.step_index == 0 and self._committed_elsewhere(plan, job.plan_id):
            # Several daemons share this sink and another one finished this very plan.
            self.ledger.adopt(job.plan_id, "already committed by another daemon sharing the sink")
            bound.info("already committed by another daemon; not run again")
            if self.on_plan_done:
                self.on_plan_done(job.plan_id, "done")
            return None
        bound.info("job started", attempt=job.attempts)
        try:
            return self._prepare(job, plan, bound)
        except Exception as exc:
            self._settle_error(job, plan, bound, exc)
            return None

    def _settle(self, p: Prepared, outcome: Result | Exception) -> None:
        self.current = p.job
        if isinstance(outcome, Exception):
            self._settle_error(p.job, p.plan, p.bound, outcome)
            return
        try:
            outputs = self._commit(p, outcome)
        except Exception as exc:
            self._settle_error(p.job, p.plan, p.bound, exc)
            return
        faults.point("after-outputs")
        self.ledger.complete(p.job.id, outputs, outcome.seconds)
        p.bound.info(
            "job done",
            outputs=len(outputs),
            seconds=round(outcome.seconds, 3),
            batch=outcome.info.get("batch_jobs", 1),
        )
        if self.on_job_end:
            self.on_job_end(p.job.rule, "done", p.unit["model"], outcome.seconds)
        self.finalize_if_ended(p.job.plan_id)
        self.wake.set()

    def _settle_error(self, job: JobRow, plan: dict[str, Any], bound: Any, exc: Exception) -> None:
        if isinstance(exc, BudgetReached):
            self.ledger.defer(job.id, _next_midnight(), str(exc))
            bound.warning("job deferred: daily budget reached", reason=str(exc))
            return
        if isinstance(exc, WorkerDied):
            if self.stopping.is_set():
                self.ledger.release(job.id)
                bound.info("job put back for the next start", reason=str(exc))
                return
            self._failed(job, bound, str(exc), retryable=True)
        elif isinstance(exc, DarkroomError):
            self._failed(job, bound, str(exc), retryable=exc.retryable)
        else:  # a bug must cost one job, never the daemon
            bound.error("unexpected error", exc_info=exc)
            self._failed(job, bound, f"internal error: {type(exc).__name__}: {exc}", retryable=True)
        self.finalize_if_ended(job.plan_id)
        self.wake.set()

    def _batch_key(self, p: Prepared) -> tuple | None:
        if p.profile.hosted or self._batch_limit(p.profile.name) == 1:
            return None  # hosted calls are billed and rate-limited per request: never merged
        return batching.batch_key(p.spec, p.request)

    def _batch_limit(self, profile_name: str | None) -> int:
        """How many jobs of this profile may share a call: max_batch, or 1 when the profile
        says ``batch: false`` in its options or defaults."""
        if profile_name is None:
            return self.max_batch
        profile = self.profiles.get(profile_name)
        if profile is None:
            return 1
        if (
            profile.hosted
            or profile.options.get("batch", profile.defaults.get("batch", True)) is False
        ):
            return 1
        return self.max_batch

    def _model_loaded(self, profile_name: str | None) -> bool:
        profile = self.profiles.get(profile_name) if profile_name else None
        loaded = getattr(self.pool, "loaded_specs", None)
        return profile is not None and loaded is not None and profile.spec(self.device) in loaded()

    def finalize_ended(self) -> None:
        """Close plans whose jobs all ended without passing through run_job (a plan that
        failed at submission, or one whose manifest a crash kept from being written)."""
        for plan_id in self.ledger.unfinished_plans():
            try:
                self.finalize_if_ended(plan_id)
            except Exception:
                log.exception("cannot close plan", plan=plan_id)

    def _committed_elsewhere(self, plan: dict[str, Any], plan_id: str) -> bool:
        sink = self.sinks[plan["sink"]]
        try:
            if not sink.exists(plan["manifest"]):
                return False
            return json.loads(sink.read(plan["manifest"])).get("plan_id") == plan_id
        except (DarkroomError, ValueError):
            return False

    def _failed(self, job: JobRow, bound: Any, reason: str, *, retryable: bool) -> None:
        self.last_error = reason
        state = self.ledger.fail(job.id, reason, retryable=retryable)
        if state is JobState.QUEUED:
            bound.warning("job failed, will retry", reason=reason, attempt=job.attempts)
        else:
            bound.error("job failed", reason=reason, attempts=job.attempts)
            if self.on_job_end:
                self.on_job_end(job.rule, "failed", None, None)

    # -- one job ---------------------------------------------------------------------

    def _prepare(self, job: JobRow, plan: dict[str, Any], bound: Any) -> Prepared:
        unit = plan["steps"][job.step_index]
        profile = self.profiles.get(unit["model"])
        if profile is None:
            raise JobError(
                f"model profile {unit['model']!r} is no longer configured", retryable=False
            )
        if job.step_index == 0:
            self._archive_previous_round(plan, job.plan_id)
        labels, images, icc = self._inputs(job, plan, unit)
        params = {**profile.defaults, **unit["params"]}
        params.pop("batch", None)  # the dispatcher's switch, not the model's
        sized = [self._size(img, unit, profile, params) for img in images]
        request = Request(
            images=sized,
            prompt=unit["prompt"],
            seeds=list(unit["seeds"]),
            negative_prompt=unit.get("negative_prompt"),
            params=params,
            references=self._references(unit, profile),
            mask=self._mask(plan, unit, sized[0].size),
        )
        if profile.hosted and plan.get("daily_budget") is not None:
            self._check_budget(plan, profile, len(sized) * len(unit["seeds"]))
        return Prepared(
            job, plan, unit, profile, profile.spec(self.device), request, labels, icc, params, bound
        )

    def _commit(self, p: Prepared, result: Result) -> list[dict[str, Any]]:
        """Encode and write every output of one job; returns the output records."""
        plan, unit, profile, labels, icc, params = (
            p.plan,
            p.unit,
            p.profile,
            p.labels,
            p.icc,
            p.params,
        )
        sized = p.request.images
        expected = len(sized) * len(unit["seeds"])
        if len(result.images) != expected:
            raise JobError(
                f"the backend returned {len(result.images)} images for "
                f"{len(sized)} inputs x {len(unit['seeds'])} seeds",
                retryable=False,
            )
        sink = self.sinks[plan["sink"]]
        outputs = []
        per_output = result.seconds / max(1, expected)
        # Hosted backends report per output: time, estimated cost, provider request id.
        reported = result.info.get("outputs")
        reported = reported if isinstance(reported, list) else []
        for i, label in enumerate(labels):
            for v, seed in enumerate(unit["seeds"]):
                variant = i * len(unit["seeds"]) + v
                image = result.images[variant]
                video = result.videos[variant] if result.videos else None
                path = rules.output_path(plan, unit, variant, seed, video=video is not None)
                extra = reported[variant] if variant < len(reported) else {}
                record = {
                    "path": path,
                    "step": unit["name"],
                    "model": profile.name,
                    "model_id": profile.model,
                    "variant": variant,
                    "seed": seed,
                    "input": label,
                    "seconds": round(extra.get("seconds", per_output), 4),
                    "params": params,
                }
                for key in ("cost", "provider", "request_id", "seed_honoured"):
                    if extra.get(key) is not None:
                        record[key] = extra[key]
                if image is None:
                    # A refused output (hosted models): a failed variant with the provider's reason.
                    record.update(
                        path=None, error=extra.get("refusal") or "the model returned no image"
                    )
                    outputs.append(record)
                    continue
                record.update(width=image.width, height=image.height)
                provenance = {
                    "darkroom_version": __version__,
                    "prompt": unit["prompt"],
                    "negative_prompt": unit.get("negative_prompt"),
                    "rule": plan["rule"],
                    "source_sha256": plan["sha256"],
                    "revision": profile.revision,
                    **{k: record[k] for k in ("step", "model", "model_id", "seed", "params")},
                    **{k: record[k] for k in ("provider", "request_id") if k in record},
                }
                if video is not None:
                    record.update(self._write_video(sink, path, video, unit, self._metadata(plan)))
                else:
                    data, content_type = imaging.encode(
                        image,
                        path,
                        provenance,
                        quality=plan.get("quality", 92),
                        icc_profile=icc if plan.get("keep_icc", True) else None,
                    )
                    sink.write(path, data, content_type, metadata=self._metadata(plan))
                    record["sha256"] = hashlib.sha256(data).hexdigest()
                outputs.append(record)
        return outputs

    def _check_budget(self, plan: dict[str, Any], profile: Profile, outputs: int) -> None:
        """A rule's daily budget stops hosted calls (local models cost nothing): the job
        waits until tomorrow instead of spending more."""
        budget = plan["daily_budget"]
        spent = self.ledger.spend_today(plan["rule"])
        estimate = (profile.price_per_image or 0.0) * outputs
        if spent + estimate > budget + 1e-9:
            raise BudgetReached(
                f"daily budget ${budget:.2f} of rule {plan['rule']!r} reached (${spent:.2f} spent today, this step"
                f" costs ~${estimate:.2f}); it runs after midnight, or raise daily_budget and `darkroom retry`"
            )

    @staticmethod
    def _metadata(plan: dict[str, Any]) -> dict[str, str]:
        return {"rule": plan["rule"], "source-sha256": plan["sha256"]}

    @staticmethod
    def _write_video(
        sink: Any, path: str, video: Any, unit: dict[str, Any], metadata: dict[str, str]
    ) -> dict[str, Any]:
        from backends import video_io

        data = video_io.encode_video(video, unit.get("video_format", "mp4"))
        content_type = {"mp4": "video/mp4", "webp": "image/webp", "gif": "image/gif"}[
            unit.get("video_format", "mp4")
        ]
        sink.write(path, data, content_type, metadata=metadata)
        poster = str(PurePosixPath(path).with_suffix("")) + ".strip.png"
        buffer = io.BytesIO()
        video_io.frame_strip(video).save(buffer, "PNG")
        sink.write(poster, buffer.getvalue(), "image/png")
        return {
            "kind": "video",
            "poster": poster,
            "frames": len(video.frames),
            "fps": video.fps,
            "duration": round(video.seconds, 3),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    def _inputs(
        self, job: JobRow, plan: dict[str, Any], unit: dict[str, Any]
    ) -> tuple[list[str], list[Image.Image], bytes | None]:
        source_image = self._decoded_source(plan)
        icc = imaging.output_icc(source_image)
        if unit["input"] == "source":
            return ["source"], [imaging.to_rgb(source_image)], icc
        sink = self.sinks[plan["sink"]]
        earlier = [j for j in self.ledger.jobs_of(job.plan_id) if j.step_name == unit["input"]]
        outputs = [o for j in earlier for o in j.outputs if not o.get("error")]
        pick = unit.get("pick", "all")
        if pick == "first":
            outputs = outputs[:1]
        elif isinstance(pick, list):
            missing = [i for i in pick if i >= len(outputs)]
            if missing:
                raise JobError(
                    f"pick {pick} asks for outputs {missing}, but step {unit['input']!r} made "
                    f"{len(outputs)} (indices from 0)",
                    retryable=False,
                )
            outputs = [outputs[i] for i in pick]
        if not outputs:
            raise JobError(f"step {unit['input']!r} produced no outputs to use", retryable=False)
        images = []
        for output in outputs:
            if output.get("kind") == "video":
                raise JobError(
                    f"step {unit['input']!r} made videos; a step cannot take a video as input",
                    retryable=False,
                )
            images.append(imaging.to_rgb(imaging.decode(sink.read(output["path"]), output["path"])))
        return [o["path"] for o in outputs], images, icc

    def _decoded_source(self, plan: dict[str, Any]) -> Image.Image:
        image = imaging.decode(
            self.read_source(plan),
            plan["arrival"]["key"],
            animated=plan.get("animated", "first_frame"),
        )
        faults.point("after-read")
        return image

    @staticmethod
    def _size(
        image: Image.Image, unit: dict[str, Any], profile: Profile, params: dict[str, Any]
    ) -> Image.Image:
        max_side = unit.get("max_side") or profile.max_side
        if unit.get("size"):
            w, h = rules.parse_size(unit["size"])
            if isinstance(w, int):
                return imaging.cover(image, w, h)
            return imaging.cover_aspect(image, w / h, max_side or max(image.size))
        return imaging.fit(image, max_side, params.get("width"), params.get("height"))

    def _references(self, unit: dict[str, Any], profile: Profile) -> list[Image.Image]:
        images = []
        for ref in unit.get("references", []):
            try:
                data = Path(ref["path"]).read_bytes()
            except OSError as exc:
                raise JobError(
                    f"reference {ref['path']}: {exc.strerror}", retryable=False
                ) from None
            images.append(
                imaging.fit(imaging.to_rgb(imaging.decode(data, ref["path"])), profile.max_side)
            )
        return images

    def _mask(
        self, plan: dict[str, Any], unit: dict[str, Any], size: tuple[int, int]
    ) -> Image.Image | None:
        kind = unit.get("mask")
        if not kind:
            return None
        key = plan["arrival"]["key"]
        if kind == "alpha":
            source = self._decoded_source(plan)
            if "A" not in source.getbands() and "transparency" not in source.info:
                raise InputError(f"{key} has no alpha channel, but the step's mask is 'alpha'")
            # Transparent pixels are the ones to change: the mask is white where alpha is 0.
            mask = Image.eval(source.convert("RGBA").getchannel("A"), lambda a: 255 - a)
        elif kind == "sidecar":
            mask_key = rules.mask_key(key)
            try:
                data = self.sources[plan["arrival"]["source"]].read(mask_key)
            except DarkroomError:
                raise InputError(
                    f"the step's mask is 'sidecar' but {mask_key} does not exist next to {key}"
                ) from None
            mask = imaging.decode(data, mask_key).convert("L")
        else:
            try:
                mask = imaging.decode(Path(kind).read_bytes(), kind).convert("L")
            except OSError as exc:
                raise InputError(f"mask {kind}: {exc.strerror}") from None
        return mask.resize(size, Image.Resampling.NEAREST) if mask.size != size else mask

    def read_source(self, plan: dict[str, Any]) -> bytes:
        arrival = plan["arrival"]
        source = self.sources.get(arrival["source"])
        if source is None:
            raise InputError(f"source {arrival['source']!r} is no longer configured")
        data = source.read(arrival["key"], arrival.get("etag"))
        if hashlib.sha256(data).hexdigest() != plan["sha256"]:
            raise InputError(
                f"{arrival['key']} changed since it arrived; the new version is processed on its own"
            )
        return data

    # -- rounds: a re-run keeps what came before -----------------------------------------

    def _archive_previous_round(self, plan: dict[str, Any], plan_id: str) -> None:
        """When this source was processed before by this rule (an edited sidecar, a new
        version of the file), keep the earlier outputs under rounds/N/ instead of
        overwriting them."""
        sink = self.sinks[plan["sink"]]
        if not sink.exists(plan["manifest"]):
            return
        try:
            old = json.loads(sink.read(plan["manifest"]))
        except (DarkroomError, ValueError):
            return
        if old.get("plan_id") in (None, plan_id):
            return
        number = len(old.get("rounds", [])) + 1
        base = str(PurePosixPath(plan["manifest"]).parent)
        moved: dict[str, str] = {}
        files = [
            o[k]
            for s in old.get("steps", [])
            for o in s.get("outputs", [])
            for k in ("path", "poster")
            if o.get(k)
        ]
        for path in files + [old.get("sheet")]:
            if not path or not sink.exists(path):
                continue
            target = f"{base}/rounds/{number}/{PurePosixPath(path).name}"
            sink.write(target, sink.read(path), "application/octet-stream")
            moved[path] = target
        summary = {
            "round": number,
            "prompt": old.get("rule", {}).get("prompt"),
            "created_at": old.get("created_at"),
            "sheet": moved.get(old.get("sheet")),
            "outputs": list(moved.values()),
        }
        self.ledger.note_round(plan_id, old.get("rounds", []) + [summary])
        log.info(
            "earlier outputs kept as a previous round",
            rule=plan["rule"],
            key=plan["arrival"]["key"],
            round=number,
        )

    # -- closing a plan --------------------------------------------------------------

    def finalize_if_ended(self, plan_id: str) -> None:
        with self._finalize_lock:  # pipeline threads and the loop may both see a plan end
            jobs = self.ledger.jobs_of(plan_id)
            if all(j.state.terminal for j in jobs) and self.ledger.plan(plan_id).state == "active":
                self.finalize(plan_id, jobs)

    def finalize(self, plan_id: str, jobs: list[JobRow] | None = None) -> None:
        """Write the sheet, then the manifest (the commit marker), then close the plan."""
        with self._finalize_lock:
            self._finalize(plan_id, jobs)

    def _finalize(self, plan_id: str, jobs: list[JobRow] | None = None) -> None:
        jobs = jobs or self.ledger.jobs_of(plan_id)
        plan_row = self.ledger.plan(plan_id)
        plan = plan_row.plan
        sink = self.sinks[plan["sink"]]
        states = {j.state for j in jobs}
        status = (
            "done"
            if states == {JobState.DONE}
            else "failed"
            if JobState.DONE not in states
            else "partial"
        )
        source_image = self._source_thumbnail(plan)
        manifest = {
            "darkroom_version": __version__,
            "plan_id": plan_id,
            "source": {
                **plan["arrival"],
                "sha256": plan["sha256"],
                "sidecar": plan.get("sidecar"),
                "width": source_image.width if source_image else None,
                "height": source_image.height if source_image else None,
            },
            "rule": {
                "name": plan["rule"],
                "digest": plan["digest"],
                "prompt": plan["prompt"],
                "negative_prompt": plan["negative_prompt"],
            },
            "status": status,
            "steps": [self._step_record(plan, job) for job in jobs],
            "sheet": plan["sheet"],
            "page": review.page_path_for(plan["manifest"]),
            "rounds": plan_row.rounds,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(plan_row.created_at)),
        }
        try:
            sheet_image = sheet.render_sheet(
                manifest, lambda p: self._open_for_sheet(p, sink, source_image)
            )
            buffer = io.BytesIO()
            sheet_image.save(buffer, "PNG", compress_level=3)
            sink.write(plan["sheet"], buffer.getvalue(), "image/png")
        except Exception as exc:  # a sheet is a view; its failure must not lose the results
            log.exception("review sheet failed", plan=plan_id)
            manifest["sheet"] = None
            manifest["sheet_error"] = str(exc)
        try:
            sink.write_manifest(plan["manifest"], json.dumps(manifest, indent=2).encode())
        except AlreadyCommitted:
            log.info(
                "another daemon already committed this source; keeping its manifest",
                rule=plan["rule"],
                key=plan_row.key,
            )
        else:
            try:
                review.publish(
                    sink, manifest, manifest_path=plan["manifest"], source_image=source_image
                )
            except Exception:  # the page is a view too: never fail the plan for it
                log.exception("review page failed", plan=plan_id)
            if self.on_manifest:
                try:
                    self.on_manifest(sink, manifest, plan["manifest"])
                except Exception:
                    log.exception("after-commit hook failed", plan=plan_id)
        faults.point("after-manifest")
        self.ledger.finish_plan(plan_id, status)
        if status == "done" and plan.get("on_success") == "move":
            self._move_source(plan)
        elif status == "failed":
            self._quarantine(plan_id, plan, jobs)
        log.info(
            "source finished",
            rule=plan["rule"],
            source=plan_row.source,
            key=plan_row.key,
            status=status,
            manifest=sink.location(plan["manifest"]),
        )
        if self.on_plan_done:
            self.on_plan_done(plan_id, status)

    def _move_source(self, plan: dict[str, Any]) -> None:
        arrival = plan["arrival"]
        source = self.sources.get(arrival["source"])
        move = getattr(source, "move", None)
        if move is None:
            log.warning(
                "this source cannot move files; on_success: move ignored", source=arrival["source"]
            )
            return
        target = f"{plan['processed_dir'].strip('/')}/{arrival['key']}"
        try:
            move(arrival["key"], target)
            log.info("source moved after success", key=arrival["key"], to=target)
        except DarkroomError as exc:
            log.warning("cannot move source after success", key=arrival["key"], reason=str(exc))

    def _quarantine(self, plan_id: str, plan: dict[str, Any], jobs: list[JobRow]) -> None:
        """A failed input goes to quarantine with its reason — unless another rule still
        wants the same file (its plan is running or succeeded)."""
        arrival = plan["arrival"]
        if self.ledger.others_want(plan_id, arrival["source"], arrival["key"], plan["sha256"]):
            return
        source = self.sources.get(arrival["source"])
        put = getattr(source, "quarantine", None)
        reasons = [
            {"step": j.step, "error": j.error, "attempts": j.attempts} for j in jobs if j.error
        ]
        record = {
            "source": arrival["source"],
            "key": arrival["key"],
            "sha256": plan["sha256"],
            "rule": plan["rule"],
            "reason": reasons[0]["error"] if reasons else "failed",
            "steps": reasons,
            "attempts": max((j.attempts for j in jobs), default=0),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        location = None
        if put is not None:
            try:
                location = put(arrival["key"], record, plan.get("quarantine"))
            except DarkroomError as exc:
                log.warning("cannot quarantine", key=arrival["key"], reason=str(exc))
        self.ledger.record_quarantine(
            arrival["source"], arrival["key"], plan["sha256"], record["reason"], location
        )
        log.warning(
            "input quarantined",
            source=arrival["source"],
            key=arrival["key"],
            rule=plan["rule"],
            reason=record["reason"],
            location=location,
        )

    def _step_record(self, plan: dict[str, Any], job: JobRow) -> dict[str, Any]:
        unit = plan["steps"][job.step_index]
        profile = self.profiles.get(unit["model"])
        return {
            "name": unit["name"],
            "model": unit["model"],
            "model_id": profile.model if profile else None,
            "prompt": unit["prompt"],
            "negative_prompt": unit.get("negative_prompt"),
            "seeds": unit["seeds"],
            "references": [r["path"] for r in unit.get("references", [])],
            "mask": unit.get("mask"),
            "state": job.state.value,
            "error": job.error if job.state is JobState.FAILED else None,
            "attempts": job.attempts,
            "seconds": job.seconds,
            "outputs": job.outputs,
        }

    def _source_thumbnail(self, plan: dict[str, Any]) -> Image.Image | None:
        try:
            return imaging.to_rgb(self._decoded_source(plan))
        except DarkroomError:
            return None

    @staticmethod
    def _open_for_sheet(path: str, sink: Any, source_image: Image.Image | None) -> Image.Image:
        if path == "source":
            return (
                source_image
                if source_image is not None
                else Image.new("RGB", (64, 64), (96, 96, 96))
            )
        return sheet.thumbnail(sink.read(path), 512)
