"""Pipelines on one base model share its loaded modules (diffusers ``from_pipe``); the
``compile`` option.

Sharing: ``kontext`` then ``kontext-inpaint`` on ``random:kontext-tiny`` hold one transformer
(``is``), compute what separately loaded pipelines compute, and survive each other's unload;
SD ``img2img`` then ``inpaint`` on ``random:sd-tiny`` share the UNet the same way.

Compile: a real ``torch.compile`` of the tiny Kontext transformer takes about 45 s on this
2-core CPU build (measured: first call 44 s, later calls 0.17 s), too slow for this suite. So
these tests inject ``torch.compile`` with monkeypatch: one that records its call (the option
reaches it), one that raises when wrapping, and one whose compiled call raises a dynamo error;
both failures must log a warning and give the uncompiled outputs.
"""

from __future__ import annotations

import gc
import logging
import weakref
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backends import InvalidRequest, ModelSpec, Request
from backends.edit import KontextBackend, KontextInpaintBackend
from backends.img2img import Img2ImgBackend
from backends.inpaint import InpaintBackend
from backends.random_models import build_random_model
from backends.runtime import compiling, placement, sharing

torch = pytest.importorskip("torch")

KONTEXT = "random:kontext-tiny"
SD = "random:sd-tiny"
PROMPT = "make the sky stormy"


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def box_mask(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, box)
    return mask


def max_diff(a: Image.Image, b: Image.Image) -> int:
    assert a.size == b.size
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


IMAGE = noise_image(32, 32, 1)
MASK = box_mask(32, 32, (8, 8, 24, 24))
EDIT = Request(images=[IMAGE], prompt=PROMPT, seeds=[3])
MASKED = Request(images=[IMAGE], prompt=PROMPT, seeds=[3], mask=MASK)


@pytest.fixture(scope="module", autouse=True)
def _models(model_cache: Path) -> None:
    torch.set_num_threads(1)  # output bytes depend on the thread count
    build_random_model("kontext-tiny", model_cache)
    build_random_model("sd-tiny", model_cache)


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """An empty sharing registry per test: pipelines other tests keep loaded are not reused."""
    fresh: dict = {}
    monkeypatch.setattr(sharing, "_shared", fresh)
    return fresh


def load(cls: type, task: str, model: str, cache: Path, **options: object) -> object:
    spec = ModelSpec(task=task, model=model, options=ModelSpec.freeze_options(options))
    backend = cls(spec, cache)
    backend.load()
    return backend


# -- sharing -------------------------------------------------------------------------------


def test_kontext_pair_shares_modules_and_computes_the_same(model_cache: Path) -> None:
    kontext = load(KontextBackend, "kontext", KONTEXT, model_cache)
    inpaint = load(KontextInpaintBackend, "kontext-inpaint", KONTEXT, model_cache)
    a, b = kontext._pipe, inpaint._pipe
    assert type(b).__name__ == "FluxKontextInpaintPipeline"
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        assert getattr(a, name) is getattr(b, name), name
    assert a.scheduler is not b.scheduler  # per-call state: one each
    assert a.transformer.dtype == torch.float32  # from_pipe's dtype cast left the modules alone

    alone_edit = load(KontextBackend, "kontext", KONTEXT, model_cache, share=False)
    alone_inpaint = load(
        KontextInpaintBackend, "kontext-inpaint", KONTEXT, model_cache, share=False
    )
    assert alone_inpaint._pipe.transformer is not b.transformer
    edited, masked = kontext.run(EDIT).images[0], inpaint.run(MASKED).images[0]
    assert max_diff(edited, alone_edit.run(EDIT).images[0]) <= 2
    assert max_diff(masked, alone_inpaint.run(MASKED).images[0]) <= 2

    # Unloading one leaves the other working, with the same outputs.
    transformer = weakref.ref(a.transformer)
    del a, b
    kontext.unload()
    gc.collect()
    assert transformer() is not None
    assert max_diff(inpaint.run(MASKED).images[0], masked) <= 2
    # A third load now shares with the survivor.
    again = load(KontextBackend, "kontext", KONTEXT, model_cache)
    assert again._pipe.transformer is transformer()
    assert max_diff(again.run(EDIT).images[0], edited) <= 2
    # Once no pipeline holds them, the modules are freed.
    inpaint.unload()
    again.unload()
    gc.collect()
    assert transformer() is None


