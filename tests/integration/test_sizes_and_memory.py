"""Issues 22 and 21 wired into the daemon: sizes the models accept, what a backend error does
to a job, the out-of-memory ladder, memory and time limits, the hosted start-up check and
``darkroom models``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from backends.base import ModelSpec, Request
from backends.profiles import PROFILES
from backends.runtime import placement
from daemon.cli.main import main as darkroom
from daemon.config.profiles import Profile
from daemon.errors import EnvironmentFault, JobError
from daemon.execution.inline_pool import InlinePool
from daemon.execution.model_cache import GB, ModelCache
from daemon.execution.pool import WorkerPool
from daemon.rules.load import load_rules
from daemon.service.hosted_check import check_hosted_models
from tests.hosted.fakes import GEMINI_RETIRED, FakeGemini, gemini_error

# Odd sizes of the four aspect ratios a marketing team drops: 3:2, 2:3, 4:5 and 16:9.
ODD_SIZES = {"landscape": (97, 65), "portrait": (65, 97), "four-five": (77, 97), "wide": (113, 63)}


def _photo_with_a_hole(path: Path, size: tuple[int, int]) -> None:
    """An RGBA photo whose transparent middle is the area an inpainting step repaints."""
    image = Image.new("RGBA", size, (180, 90, 40, 255))
    w, h = size
    ImageDraw.Draw(image).rectangle((w // 4, h // 4, w // 2, h // 2), fill=(0, 0, 0, 0))
    image.save(path)


@pytest.mark.slow
def test_odd_photos_of_every_aspect_ratio_run_on_every_local_task(harness):
    """Issue 22 (1): the runner fitted inputs to multiples of 8; Kontext, Fill and Wan need
    16 and LTX 32, so a 97x65 photo failed for good (and was quarantined)."""
    harness.rule(
        "sizes.yaml",
        """\
        name: sizes
        match: {source: drop}
        prompt: "{stem} at dusk"
        steps:
          - {name: look, models: [tiny, tiny-kontext, tiny-ltx, tiny-wan], seeds: [1]}
          - {name: fill, input: source, model: tiny-fill, mask: alpha, seeds: [1]}
        output: {sink: out}
        """,
    )
    harness.start()
    for stem, size in ODD_SIZES.items():
        _photo_with_a_hole(harness.drop / f"{stem}.png", size)
    # Wherever the output layout puts them: one manifest per photo.
    found = harness.wait(
        lambda: (lambda ms: ms if len(ms) == len(ODD_SIZES) else None)(
            sorted((harness.out / "sizes").glob("*/manifest.json"))
        ),
        timeout=400,
        what="a manifest for every photo",
    )
    assert isinstance(found, list)
    for path in found:
        manifest = json.loads(path.read_text())
        errors = [(s["model"], s.get("error")) for s in manifest["steps"] if s.get("error")]
        assert manifest["status"] == "done", (path, errors)
        assert [s["model"] for s in manifest["steps"]] == [
            "tiny",
            "tiny-kontext",
            "tiny-ltx",
            "tiny-wan",
            "tiny-fill",
        ]
        assert all(s["state"] == "done" and s["outputs"] for s in manifest["steps"]), path
    assert harness.app is not None and harness.app.ledger is not None
    assert harness.app.ledger.quarantined() == []


def test_an_explicit_size_a_model_refuses_is_a_located_check_problem(harness, capsys):
    """Issue 22 (1): ``size: WxH`` is used as written, so ``darkroom check`` validates it
    against the task's size rule (here LTX-Video's multiple of 32) with file:line."""
    harness.rule(
        "clip.yaml",
        """\
        name: clip
        match: {source: drop}
        prompt: "{stem} turning"
        steps:
          - name: move
            model: tiny-ltx
            size: 200x136
        output: {sink: out}
        """,
    )
    config = harness.config()
    assert darkroom(["check", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "clip.yaml:7:" in err
    assert "width 200 and height 136 must be a multiple of 32 for model profile 'tiny-ltx'" in err
    assert "use 192x128" in err


def _nano_banana(gemini: FakeGemini, **options: Any) -> Profile:
    fields = dict(PROFILES["nano-banana"])
    fast = {"timeout": 5, "retries": 1, "backoff": 0.01, "max_wait": 2}
    fields["options"] = {**fields["options"], "base_url": f"{gemini.url}/v1beta", **fast, **options}
    return Profile(name="nano-banana", **fields)


def _one_output() -> Request:
    return Request([Image.new("RGB", (64, 48), (200, 80, 40))], "a cup on marble", [1])


def test_backend_errors_are_held_failed_or_retried_by_their_class(tmp_path, monkeypatch):
    """Issue 21 wired in: the pool's old PERMANENT set retried a daily quota, a retired model
    and a possibly paid 5xx (paying twice); now each follows backends.base.disposition."""
    monkeypatch.setenv("GEMINI_API_KEY", FakeGemini.key)
    pool = InlinePool(tmp_path)
    with FakeGemini() as gemini:
        spec = _nano_banana(gemini).spec("cpu")
        gemini.daily_quota_used = True  # "hold": the account, not the input
        with pytest.raises(EnvironmentFault, match="quota"):
            pool.run(spec, _one_output())
        gemini.daily_quota_used = False

        retired = sorted(GEMINI_RETIRED)[0]  # "hold": a retired model id
        with pytest.raises(EnvironmentFault, match=f"does not know model {retired}"):
            pool.run(dataclasses.replace(spec, model=retired), _one_output())

        sent = len(gemini.requests)  # "fail": may already be charged, never resent
        gemini.script("generate", 503, gemini_error(503, "UNAVAILABLE", "The model is overloaded."))
        with pytest.raises(JobError, match="not resent") as unknown:
            pool.run(spec, _one_output())
        assert not unknown.value.retryable and not isinstance(unknown.value, EnvironmentFault)
        assert len(gemini.requests) == sent + 1

        for _ in range(2):  # "retry": a transient error, once the client's own retries are spent
            gemini.script("generate", 429, gemini_error(429, "RESOURCE_EXHAUSTED", "slow down"))
        with pytest.raises(JobError, match="RESOURCE_EXHAUSTED") as transient:
            pool.run(spec, _one_output())
        assert transient.value.retryable and not isinstance(transient.value, EnvironmentFault)


def test_the_pool_walks_the_oom_ladder_re_placing_the_one_loaded_copy(
    tmp_path, model_cache, monkeypatch
):
    """Issue 22 (2): after halving, the pool retried with ``cpu_offload: True`` as a *new* spec:
    a second full load beside the copy that ran out of memory. Now: max_batch 1, then model
    offload, each re-placing the same loaded pipeline (real placement code, tiny SD)."""
    torch = pytest.importorskip("torch")
    from backends.runtime import loading

    monkeypatch.setattr(placement, "OFFLOAD_ON_CPU", True)  # offload for real on the CPU
    loads: list[object] = []
    real_load = loading._load
    monkeypatch.setattr(loading, "_load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    pool = InlinePool(model_cache)
    spec = ModelSpec(task="img2img", model="random:sd-tiny", options=(("share", False),))
    request = Request(
        [Image.new("RGB", (64, 64), (90, 20, 160))], "a", [3], params={"steps": 2, "strength": 0.5}
    )
    pool.load(spec)
    (backend,) = [pool._cache._entries[s][0] for s in pool._cache.specs()]
    failures = {"left": 2}  # the first call and the max_batch 1 retry run out of memory
    cls = type(backend._pipe)
    real_call = cls.__call__

    def call(this: object, *args: object, **kwargs: object) -> object:
        if failures["left"]:
            failures["left"] -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_call(this, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", call)
    result = pool.run(spec, request)
    assert result.images[0].size == (64, 64) and result.info["cpu_offload"] == "model"
    assert len(loads) == 1 and pool.loads == 1  # the same weights, never loaded twice
    (held,) = pool._cache.specs()  # one entry, re-keyed to the placement that worked
    assert held.option("cpu_offload") == "model" and held.option("max_batch") == 1
    assert pool._cache._entries[held][0] is backend


class _Sized:
    def __init__(self, gb: float) -> None:
        self.memory_bytes = int(gb * GB)
        self.unloaded = False

    def unload(self) -> None:
        self.unloaded = True


def test_eviction_is_planned_before_the_load_not_after_it(tmp_path):
    """Issue 22 (3): the cache evicted only after a load, when the new model had already run
    out of memory beside the old one. With a planned size it unloads first."""
    present_at_build: list[list[str]] = []
    cache: ModelCache

    def build(spec: ModelSpec) -> _Sized:
        present_at_build.append([s.model for s in cache.specs()])
        return _Sized(30)

    cache = ModelCache("cpu", 40, build)
    first, second = ModelSpec("stub", "kontext"), ModelSpec("stub", "wan")
    cache.get(first, planned_gb=30)
    cache.get(second, planned_gb=30)
    assert present_at_build == [[], []]  # kontext was gone before wan was built
    assert cache.specs() == [second]
    assert ("evicted", first, 0.0) in cache.take_events()


def test_the_job_time_limit_scales_with_the_profile_and_its_outputs(tmp_path):
    """Issue 22 (7): a flat 600 s ignored variant counts: 4 Wan clips need far more."""
    pool = WorkerPool(
        "cpu", 0, tmp_path, job_timeout=600, profile_of=lambda spec: spec.model
    )  # not started: only its arithmetic is used
    assert pool.time_limit(ModelSpec("wan-i2v", "wan-i2v"), 4) > 3000
    assert pool.time_limit(ModelSpec("stub", "stub"), 1) == 600
    assert pool.time_limit(ModelSpec("stub", "stub"), 8) == 1200  # 600 s per 4 outputs
    assert pool.planned_gb(ModelSpec("wan-i2v", "wan-i2v")) > 40


def test_a_retired_hosted_model_holds_its_profile_at_start(harness, monkeypatch):
    """Issue 21: start-up asks the provider whether each hosted model a rule uses exists; a
    configuration fault holds that profile's jobs (input kept) instead of failing them."""
    monkeypatch.setenv("GEMINI_API_KEY", FakeGemini.key)
    harness.rule(
        "r.yaml",
        """\
        name: r
        match: {source: drop}
        prompt: "{stem} on a beach"
        steps: [{name: edit, model: nano-banana, seeds: [1]}]
        output: {sink: out}
        """,
    )
    rules = load_rules(harness.rules_dir)
    with FakeGemini() as gemini:
        retired = sorted(GEMINI_RETIRED)[0]
        profiles = {"nano-banana": dataclasses.replace(_nano_banana(gemini), model=retired)}
        held: dict[str, str] = {}
        check_hosted_models(rules, profiles, held, harness.root)
    assert list(held) == ["nano-banana"]
    assert f"does not know model {retired}" in held["nano-banana"]


def test_models_shows_licence_gating_and_price_and_hides_test_profiles(harness, capsys):
    """Issue 22 (6): an operator must see licence and gating before building on a model."""
    config = harness.config()
    assert darkroom(["models", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    kontext = next(line for line in out.splitlines() if line.strip().startswith("kontext "))
    assert "flux-1-dev-non-commercial-license" in kontext and "yes: HF_TOKEN" in kontext
    assert "edit:" in out and "explore:" in out  # grouped by role
    assert "tiny-kontext" not in out and "stub " not in out and "--all shows them" in out
    assert "$0.067/image" in out  # hosted price
    assert darkroom(["models", "--all", "--json", "--config", str(config)]) == 0
    rows = {row["profile"]: row for row in json.loads(capsys.readouterr().out)}
    assert "tiny-kontext" in rows and rows["flux-fill"]["gated"] is True
    assert rows["sd-turbo"]["licence"] == "stabilityai-ai-community"
