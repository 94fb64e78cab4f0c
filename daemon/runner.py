"""The dispatcher: claims jobs from the ledger, runs them on the pool, commits outputs.

For each job: read and decode the inputs (the source, or an earlier step's outputs),
size them for the profile, run the model on the worker, encode every output with its
provenance and write it atomically to the sink, and only then mark the job done. When
every step of a plan has ended, the review sheet and then the manifest — the commit
marker — are written and the plan is closed.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from PIL import Image

from backends.base import Request
from daemon import __version__, imaging, rules, sheet
from daemon.errors import AlreadyCommitted, DarkroomError, InputError, JobError, WorkerDied
from daemon.jobs import JobState
from daemon.ledger import JobRow, Ledger, job_id
from daemon.pool import WorkerPool
from daemon.profiles import Profile

log = structlog.get_logger("darkroom.runner")


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
    ):
        self.ledger = ledger
        self.sources = sources
        self.sinks = sinks
        self.pool = pool
        self.profiles = profiles
        self.device = device
        self.on_plan_done = on_plan_done
        self.owner = f"runner-{id(self):x}"
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.current: JobRow | None = None
        self.last_error: str | None = None

    # -- the loop --------------------------------------------------------------------

    def loop(self) -> None:
        while not self.stopping.is_set():
            if not self.step():
                due = self.ledger.next_due()
                wait = 1.0 if due is None else max(0.01, min(1.0, due - time.time()))
                self.wake.wait(wait)
                self.wake.clear()

    def step(self) -> bool:
        """Run one job if one is due; False when the queue had nothing runnable."""
        job = self.ledger.claim(self.owner)
        if job is None:
            return False
        self.current = job
        try:
            self.run_job(job)
        finally:
            self.current = None
        return True

    def run_job(self, job: JobRow) -> None:
        plan_row = self.ledger.plan(job.plan_id)
        plan = plan_row.plan
        bound = log.bind(job_id=job.id, rule=job.rule, source=plan_row.source, key=plan_row.key, step=job.step)
        bound.info("job started", attempt=job.attempts)
        try:
            outputs, seconds = self._execute(job, plan)
        except WorkerDied as exc:
            if self.stopping.is_set():
                self.ledger.release(job.id)
                bound.info("job put back for the next start", reason=str(exc))
                return
            self._failed(job, bound, str(exc), retryable=True)
        except DarkroomError as exc:
            self._failed(job, bound, str(exc), retryable=exc.retryable)
        except Exception as exc:  # a bug must cost one job, never the daemon
            bound.exception("unexpected error")
            self._failed(job, bound, f"internal error: {type(exc).__name__}: {exc}", retryable=True)
        else:
            self.ledger.complete(job.id, outputs, seconds)
            bound.info("job done", outputs=len(outputs), seconds=round(seconds, 3))
        self.finalize_if_ended(job.plan_id)
        self.wake.set()

    def _failed(self, job: JobRow, bound: Any, reason: str, *, retryable: bool) -> None:
        self.last_error = reason
        state = self.ledger.fail(job.id, reason, retryable=retryable)
        if state is JobState.QUEUED:
            bound.warning("job failed, will retry", reason=reason, attempt=job.attempts)
        else:
            bound.error("job failed", reason=reason, attempts=job.attempts)

    # -- one job ---------------------------------------------------------------------

    def _execute(self, job: JobRow, plan: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
        step = plan["steps"][job.step_index]
        profile = self.profiles.get(step["model"])
        if profile is None:
            raise JobError(f"model profile {step['model']!r} is no longer configured", retryable=False)
        labels, images = self._inputs(job, plan, step)
        params = {**profile.defaults, **step["params"]}
        sized = [imaging.fit(img, profile.max_side, params.get("width"), params.get("height")) for img in images]
        request = Request(
            images=sized, prompt=step["prompt"], seeds=list(step["seeds"]),
            negative_prompt=step.get("negative_prompt"), params=params,
        )
        result = self.pool.run(profile.spec(self.device), request)
        if len(result.images) != len(sized) * len(step["seeds"]):
            raise JobError(f"the backend returned {len(result.images)} images for "
                           f"{len(sized)} inputs x {len(step['seeds'])} seeds", retryable=False)
        sink = self.sinks[plan["sink"]]
        outputs = []
        per_output = result.seconds / max(1, len(result.images))
        for i, label in enumerate(labels):
            for v, seed in enumerate(step["seeds"]):
                variant = i * len(step["seeds"]) + v
                image = result.images[variant]
                path = rules.output_path(plan, step, variant, seed)
                record = {
                    "path": path, "step": step["name"], "model": profile.name, "model_id": profile.model,
                    "variant": variant, "seed": seed, "width": image.width, "height": image.height,
                    "input": label, "seconds": round(per_output, 4), "params": params,
                }
                provenance = {
                    "darkroom_version": __version__, "prompt": step["prompt"],
                    "negative_prompt": step.get("negative_prompt"), "rule": plan["rule"],
                    "source_sha256": plan["sha256"], **{k: record[k] for k in ("step", "model", "model_id", "seed", "params")},
                }
                data, content_type = imaging.encode(image, path, provenance)
                sink.write(path, data, content_type)
                record["sha256"] = hashlib.sha256(data).hexdigest()
                outputs.append(record)
        return outputs, result.seconds

    def _inputs(self, job: JobRow, plan: dict[str, Any], step: dict[str, Any]) -> tuple[list[str], list[Image.Image]]:
        if step["input"] == "source":
            data = self.read_source(plan)
            return ["source"], [imaging.to_rgb(imaging.decode(data, plan["arrival"]["key"]))]
        previous = self.ledger.job(job_id(job.plan_id, step["input"]))
        sink = self.sinks[plan["sink"]]
        labels, images = [], []
        for output in previous.outputs:
            labels.append(output["path"])
            images.append(imaging.to_rgb(imaging.decode(sink.read(output["path"]), output["path"])))
        if not images:
            raise JobError(f"step {step['input']!r} produced no outputs to use", retryable=False)
        return labels, images

    def read_source(self, plan: dict[str, Any]) -> bytes:
        arrival = plan["arrival"]
        source = self.sources.get(arrival["source"])
        if source is None:
            raise InputError(f"source {arrival['source']!r} is no longer configured")
        data = source.read(arrival["key"], arrival.get("etag"))
        if hashlib.sha256(data).hexdigest() != plan["sha256"]:
            raise InputError(f"{arrival['key']} changed since it arrived; the new version is processed on its own")
        return data

    # -- closing a plan --------------------------------------------------------------

    def finalize_if_ended(self, plan_id: str) -> None:
        jobs = self.ledger.jobs_of(plan_id)
        if all(j.state.terminal for j in jobs):
            self.finalize(plan_id, jobs)

    def finalize(self, plan_id: str, jobs: list[JobRow] | None = None) -> None:
        """Write the sheet, then the manifest (the commit marker), then close the plan."""
        jobs = jobs or self.ledger.jobs_of(plan_id)
        plan_row = self.ledger.plan(plan_id)
        plan = plan_row.plan
        sink = self.sinks[plan["sink"]]
        states = {j.state for j in jobs}
        status = "done" if states == {JobState.DONE} else "failed" if JobState.DONE not in states else "partial"
        source_image = self._source_thumbnail(plan)
        manifest = {
            "darkroom_version": __version__,
            "source": {
                **plan["arrival"], "sha256": plan["sha256"],
                "width": source_image.width if source_image else None,
                "height": source_image.height if source_image else None,
            },
            "rule": {"name": plan["rule"], "digest": plan["digest"], "prompt": plan["prompt"],
                     "negative_prompt": plan["negative_prompt"]},
            "status": status,
            "steps": [self._step_record(plan, job) for job in jobs],
            "sheet": plan["sheet"],
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(plan_row.created_at)),
        }
        try:
            sheet_image = sheet.render_sheet(manifest, lambda p: self._open_for_sheet(p, sink, source_image))
            buffer = io.BytesIO()
            sheet_image.save(buffer, "PNG")
            sink.write(plan["sheet"], buffer.getvalue(), "image/png")
        except Exception as exc:  # a sheet is a view; its failure must not lose the results
            log.exception("review sheet failed", plan=plan_id)
            manifest["sheet"] = None
            manifest["sheet_error"] = str(exc)
        try:
            sink.write_manifest(plan["manifest"], json.dumps(manifest, indent=2).encode())
        except AlreadyCommitted:
            log.info("another daemon already committed this source; keeping its manifest",
                     rule=plan["rule"], key=plan_row.key)
        self.ledger.finish_plan(plan_id, status)
        log.info("source finished", rule=plan["rule"], source=plan_row.source, key=plan_row.key, status=status,
                 manifest=sink.location(plan["manifest"]))
        if self.on_plan_done:
            self.on_plan_done(plan_id, status)

    def _step_record(self, plan: dict[str, Any], job: JobRow) -> dict[str, Any]:
        step = plan["steps"][job.step_index]
        profile = self.profiles.get(step["model"])
        return {
            "name": step["name"], "model": step["model"], "model_id": profile.model if profile else None,
            "prompt": step["prompt"], "negative_prompt": step.get("negative_prompt"), "seeds": step["seeds"],
            "state": job.state.value, "error": job.error if job.state is JobState.FAILED else None,
            "attempts": job.attempts, "seconds": job.seconds, "outputs": job.outputs,
        }

    def _source_thumbnail(self, plan: dict[str, Any]) -> Image.Image | None:
        try:
            return imaging.to_rgb(imaging.decode(self.read_source(plan), plan["arrival"]["key"]))
        except DarkroomError:
            return None

    @staticmethod
    def _open_for_sheet(path: str, sink: Any, source_image: Image.Image | None) -> Image.Image:
        if path == "source":
            return source_image if source_image is not None else Image.new("RGB", (64, 64), (96, 96, 96))
        return sheet.thumbnail(sink.read(path), 512)