def test_sd_img2img_and_inpaint_share_the_unet(model_cache: Path) -> None:
    img2img = load(Img2ImgBackend, "img2img", SD, model_cache)
    inpaint = load(InpaintBackend, "inpaint", SD, model_cache)
    assert type(inpaint._pipe).__name__ == "StableDiffusionInpaintPipeline"
    assert inpaint._pipe.unet is img2img._pipe.unet
    assert inpaint._pipe.vae is img2img._pipe.vae
    alone = load(InpaintBackend, "inpaint", SD, model_cache, share=False)
    assert alone._pipe.unet is not inpaint._pipe.unet
    image = noise_image(32, 32, 5)
    request = Request(images=[image], prompt="tulips", seeds=[4], mask=MASK)
    assert max_diff(inpaint.run(request).images[0], alone.run(request).images[0]) <= 2
    img2img.unload()
    assert inpaint.run(request).images[0].size == (32, 32)


def test_only_loads_that_agree_on_the_weights_share(model_cache: Path) -> None:
    base = load(KontextBackend, "kontext", KONTEXT, model_cache)
    batched = load(KontextInpaintBackend, "kontext-inpaint", KONTEXT, model_cache, max_batch=2)
    sliced = load(KontextInpaintBackend, "kontext-inpaint", KONTEXT, model_cache, vae_slicing=True)
    assert batched._pipe.transformer is base._pipe.transformer  # run-time option: shares
    assert sliced._pipe.transformer is not base._pipe.transformer  # changes the VAE: its own
    location = str(base._location)
    key = sharing.share_key(base.spec, location, "kontext")
    for other in (
        ModelSpec(task="kontext", model=KONTEXT, dtype="bfloat16"),
        ModelSpec(task="kontext", model=KONTEXT, revision="abc"),
        ModelSpec(task="kontext", model=KONTEXT, options=(("compile", True),)),
        ModelSpec(task="kontext", model=KONTEXT, options=(("loras", ("x.safetensors",)),)),
    ):
        assert sharing.share_key(other, location, "kontext") != key
    ip = ModelSpec(task="ip-adapter", model=SD)
    assert sharing.share_key(ip, location, "ip-adapter") is None  # loads an adapter into the UNet
    sequential = ModelSpec(task="kontext", model=KONTEXT, options=(("cpu_offload", "sequential"),))
    assert sharing.share_key(sequential, location, "kontext") is None
    with pytest.raises(InvalidRequest, match="share must be true or false"):
        sharing.share_key(
            ModelSpec(task="kontext", model=KONTEXT, options=(("share", "no"),)),
            location,
            "kontext",
        )


def test_a_failing_from_pipe_loads_again(model_cache: Path, monkeypatch, caplog) -> None:
    import diffusers

    base = load(KontextBackend, "kontext", KONTEXT, model_cache)

    def broken(cls, pipeline, **kwargs):
        raise ValueError("injected")

    monkeypatch.setattr(diffusers.FluxKontextInpaintPipeline, "from_pipe", classmethod(broken))
    with caplog.at_level(logging.DEBUG, logger="darkroom.backends"):
        inpaint = load(KontextInpaintBackend, "kontext-inpaint", KONTEXT, model_cache)
    assert inpaint._pipe.transformer is not base._pipe.transformer
    assert "from_pipe failed; loading again" in caplog.text and "injected" in caplog.text
    assert inpaint.run(MASKED).images[0].size == (32, 32)


def test_a_from_pipe_that_drops_a_module_loads_again(model_cache: Path, monkeypatch) -> None:
    import copy

    import diffusers

    base = load(KontextBackend, "kontext", KONTEXT, model_cache)
    real = diffusers.FluxKontextInpaintPipeline.from_pipe.__func__

    def swaps_the_vae(cls, pipeline, **kwargs):
        pipe = real(cls, pipeline, **kwargs)
        pipe.vae = copy.deepcopy(pipe.vae)  # as if a type mismatch had left it behind
        return pipe

    monkeypatch.setattr(
        diffusers.FluxKontextInpaintPipeline, "from_pipe", classmethod(swaps_the_vae)
    )
    inpaint = load(KontextInpaintBackend, "kontext-inpaint", KONTEXT, model_cache)
    assert inpaint._pipe.transformer is not base._pipe.transformer


