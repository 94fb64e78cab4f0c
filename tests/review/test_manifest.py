"""The manifest file: built from a plan, parsed back, written byte-for-byte as the daemon always did."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from daemon.outputs.manifest import (
    Decision,
    Manifest,
    ManifestError,
    RoundSummary,
    manifest_bytes,
    parse_manifest,
)
from daemon.outputs.manifest_build import build_manifest
from daemon.types import JobState, OutputRecord, Plan, PlanState


def _output(variant: int, **extra: Any) -> dict[str, Any]:
    """An output record with its keys in the order Runner._commit wrote them."""
    record: dict[str, Any] = {
        "path": f"explore/lamp/explore-sd-turbo-{variant}.png",
        "step": "explore",
        "model": "sd-turbo",
        "model_id": "stabilityai/sd-turbo",
        "variant": variant,
        "seed": 1000 + variant,
        "input": "source",
        "seconds": 0.4123,
        "params": {"strength": 0.55, "steps": 2},
    }
    record.update(extra)
    return record


# A manifest exactly as the runner's _finalize built it before the manifest module existed
# (then `json.dumps(manifest, indent=2)`), with every kind of output it could record.
LEGACY: dict[str, Any] = {
    "darkroom_version": "0.1.0",
    "plan_id": "p-0001",
    "source": {
        "source": "drop",
        "key": "shoots/lamp.jpg",
        "uri": "/srv/drop/shoots/lamp.jpg",
        "size": 48213,
        "etag": None,
        "sha256": "a" * 64,
        "sidecar": {"key": "shoots/lamp.yaml", "sha256": "b" * 64},
        "width": 640,
        "height": 480,
    },
    "rule": {
        "name": "explore",
        "digest": "d1g35t",
        "prompt": "a lamp on a desk",
        "negative_prompt": None,
    },
    "status": "partial",
    "steps": [
        {
            "name": "explore",
            "model": "sd-turbo",
            "model_id": "stabilityai/sd-turbo",
            "prompt": "a lamp on a desk",
            "negative_prompt": None,
            "seeds": [1000, 1001],
            "references": ["brand:refs/a.png"],
            "mask": None,
            "state": "done",
            "error": None,
            "attempts": 1,
            "seconds": 0.83,
            "outputs": [
                _output(0, width=512, height=384, sha256="c" * 64),
                # a hosted model: cost, provider and request id, then a refusal
                _output(
                    1,
                    cost=0.04,
                    provider="bfl",
                    request_id="req-1",
                    seed_honoured=True,
                    path=None,
                    error="refused by the provider's safety filter",
                ),
            ],
        },
        {
            "name": "animate",
            "model": "tiny-video",
            "model_id": None,
            "prompt": "a lamp on a desk",
            "negative_prompt": "blurry",
            "seeds": [7],
            "references": [],
            "mask": None,
            "state": "done",
            "error": None,
            "attempts": 2,
            "seconds": 3.5,
            "outputs": [
                {
                    **_output(0, width=64, height=64),
                    "path": "explore/lamp/animate-tiny-video-0.mp4",
                    "step": "animate",
                    "model": "tiny-video",
                    "model_id": None,
                    "input": "explore/lamp/explore-sd-turbo-0.png",
                    "kind": "video",
                    "poster": "explore/lamp/animate-tiny-video-0.strip.png",
                    "frames": 8,
                    "fps": 7.0,
                    "duration": 1.143,
                    "sha256": "e" * 64,
                }
            ],
        },
        {
            "name": "refine",
            "model": "sdxl",
            "model_id": "stabilityai/sdxl",
            "prompt": "a lamp on a desk",
            "negative_prompt": None,
            "seeds": [5],
            "references": [],
            "mask": "shoots/lamp.mask.png",
            "state": "failed",
            "error": "out of memory",
            "attempts": 3,
            "seconds": None,
            "outputs": [],
        },
    ],
    "sheet": "explore/lamp/sheet.png",
    "page": "explore/lamp/index.html",
    "rounds": [
        {
            "round": 1,
            "prompt": "a lamp",
            "created_at": "2024-05-01T10:00:00Z",
            "sheet": "explore/lamp/rounds/1/sheet.png",
            "outputs": ["explore/lamp/rounds/1/explore-sd-turbo-0.png"],
        }
    ],
    "created_at": "2024-05-02T11:12:13Z",
}


def _legacy_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2).encode()


def test_a_legacy_manifest_is_written_back_byte_for_byte() -> None:
    data = _legacy_bytes(LEGACY)
    assert manifest_bytes(parse_manifest(data)) == data


def test_a_failed_sheet_and_review_decisions_keep_their_place() -> None:
    legacy = copy.deepcopy(LEGACY)
    legacy["sheet"] = None
    legacy["sheet_error"] = "font missing"
    legacy["decisions"] = {
        "explore/lamp/explore-sd-turbo-0.png": {
            "decision": "approved",
            "at": "2024-05-03T09:00:00Z",
            "by": "ana",
            "note": "hero shot",
        }
    }
    data = _legacy_bytes(legacy)
    manifest = parse_manifest(data)
    assert manifest_bytes(manifest) == data
    assert manifest.sheet is None and manifest.sheet_error == "font missing"
    decision = manifest.decision_for("explore/lamp/explore-sd-turbo-0.png")
    assert decision is not None and decision.by == "ana"


def test_a_partial_or_unknown_manifest_gains_no_keys_and_keeps_unknown_ones() -> None:
    older = {
        "source": {"key": "a.jpg", "camera": "x100"},
        "rule": "explore",  # very old files named the rule only
        "steps": [{"name": "explore", "outputs": [_output(0, rating=5)]}],
        "from_the_future": {"anything": [1, 2]},
    }
    manifest = parse_manifest(json.dumps(older).encode())
    assert manifest.rule.name == "explore"
    assert manifest.source.label == "a.jpg"
    again = json.loads(manifest_bytes(manifest))
    assert again["from_the_future"] == {"anything": [1, 2]}
    assert again["source"] == {"key": "a.jpg", "camera": "x100"}
    assert again["steps"][0]["outputs"][0]["rating"] == 5
    assert set(again) == {"source", "rule", "steps", "from_the_future"}


@pytest.mark.parametrize("data", [b"not json", b"[1, 2]", b'{"rule": {}}'])
def test_bytes_that_are_not_a_manifest_are_refused_with_a_reason(data: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(data)


def test_junk_decisions_read_as_none() -> None:
    manifest = parse_manifest(json.dumps({"steps": [], "decisions": ["x"]}).encode())
    assert manifest.decisions == {}


def test_decisions_are_added_to_a_copy() -> None:
    manifest = parse_manifest(_legacy_bytes(LEGACY))
    decided = manifest.with_decisions({"x.png": Decision(decision="rejected", at="t", by="b")})
    assert "decisions" not in json.loads(manifest_bytes(manifest))
    assert json.loads(manifest_bytes(decided))["decisions"] == {
        "x.png": {"decision": "rejected", "at": "t", "by": "b"}
    }


def test_views_of_the_outputs() -> None:
    manifest = parse_manifest(_legacy_bytes(LEGACY))
    assert [o.path for o in manifest.written()] == [
        "explore/lamp/explore-sd-turbo-0.png",
        "explore/lamp/animate-tiny-video-0.mp4",
    ]
    assert manifest.files() == [
        "explore/lamp/explore-sd-turbo-0.png",
        "explore/lamp/animate-tiny-video-0.mp4",
        "explore/lamp/animate-tiny-video-0.strip.png",
    ]
    assert manifest.total_cost() == pytest.approx(0.04)
    assert manifest.without_sheet("boom").sheet is None


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class _Outcome:
    unit_index: int
    state: JobState
    error: str | None
    attempts: int
    seconds: float | None
    outputs: list[OutputRecord] = field(default_factory=list)


def _plan() -> Plan:
    unit = {
        "id": "explore",
        "name": "explore",
        "model": "sd-turbo",
        "input": "source",
        "prompt": "a lamp on a desk",
        "seeds": [1000, 1001],
        "references": [{"path": "brand:refs/a.png", "sha256": "f" * 64}],
    }
    return Plan.model_validate(
        {
            "rule": "explore",
            "digest": "d1g35t",
            "sha256": "a" * 64,
            "content": "a" * 64,
            "sidecar": {"key": "shoots/lamp.yaml", "sha256": "b" * 64},
            "arrival": {
                "source": "drop",
                "key": "shoots/lamp.jpg",
                "uri": "/srv/drop/shoots/lamp.jpg",
                "size": 48213,
                "etag": None,
            },
            "prompt": "a lamp on a desk",
            "sink": "out",
            "path": "{rule}/{stem}/{step}-{model}-{variant}.{ext}",
            "manifest": "explore/lamp/manifest.json",
            "sheet": "explore/lamp/sheet.png",
            "steps": [
                unit,
                {**unit, "id": "refine", "name": "refine", "model": "sdxl", "seeds": [5]},
            ],
        }
    )


def test_build_manifest_writes_what_the_runner_always_wrote() -> None:
    outputs = LEGACY["steps"][0]["outputs"]
    units = [
        _Outcome(0, JobState.DONE, None, 1, 0.83, [OutputRecord(**o) for o in outputs]),
        _Outcome(1, JobState.FAILED, "out of memory", 3, None),
    ]
    manifest = build_manifest(
        _plan(),
        plan_id="p-0001",
        status=PlanState.PARTIAL,
        units=units,
        model_id={"sd-turbo": "stabilityai/sd-turbo"}.get,
        rounds=[RoundSummary.model_validate(r) for r in LEGACY["rounds"]],
        created_at=1714648333.0,  # 2024-05-02T11:12:13Z
        source_size=(640, 480),
        darkroom_version="0.1.0",
    )
    expected = copy.deepcopy(LEGACY)
    expected["steps"] = [
        {**LEGACY["steps"][0], "outputs": outputs},
        {
            **LEGACY["steps"][2],
            "name": "refine",
            "model_id": None,
            "prompt": "a lamp on a desk",
            "references": ["brand:refs/a.png"],
            "mask": None,
        },
    ]
    assert manifest_bytes(manifest) == _legacy_bytes(expected)
    assert isinstance(manifest, Manifest) and manifest.steps[1].failed
    # what the ledger may hand back after a JSON round trip gives the same file
    reloaded = [
        _Outcome(
            0, JobState.DONE, None, 1, 0.83, [OutputRecord(**o.model_dump()) for o in u.outputs]
        )
        for u in units[:1]
    ]
    again = build_manifest(
        _plan(),
        plan_id="p-0001",
        status=PlanState.PARTIAL,
        units=[*reloaded, units[1]],
        model_id={"sd-turbo": "stabilityai/sd-turbo"}.get,
        rounds=[RoundSummary.model_validate(r) for r in LEGACY["rounds"]],
        created_at=1714648333.0,
        source_size=(640, 480),
        darkroom_version="0.1.0",
    )
    assert manifest_bytes(again) == manifest_bytes(manifest)
