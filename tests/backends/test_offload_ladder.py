"""The out-of-memory ladder through the real placement code (issue 22, item 2): model offload,
then sequential offload, re-placing the pipeline that ran out of memory — never a second load."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends import DeviceError, InvalidRequest, ModelSpec, Request
from backends.img2img import Img2ImgBackend
from backends.runtime import loading, placement
from backends.runtime.ladder import run_with_offload_ladder

torch = pytest.importorskip("torch")


def _cuda_spec(**options: object) -> ModelSpec:
    return ModelSpec(
        task="img2img", model="m", device="cuda:0", options=ModelSpec.freeze_options(options)
    )


def test_the_ladder_is_model_then_sequential_and_empty_on_the_cpu() -> None:
    modes = [s.option("cpu_offload") for s in placement.oom_ladder(_cuda_spec(max_batch=1))]
    assert modes == ["model", "sequential"]
    assert [
        s.option("cpu_offload") for s in placement.oom_ladder(_cuda_spec(cpu_offload=True))
    ] == ["sequential"]
    assert placement.oom_ladder(_cuda_spec(cpu_offload="sequential")) == []
    assert placement.oom_ladder(ModelSpec(task="img2img", model="m")) == []


def test_what_the_pool_passes_is_accepted() -> None:
    # The pool retries with cpu_offload: True; it used to be refused as a permanent error.
    assert placement.offload_mode(_cuda_spec(cpu_offload=True)) == "model"
    assert placement.offload_mode(_cuda_spec(cpu_offload=False)) is None
    with pytest.raises(InvalidRequest, match="must be one of model, sequential"):
        placement.offload_mode(_cuda_spec(cpu_offload="gpu"))


def test_weights_key_ignores_placement_only() -> None:
    a = _cuda_spec(max_batch=1, cpu_offload="model", vae_tiling=True)
    assert placement.weights_key(a) == placement.weights_key(_cuda_spec(vae_tiling=True))
    assert placement.weights_key(a) != placement.weights_key(_cuda_spec())
    with pytest.raises(InvalidRequest, match="load the new spec instead"):
        placement.replace(object(), _cuda_spec(), _cuda_spec(vae_tiling=True))


class _Failing:
    """Make the pipeline class's __call__ raise CUDA's out-of-memory error the first n times."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, pipe: object, n: int) -> None:
        self.left = n
        cls = type(pipe)
        real = cls.__call__

        def call(this: object, *args: object, **kwargs: object) -> object:
            if self.left > 0:
                self.left -= 1
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return real(this, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", call)


@pytest.fixture
def ladder_env(monkeypatch: pytest.MonkeyPatch, model_cache: Path, sd_tiny_dir: Path) -> dict:
    """Offload for real on this CPU-only machine, and count loads and placements."""
    monkeypatch.setattr(placement, "OFFLOAD_ON_CPU", True)
    seen: dict = {"loads": 0, "placed": [], "events": []}
    real_load, real_place = loading._load, placement.place

    def load(*args: object, **kwargs: object) -> object:
        seen["loads"] += 1
        return real_load(*args, **kwargs)

    def place(pipe: object, spec: ModelSpec) -> object:
        seen["placed"].append(placement.offload_mode(spec))
        seen["events"].append(("place", placement.offload_mode(spec)))
        return real_place(pipe, spec)

    monkeypatch.setattr(loading, "_load", load)
    monkeypatch.setattr(placement, "place", place)
    return seen


def _request() -> Request:
    from PIL import Image

    return Request(
        images=[Image.new("RGB", (64, 64), (90, 20, 160))],
        prompt="a",
        seeds=[3],
        params={"steps": 2, "strength": 0.5},
    )


def test_one_oom_moves_to_model_offload_without_a_second_load(ladder_env, model_cache, monkeypatch):
    backend = Img2ImgBackend(
        ModelSpec(task="img2img", model="random:sd-tiny", options=(("share", False),)), model_cache
    )
    backend.load()
    pipe = backend._pipe
    real_to = pipe.to

    def to(*args: object, **kwargs: object) -> object:
        ladder_env["events"].append(("to", args[0] if args else kwargs.get("device")))
        return real_to(*args, **kwargs)

    monkeypatch.setattr(pipe, "to", to)
    _Failing(monkeypatch, pipe, 1)
    result = run_with_offload_ladder(backend, _request())
    assert result.images[0].size == (64, 64)
    assert ladder_env["loads"] == 1  # the same weights, re-placed
    assert backend._pipe is pipe and backend.spec.option("cpu_offload") == "model"
    assert result.info["cpu_offload"] == "model"
    assert getattr(pipe, "_offload_device", None) is not None  # accelerate's hooks are on
    # The failing copy left the device before the offloaded placement was made.
    events = ladder_env["events"]
    assert events.index(("to", "cpu")) < events.index(("place", "model"))
    backend.unload()


def test_two_ooms_reach_sequential_offload(ladder_env, model_cache, monkeypatch) -> None:
    backend = Img2ImgBackend(
        ModelSpec(task="img2img", model="random:sd-tiny", options=(("share", False),)), model_cache
    )
    backend.load()
    pipe = backend._pipe
    calls: list[str] = []
    # accelerate's sequential hooks do not run on a CPU-only torch 2.13: record the call instead.
    monkeypatch.setattr(
        pipe, "enable_sequential_cpu_offload", lambda device=None: calls.append(str(device))
    )
    _Failing(monkeypatch, pipe, 2)
    result = run_with_offload_ladder(backend, _request())
    assert result.images and ladder_env["loads"] == 1
    assert ladder_env["placed"] == [None, "model", "sequential"]
    assert calls == ["cpu"] and backend.spec.option("cpu_offload") == "sequential"
    backend.unload()


def test_oom_on_the_last_rung_and_sticky_errors_are_raised(ladder_env, model_cache, monkeypatch):
    backend = Img2ImgBackend(
        ModelSpec(task="img2img", model="random:sd-tiny", options=(("share", False),)), model_cache
    )
    backend.load()
    monkeypatch.setattr(backend._pipe, "enable_sequential_cpu_offload", lambda device=None: None)
    _Failing(monkeypatch, backend._pipe, 5)
    with pytest.raises(DeviceError) as info:
        run_with_offload_ladder(backend, _request())
    assert info.value.out_of_memory and ladder_env["loads"] == 1
    backend.unload()