def test_edit_and_video_backends_place_through_torch(model_cache: Path, monkeypatch) -> None:
    from backends.video import LTXImageToVideoBackend

    build_random_model("ltx-tiny", model_cache)
    placed: list[str] = []
    real = placement.place

    def spy(pipe, spec):
        placed.append(spec.task)
        return real(pipe, spec)

    monkeypatch.setattr(placement, "place", spy)
    load(KontextBackend, "kontext", KONTEXT, model_cache, cpu_offload="model")
    load(LTXImageToVideoBackend, "ltx-i2v", "random:ltx-tiny", model_cache)
    assert placed == ["kontext", "ltx-i2v"]


# -- compile -------------------------------------------------------------------------------


def test_compile_option_values() -> None:
    def mode(value: object) -> str | None:
        return compiling.compile_mode(
            ModelSpec(task="kontext", model=KONTEXT, options=(("compile", value),))
        )

    assert mode(False) is None and mode(True) == "default"
    assert mode("reduce-overhead") == "reduce-overhead"
    assert (
        compiling.compile_mode(ModelSpec(task="kontext", model=KONTEXT)) is None
    )  # off by default
    with pytest.raises(InvalidRequest, match="option compile 'fast' must be"):
        mode("fast")


def test_compile_wraps_the_denoiser(model_cache: Path, monkeypatch) -> None:
    seen: list[dict] = []

    def fake_compile(fn, **kwargs):
        seen.append(kwargs)
        return fn  # "compiled": the same function

    monkeypatch.setattr(torch, "compile", fake_compile)
    plain = load(KontextBackend, "kontext", KONTEXT, model_cache, share=False)
    compiled = load(KontextBackend, "kontext", KONTEXT, model_cache, compile="reduce-overhead")
    assert seen == [{"mode": "reduce-overhead"}]
    assert compiled._pipe.transformer._compiled_call_impl is not None
    assert plain._pipe.transformer._compiled_call_impl is None
    assert max_diff(compiled.run(EDIT).images[0], plain.run(EDIT).images[0]) <= 2
    # A task sharing the compiled transformer gets it compiled, without compiling again.
    inpaint = load(
        KontextInpaintBackend, "kontext-inpaint", KONTEXT, model_cache, compile="reduce-overhead"
    )
    assert inpaint._pipe.transformer is compiled._pipe.transformer and len(seen) == 1


def test_compile_failing_to_wrap_runs_uncompiled(model_cache: Path, monkeypatch, caplog) -> None:
    def broken(fn, **kwargs):
        raise RuntimeError("injected: no compiler")

    monkeypatch.setattr(torch, "compile", broken)
    plain = load(KontextBackend, "kontext", KONTEXT, model_cache, share=False)
    with caplog.at_level(logging.WARNING, logger="darkroom.backends"):
        backend = load(KontextBackend, "kontext", KONTEXT, model_cache, compile=True)
    assert "running uncompiled" in caplog.text and "injected: no compiler" in caplog.text
    assert backend._pipe.transformer._compiled_call_impl is None
    assert max_diff(backend.run(EDIT).images[0], plain.run(EDIT).images[0]) <= 2


def test_compile_failing_on_a_call_runs_uncompiled(model_cache: Path, monkeypatch, caplog):
    from torch._dynamo.exc import InternalTorchDynamoError

    calls = []

    def fails_when_called(fn, **kwargs):
        def compiled(*args, **kw):
            calls.append(1)
            raise InternalTorchDynamoError("injected: inductor failed")

        return compiled

    monkeypatch.setattr(torch, "compile", fails_when_called)
    plain = load(KontextBackend, "kontext", KONTEXT, model_cache, share=False)
    backend = load(KontextBackend, "kontext", KONTEXT, model_cache, compile=True)
    with caplog.at_level(logging.WARNING, logger="darkroom.backends"):
        first = backend.run(EDIT).images[0]
    assert "compiling random:kontext-tiny transformer failed; running uncompiled" in caplog.text
    assert max_diff(first, plain.run(EDIT).images[0]) <= 2
    backend.run(EDIT)
    assert len(calls) == 1  # switched off for good after the failure


def test_a_model_error_under_compile_is_not_swallowed(model_cache: Path, monkeypatch) -> None:
    def compile_(fn, **kwargs):
        def compiled(*args, **kw):
            raise RuntimeError("a real model error")

        return compiled

    monkeypatch.setattr(torch, "compile", compile_)
    backend = load(KontextBackend, "kontext", KONTEXT, model_cache, compile=True)
    with pytest.raises(Exception, match="a real model error"):
        backend.run(EDIT)
    assert backend._pipe.transformer._compiled_call_impl is not None  # still compiled
