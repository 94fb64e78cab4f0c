"""Extras checks, memory figures and cards, per-profile settings (issue 22, items 3-7)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from backends import BackendMissing, ModelSpec, Request, backend_class
from backends.cards import CARDS, PARAMS, memory_gib, timeout_hint
from backends.profiles import PROFILES
from backends.runtime import memory
from backends.runtime.extras import check_extras

LOCAL_BUILTINS = [
    n for n, p in PROFILES.items() if p["model"].count("/") == 1 and "provider" not in p
]


# -- extras (item 4) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "module", "pip"),
    [
        ("ltx-i2v", "sentencepiece", "sentencepiece>=0.2"),
        ("wan-i2v", "ftfy", "ftfy>=6"),
    ],
)
def test_a_missing_extra_is_a_configuration_error_before_loading(
    task, module, pip, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as find_spec sees a missing package
    spec = ModelSpec(task=task, model="random:does-not-exist")  # never reached
    with pytest.raises(BackendMissing) as info:
        backend_class(task)(spec, tmp_path).load()
    assert f"pip install '{pip}'" in str(info.value) and f"task {task}" in str(info.value)


def test_multi_edit_without_torchvision_says_what_to_install() -> None:
    pytest.importorskip("torch")
    if "torchvision" in sys.modules or _installed("torchvision"):
        pytest.skip("torchvision is installed here")
    with pytest.raises(BackendMissing) as info:
        backend_class("multi-edit")(
            ModelSpec(task="multi-edit", model="random:x"), Path("unused")
        ).load()
    message = str(info.value)
    import torch

    minor = int(torch.__version__.split(".")[1])
    assert f"torchvision==0.{minor + 15}.*" in message
    assert "Qwen2-VL image processor" in message and "nano-banana-pro" in message


def test_mp4_needs_imageio_ffmpeg(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(BackendMissing, match="imageio-ffmpeg>=0.5"):
        check_extras("svd", formats=["mp4"])
    check_extras("svd")  # no format: nothing to check


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# -- memory and cards (items 3, 6) ----------------------------------------------------------------


def test_parameter_counts_are_the_architectures() -> None:
    pytest.importorskip("diffusers")
    from backends.param_counts import PUBLISHED, count, ip_adapter_sdxl_params

    for name, value in PARAMS.items():
        if name in PUBLISHED:
            continue
        computed = ip_adapter_sdxl_params() if name == "ip-adapter-sdxl" else count(name)
        assert computed == value, name


def test_every_builtin_local_profile_has_a_card_that_matches() -> None:
    for name in LOCAL_BUILTINS:
        card = CARDS[name]
        assert card.model == PROFILES[name]["model"], name
        assert PROFILES[name]["vram_gb"] == round(card.peak_gib, 1), name
        assert card.offload_gib < card.peak_gib and card.licence and card.licence_url
    # The figures: FLUX.1 weights ~31.5 GiB, Wan ~44 GiB (not 24 and 40).
    assert 31 < CARDS["kontext"].weights_gib < 32 and 43.5 < CARDS["wan-i2v"].weights_gib < 44.5
    assert {n for n in LOCAL_BUILTINS if CARDS[n].gated} >= {
        "kontext",
        "kontext-inpaint",
        "flux-fill",
    }
    assert CARDS["flux-schnell"].licence == "apache-2.0" and not CARDS["flux-schnell"].gated


def test_memory_for_offload_modes_and_timeouts_scale() -> None:
    assert memory_gib("kontext") > memory_gib("kontext", True) > memory_gib("kontext", "sequential")
    assert memory_gib("tiny") is None
    assert timeout_hint("wan-i2v", 4) > timeout_hint("wan-i2v", 1) > timeout_hint("sd-turbo", 1)
    assert timeout_hint("tiny", 8) == 1200.0


def test_cache_budget_is_90_percent_of_a_cuda_device(monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    assert memory.default_cache_budget_gb("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda index: SimpleNamespace(total_memory=80 * 1024**3),
    )
    assert memory.default_cache_budget_gb("cuda:0") == pytest.approx(72.0)


def test_eviction_is_planned_before_loading() -> None:
    loaded = [("kontext", 35.4), ("sd-turbo", 3.4)]
    assert memory.plan_eviction(loaded, 49.9, 72.0) == ["kontext"]  # wan does not fit beside it
    assert memory.plan_eviction(loaded, 8.0, 72.0) == []
    assert memory.plan_eviction(loaded, 90.0, 72.0) == ["kontext", "sd-turbo"]  # alone, still loads
    assert memory.plan_eviction(loaded, None, 72.0) == []


# -- settings (item 5) ----------------------------------------------------------------------------


def test_profiles_carry_the_model_cards_settings() -> None:
    assert PROFILES["flux-schnell"]["options"]["max_sequence_length"] == 256
    assert PROFILES["wan-i2v"]["options"]["fp32_components"] == ["vae", "image_encoder"]
    for name in ("sd-turbo", "sdxl-turbo", "sdxl-ip-adapter", "sdxl-hires", "sdxl-inpaint", "svd"):
        assert PROFILES[name]["options"]["variant"] == "fp16", name
    assert PROFILES["upscale-x4"]["defaults"]["steps"] == 75
    assert PROFILES["upscale-x4"]["defaults"]["guidance"] == 9.0
    assert PROFILES["flux-fill"]["defaults"] == {"steps": 50, "guidance": 30.0}


def test_flux_img2img_passes_the_sequence_length_and_records_the_steps_run(
    model_cache: Path, monkeypatch
) -> None:
    from PIL import Image

    from backends.img2img import Img2ImgBackend

    options = ModelSpec.freeze_options({"max_sequence_length": 16})
    backend = Img2ImgBackend(
        ModelSpec(task="img2img", model="random:flux-tiny", options=options), model_cache
    )
    backend.load()
    seen: dict = {}
    real = type(backend._pipe).__call__

    def call(pipe, *args, **kwargs):
        seen.update(kwargs)
        return real(pipe, *args, **kwargs)

    monkeypatch.setattr(type(backend._pipe), "__call__", call)
    result = backend.run(
        Request(
            images=[Image.new("RGB", (32, 32))],
            prompt="a",
            seeds=[1],
            params={"steps": 4, "strength": 0.6},
        )
    )
    assert seen["max_sequence_length"] == 16
    assert result.info["denoising_steps"] == 3  # FLUX runs 3 of 4 at 0.6 (SD would run 2)
    backend.unload()


def test_fp32_components_load_in_float32(model_cache: Path) -> None:
    from backends.video import WanImageToVideoBackend

    options = ModelSpec.freeze_options({"fp32_components": ["vae", "image_encoder"]})
    backend = WanImageToVideoBackend(
        ModelSpec(task="wan-i2v", model="random:wan-tiny", dtype="bfloat16", options=options),
        model_cache,
    )
    backend.load()
    import torch

    pipe = backend._pipe
    assert pipe.vae.dtype == torch.float32 and pipe.image_encoder.dtype == torch.float32
    assert pipe.transformer.dtype == torch.bfloat16
    backend.unload()
