"""Committing one job's outputs: encode each with its provenance, write it atomically, record it.

Outputs are written before the ledger marks the job done, so a crash in between re-runs
the job (same seeds, same bytes) rather than losing its outputs. A video is encoded to the
unit's format with a poster strip beside it. A refused output (a hosted provider's safety
filter) is recorded with its reason and no file. Each output's :class:`OutputRecord` is set
only with the fields that apply to it: the manifest writes exactly those.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath
from typing import Any

from backends.base import Result, Video
from daemon import __version__
from daemon.errors import JobError
from daemon.execution.prepare import Prepared
from daemon.outputs import imaging
from daemon.outputs import provenance as provenance_format
from daemon.outputs.c2pa import ContentCredentials
from daemon.outputs.sheet_tiles import TILES
from daemon.rules.plan import output_path
from daemon.sinks.base import Sink
from daemon.types import OutputRecord, Plan, Unit

__all__ = ["commit_outputs"]

VIDEO_CONTENT_TYPES = {"mp4": "video/mp4", "webp": "image/webp", "gif": "image/gif"}
# What a hosted backend may report per output, copied into the record when present.
REPORTED = ("cost", "provider", "request_id", "seed_honoured")


def commit_outputs(
    p: Prepared,
    result: Result,
    sink: Sink,
    *,
    credentials: ContentCredentials | None = None,
) -> list[OutputRecord]:
    """Encode and write every output of one job; returns the output records. With
    ``credentials`` each image is signed with a C2PA manifest before its hash is taken."""
    plan, unit, profile = p.plan, p.unit, p.profile
    inputs = len(p.labels)  # one per input image; a brief's prompt-only unit has one, no image
    expected = inputs * len(unit.seeds)
    if len(result.images) != expected:
        raise JobError(
            f"the backend returned {len(result.images)} images for "
            f"{inputs} inputs x {len(unit.seeds)} seeds",
            retryable=False,
        )
    per_output = result.seconds / max(1, expected)
    # Hosted backends report per output: time, estimated cost, provider request id.
    reported = result.info.get("outputs")
    reports: list[dict[str, Any]] = reported if isinstance(reported, list) else []
    metadata = _metadata(plan)
    outputs = []
    for i, label in enumerate(p.labels):
        for v, seed in enumerate(unit.seeds):
            variant = i * len(unit.seeds) + v
            image = result.images[variant]
            video = result.videos[variant] if result.videos else None
            path = output_path(plan, unit, variant, seed, video=video is not None)
            report = reports[variant] if variant < len(reports) else {}
            fields: dict[str, Any] = {
                "path": path,
                "step": unit.name,
                "model": profile.name,
                "model_id": profile.model,
                "variant": variant,
                "seed": seed,
                "input": label,
                "seconds": round(report.get("seconds", per_output), 4),
                "params": p.params,
            }
            fields.update({k: report[k] for k in REPORTED if report.get(k) is not None})
            if image is None:
                # A refused or failed output (hosted models): a failed variant with the
                # provider's reason (the other outputs were paid for and are kept).
                reason = report.get("refusal") or report.get("error")
                fields.update(path=None, error=reason or "the model returned no image")
                outputs.append(OutputRecord(**fields))
                continue
            fields.update(width=image.width, height=image.height)
            record = _provenance(p, profile.revision, fields)
            if video is not None:
                fields.update(_write_video(sink, path, video, unit, metadata, record))
            else:
                data, content_type = imaging.encode(
                    image,
                    path,
                    record,
                    quality=plan.quality,
                    icc_profile=p.icc if plan.keep_icc else None,
                )
                if credentials is not None:
                    data = credentials.sign(data, content_type, record, title=path)
                sink.write(path, data, content_type, metadata=metadata)
                # The sheet's tile, without reading the output back.
                TILES.remember(sink.name, path, image, p.icc if plan.keep_icc else None)
                fields["sha256"] = hashlib.sha256(data).hexdigest()
            outputs.append(OutputRecord(**fields))
    return outputs


def _provenance(p: Prepared, revision: str | None, fields: dict[str, Any]) -> dict[str, Any]:
    """What an output file says about itself (``darkroom inspect`` reads it back), with the
    IPTC digital source type that labels it as AI-made."""
    plan, unit = p.plan, p.unit
    # Every chain starts from the arriving photo, so an earlier step's output is a composite.
    input_type = None if unit.input == "source" else provenance_format.COMPOSITE_WITH_AI
    if plan.brief is not None and unit.input != "source":
        # A brief has no photo: its whole chain is made from text.
        input_type = provenance_format.TRAINED_ALGORITHMIC_MEDIA
    source_type = provenance_format.digital_source_type(
        p.profile.task, from_image=bool(p.request.images), input_type=input_type
    )
    return {
        **({"digital_source_type": source_type} if source_type else {}),
        "darkroom_version": __version__,
        "prompt": unit.prompt,
        "negative_prompt": unit.negative_prompt,
        "rule": plan.rule,
        "source_sha256": plan.sha256,
        "revision": revision,
        **{k: fields[k] for k in ("step", "model", "model_id", "seed", "params")},
        **{k: fields[k] for k in ("provider", "request_id") if k in fields},
    }


def _metadata(plan: Plan) -> dict[str, str]:
    return {"rule": plan.rule, "source-sha256": plan.sha256}


def _write_video(
    sink: Sink,
    path: str,
    video: Video,
    unit: Unit,
    metadata: dict[str, str],
    record: dict[str, Any],
) -> dict[str, Any]:
    from backends import video_io

    xmp = provenance_format.xmp_packet(record)
    data = video_io.encode_video(video, unit.video_format, record, xmp=xmp)
    sink.write(path, data, VIDEO_CONTENT_TYPES[unit.video_format], metadata=metadata)
    poster = str(PurePosixPath(path).with_suffix("")) + ".strip.png"
    strip, _ = imaging.encode(video_io.frame_strip(video), poster, record)
    sink.write(poster, strip, "image/png")
    return {
        "kind": "video",
        "poster": poster,
        "frames": len(video.frames),
        "fps": video.fps,
        "duration": round(video.seconds, 3),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
