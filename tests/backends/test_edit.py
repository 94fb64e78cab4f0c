"""KontextBackend and KontextInpaintBackend on the random-weight kontext-tiny pipeline."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backends import (
    BackendError,
    BackendMissing,
    DeviceError,
    InvalidRequest,
    ModelSpec,
    ModelUnavailable,
    Request,
    backend_class,
)
from backends.edit import MASK_HINT, KontextBackend, KontextInpaintBackend
from backends.profiles import PROFILES
from backends.random_models import build_random_model

REPO = Path(__file__).resolve().parents[2]
PROMPT = "make the sky stormy, café ☕"


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def box_mask(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, box)
    return mask


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def close(a: Image.Image, b: Image.Image, max_diff: int = 3) -> bool:
    """Equal up to float noise: batching and thread counts change the last bits."""
    return a.size == b.size and int(np.abs(pixels(a) - pixels(b)).max()) <= max_diff


def differ(a: Image.Image, b: Image.Image, mean_diff: float = 2.0) -> bool:
    return float(np.abs(pixels(a) - pixels(b)).mean()) > mean_diff


@pytest.fixture(scope="session")
def kontext_dir(model_cache: Path) -> Path:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)  # output bytes depend on the thread count
    return build_random_model("kontext-tiny", model_cache)


@pytest.fixture(scope="session")
def kontext(model_cache: Path, kontext_dir: Path) -> Iterator[KontextBackend]:
    backend = KontextBackend(ModelSpec(task="kontext", model="random:kontext-tiny"), model_cache)
    backend.load()
    yield backend
    backend.unload()


@pytest.fixture(scope="session")
def kontext_inpaint(model_cache: Path, kontext_dir: Path) -> Iterator[KontextInpaintBackend]:
    spec = ModelSpec(task="kontext-inpaint", model="random:kontext-tiny")
    backend = KontextInpaintBackend(spec, model_cache)
    backend.load()
    yield backend
    backend.unload()


MASK = box_mask(64, 64, (16, 16, 48, 48))


def test_registered() -> None:
    assert backend_class("kontext") is KontextBackend
    assert backend_class("kontext-inpaint") is KontextInpaintBackend


@pytest.mark.parametrize(
    "name", ["kontext", "kontext-inpaint", "edit", "tiny-kontext", "tiny-kontext-inpaint"]
)
def test_profile_defaults_are_valid(name: str) -> None:
    profile = PROFILES[name]
    spec = ModelSpec(task=profile["task"], model=profile["model"])
    backend = backend_class(profile["task"])(spec, Path("unused"))
    mask = MASK if profile["task"] == "kontext-inpaint" else None
    params = profile["defaults"]
    backend.validate(_req(mask=mask, **params))
    if name.startswith("tiny-"):
        assert profile["model"] == "random:kontext-tiny"


def test_kontext_tiny_loads_like_real_weights(kontext, kontext_inpaint) -> None:
    pipe = kontext._pipe
    assert type(pipe).__name__ == "FluxKontextPipeline"
    assert type(kontext_inpaint._pipe).__name__ == "FluxKontextInpaintPipeline"  # same folder
    assert pipe.vae_scale_factor * 2 == 16  # as the real model: sizes are multiples of 16
    assert (pipe.tokenizer.model_max_length, pipe.tokenizer_2.model_max_length) == (77, 512)
    models = (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2)
    assert not any(m.training for m in models)


def test_kontext_one_output_per_image_and_seed_input_major(kontext) -> None:
    square, wide = noise_image(64, 64, 1), noise_image(96, 64, 2).convert("RGBA")
    result = kontext.run(Request(images=[square, wide], prompt=PROMPT, seeds=[1, 2]))
    assert [im.size for im in result.images] == [(64, 64), (64, 64), (96, 64), (96, 64)]
    assert all(im.mode == "RGB" for im in result.images)
    assert result.seconds > 0
    info = result.info
    assert info["pipeline"] == "FluxKontextPipeline"
    assert (info["steps"], info["guidance"], info["calls"]) == (2, 2.5, 2)
    # output k is (image k // seeds, seed k % seeds): each matches that pair run alone
    alone = kontext.run(Request(images=[wide], prompt=PROMPT, seeds=[2]))
    assert close(result.images[3], alone.images[0])
    assert differ(result.images[2], result.images[3])


def test_kontext_keeps_a_non_1024_size(kontext) -> None:
    result = kontext.run(Request(images=[noise_image(48, 80)], prompt=PROMPT, seeds=[3]))
    assert result.images[0].size == (48, 80)
    sized = kontext.run(_req((48, 80), seeds=(3,), width=80, height=48))
    assert sized.images[0].size == (80, 48)


@pytest.mark.parametrize("fixture", ["kontext", "kontext_inpaint"])
def test_same_seed_same_image_and_seeds_differ(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    backend = request.getfixturevalue(fixture)
    mask = MASK if fixture == "kontext_inpaint" else None
    req = Request(images=[noise_image(64, 64, 4)], prompt=PROMPT, seeds=[7, 8], mask=mask)
    first, second = backend.run(req), backend.run(req)
    assert close(first.images[0], second.images[0])
    assert close(first.images[1], second.images[1])
    assert differ(first.images[0], first.images[1])


def test_kontext_inpaint_outputs_and_mask_reaches_the_pipeline(kontext_inpaint) -> None:
    images = [noise_image(96, 64, 5), noise_image(96, 64, 6)]
    left, right = box_mask(96, 64, (0, 0, 48, 64)), box_mask(96, 64, (48, 0, 96, 64))
    a = kontext_inpaint.run(Request(images=images, prompt=PROMPT, seeds=[1, 2], mask=left))
    assert [im.size for im in a.images] == [(96, 64)] * 4
    assert a.info["pipeline"] == "FluxKontextInpaintPipeline"
    assert (a.info["masked"], a.info["strength"]) == (True, 1.0)
    alone = kontext_inpaint.run(Request(images=images[1:], prompt=PROMPT, seeds=[1], mask=left))
    assert close(a.images[2], alone.images[0])
    b = kontext_inpaint.run(Request(images=images, prompt=PROMPT, seeds=[1, 2], mask=right))
    assert differ(a.images[0], b.images[0])


def test_kontext_inpaint_strength_and_reference(kontext_inpaint) -> None:
    image = noise_image(64, 64, 7)
    full = kontext_inpaint.run(Request(images=[image], prompt=PROMPT, seeds=[1], mask=MASK))
    half = kontext_inpaint.run(
        Request(images=[image], prompt=PROMPT, seeds=[1], mask=MASK, params={"strength": 0.4})
    )
    assert half.info["denoising_steps"] == 1 and full.info["denoising_steps"] == 2
    assert differ(full.images[0], half.images[0])
    reference = noise_image(32, 48, 9)  # any size: the pipeline encodes it at its own size
    ref = kontext_inpaint.run(
        Request(images=[image], prompt=PROMPT, seeds=[1], mask=MASK, references=[reference])
    )
    assert ref.info["references"] == 1 and ref.images[0].size == (64, 64)
    # the reference reaches the transformer; one random layer barely attends to it
    assert (pixels(full.images[0]) != pixels(ref.images[0])).any()


def test_device_errors_are_translated(kontext, monkeypatch) -> None:
    def oom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(kontext._pipe.transformer, "forward", oom)
    with pytest.raises(DeviceError) as info:
        kontext.run(Request(images=[noise_image(64, 64)], prompt=PROMPT, seeds=[1]))
    assert info.value.out_of_memory and "max_batch" in str(info.value)

    def broken(*args, **kwargs):
        raise ValueError("shapes do not match")

    monkeypatch.setattr(kontext._pipe.transformer, "forward", broken)
    with pytest.raises(BackendError, match="shapes do not match") as other:
        kontext.run(Request(images=[noise_image(64, 64)], prompt=PROMPT, seeds=[1]))
    assert type(other.value) is BackendError


def test_hub_model_missing_offline_names_model_and_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    spec = ModelSpec(task="kontext-inpaint", model=PROFILES["kontext-inpaint"]["model"])
    with pytest.raises(ModelUnavailable) as info:
        KontextInpaintBackend(spec, tmp_path).load()
    assert "black-forest-labs/FLUX.1-Kontext-dev" in str(info.value)
    assert "hf download" in str(info.value)


def test_diffusers_without_the_pipeline_says_how_to_upgrade(kontext_dir, model_cache, monkeypatch):
    monkeypatch.setattr(KontextBackend, "pipeline_class", "NoSuchKontextPipeline")
    spec = ModelSpec(task="kontext", model="random:kontext-tiny")
    with pytest.raises(BackendMissing, match="NoSuchKontextPipeline.*pip install -U"):
        KontextBackend(spec, model_cache).load()


def _req(size=(64, 64), mask=None, seeds=(1,), references=(), **params) -> Request:
    return Request(
        images=[noise_image(*size)],
        prompt=PROMPT,
        seeds=list(seeds),
        params=params,
        mask=mask,
        references=list(references),
    )


def _wide_mask() -> Image.Image:
    return box_mask(72, 64, (0, 0, 8, 8))


KI, K = KontextInpaintBackend, KontextBackend


@pytest.mark.parametrize(
    ("cls", "request_", "message"),
    [
        (KI, _req(), "kontext-inpaint needs a mask (white = repaint, black = keep): " + MASK_HINT),
        (KI, _req(mask=box_mask(32, 32, (0, 0, 8, 8))), "the mask is 32x32 but input image 0"),
        (KI, _req(mask=Image.new("L", (64, 64), 0)), "the mask has no white pixel"),
        (KI, _req((72, 64), mask=_wide_mask()), "multiples of 16"),
        (KI, _req(mask=MASK, strength=0), "strength 0 must be in (0, 1]"),
        (KI, _req(mask=MASK, references=[MASK] * 2), "at most 1 reference"),
        (
            K,
            _req((72, 64)),
            (
                "input image 0 is 72x64: kontext (FLUX models) needs both sides to "
                "be multiples of 16 (the caller sizes inputs: round the rule's size "
                "down to a multiple of 16, e.g. 64x64)"
            ),
        ),
        (K, _req((8, 64)), "multiples of 16"),
        (K, _req(mask=MASK), "use task kontext-inpaint"),
        (K, _req(width=64), "give both width and height"),
        (K, _req(width=70, height=64), "width 70 must be a positive multiple of 16"),
        (K, _req(steps=0), "steps 0 must be at least 1"),
        (K, _req(steps=2.5), "steps must be a whole number"),
        (K, _req(guidance=-1), "guidance -1 must be >= 0"),
        (K, _req(seeds=()), "at least one seed"),
        (K, _req(seeds=(-1,)), "seed -1 must be"),
        (K, Request(images=[], prompt=PROMPT, seeds=[1]), "at least one input image"),
        (K, _req(references=[noise_image(64, 64)]), "kontext takes no reference images"),
    ],
)
def test_validate_says_what_to_change(cls, request_: Request, message: str) -> None:
    backend = cls(ModelSpec(task=cls.task, model="random:kontext-tiny"), Path("unused"))
    with pytest.raises(InvalidRequest) as info:
        backend.validate(request_)  # no load needed: validation never touches torch
    assert message in str(info.value)


def test_module_does_not_import_torch() -> None:
    code = (
        "import sys, backends.edit, backends.inpaint\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "heavy = sorted(loaded & {'torch', 'diffusers', 'transformers'})\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
