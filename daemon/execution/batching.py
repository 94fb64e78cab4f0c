"""Dynamic batching: several jobs' requests as one model call, and the results mapped back.

A model call costs nearly the same for one image as for a few on a device that is not
saturated (the weights are read once per step, the kernels get wider), so jobs of one
profile that agree on everything but their input images run together. ``Request`` carries
one prompt and one seed list for all its images, so "agree" means: the same spec, prompt,
negative prompt, seeds, params and image size, and no references or mask (those are per job
and are not batched). That is the common case of a rule with a fixed prompt over a folder
of images; rules whose prompt names the file (``{stem}``) batch only their variants.

The merged request lists every job's images in order, and backends return outputs
input-major (each image with every seed), so job ``i`` owns a contiguous slice of the
outputs: its images and seeds come back exactly as a single run would give them (each
output has its own seeded generator; the numbers agree within floating-point tolerance).

Failure isolation: an out-of-memory error halves the batch and retries; any other error of
a merged call reruns the jobs one by one, so one bad input fails only its own job. A dead
worker fails the whole batch (every job is retried, and a retried job is never batched
again — see :mod:`daemon.queue.dispatch` — so a poison input cannot take its companions down
with it more than once).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TypeVar

from backends.base import ModelSpec, Request, Result
from daemon.errors import JobError, OutOfMemory, WorkerDied

T = TypeVar("T")


def batch_key(spec: ModelSpec, request: Request) -> tuple[object, ...] | None:
    """Requests with equal keys can share a call; None: this one runs alone."""
    if request.references or request.mask is not None or not request.images:
        return None
    if spec.option("batch", True) is False:
        return None
    sizes = {image.size for image in request.images}
    if len(sizes) != 1:
        return None
    try:
        params = ModelSpec.freeze_options(request.params)
        hash(params)
    except TypeError:
        return None
    return (
        spec,
        request.prompt,
        request.negative_prompt,
        tuple(request.seeds),
        params,
        sizes.pop(),
    )


def group(
    items: Sequence[T], key: Callable[[T], tuple[object, ...] | None], max_batch: int
) -> list[list[T]]:
    """Items in arrival order, grouped by key into lists of at most ``max_batch``."""
    groups: list[list[T]] = []
    open_groups: dict[tuple[object, ...], list[T]] = {}
    for item in items:
        k = key(item) if max_batch > 1 else None
        if k is None:
            groups.append([item])
            continue
        current = open_groups.get(k)
        if current is None or len(current) >= max_batch:
            current = []
            open_groups[k] = current
            groups.append(current)
        current.append(item)
    return groups


def merge(requests: Sequence[Request]) -> Request:
    first = requests[0]
    return dataclasses.replace(first, images=[image for r in requests for image in r.images])


def split(result: Result, requests: Sequence[Request]) -> list[Result]:
    """One result per request, each with its slice of the outputs and its share of the time."""
    total = sum(len(r.images) * len(r.seeds) for r in requests)
    if len(result.images) != total:
        raise JobError(
            f"the backend returned {len(result.images)} images for a batch of {total}",
            retryable=False,
        )
    parts, start = [], 0
    for request in requests:
        n = len(request.images) * len(request.seeds)
        videos = result.videos[start : start + n] if result.videos else None
        info = {**result.info, "batch_jobs": len(requests), "batch_outputs": total}
        if isinstance(info.get("outputs"), list):  # per-output reports follow their outputs
            info["outputs"] = info["outputs"][start : start + n]
        parts.append(
            Result(
                images=result.images[start : start + n],
                seconds=result.seconds * n / total,
                info=info,
                videos=videos,
            )
        )
        start += n
    return parts


def run_batch(
    run: Callable[..., Result], spec: ModelSpec, requests: Sequence[Request], job_timeout: float
) -> list[Result | Exception]:
    """Run ``requests`` as few calls as fit; one outcome (a Result or the error) per request.

    ``run`` is a :meth:`daemon.execution.pool.Pool.run` (the runner binds its ``cancel``).
    Errors are returned, not raised, so the caller settles every job of the batch.
    """
    if len(requests) == 1:
        try:
            return [run(spec, requests[0], timeout=job_timeout)]
        except Exception as exc:
            return [exc]
    try:
        merged = run(spec, merge(requests), timeout=job_timeout * len(requests), fallback=False)
        return list(split(merged, requests))
    except WorkerDied as exc:
        return [exc] * len(requests)
    except OutOfMemory:
        half = len(requests) // 2
        return run_batch(run, spec, requests[:half], job_timeout) + run_batch(
            run, spec, requests[half:], job_timeout
        )
    except Exception:
        return [outcome for r in requests for outcome in run_batch(run, spec, [r], job_timeout)]
