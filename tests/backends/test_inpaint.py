"""InpaintBackend (sd-inpaint-tiny) and FillBackend (flux-fill-tiny) on random weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backends import InvalidRequest, ModelSpec, Request, backend_class
from backends.edit import MASK_HINT
from backends.inpaint import FillBackend, InpaintBackend
from backends.profiles import PROFILES
from backends.random_models import build_random_model

PROMPT = "a red armchair in the empty corner"
MODELS = {"inpaint": "random:sd-inpaint-tiny", "fill": "random:flux-fill-tiny"}
CLASSES = {"inpaint": InpaintBackend, "fill": FillBackend}


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def box_mask(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, box)
    return mask


MASK = box_mask(64, 64, (0, 0, 32, 32))


def _req(size=(64, 64), mask=None, seeds=(1,), references=(), **params) -> Request:
    return Request(
        images=[noise_image(*size)],
        prompt=PROMPT,
        seeds=list(seeds),
        params=params,
        mask=mask,
        references=list(references),
    )


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def close(a: Image.Image, b: Image.Image, max_diff: int = 3) -> bool:
    """Equal up to float noise: batching and thread counts change the last bits."""
    return a.size == b.size and int(np.abs(pixels(a) - pixels(b)).max()) <= max_diff


def differ(a: Image.Image, b: Image.Image, mean_diff: float = 2.0) -> bool:
    return float(np.abs(pixels(a) - pixels(b)).mean()) > mean_diff


def _backend(task: str, model_cache: Path) -> Iterator[object]:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)  # output bytes depend on the thread count
    build_random_model(MODELS[task].removeprefix("random:"), model_cache)
    backend = CLASSES[task](ModelSpec(task=task, model=MODELS[task]), model_cache)
    backend.load()
    yield backend
    backend.unload()


@pytest.fixture(scope="session")
def inpaint(model_cache: Path) -> Iterator[object]:
    yield from _backend("inpaint", model_cache)


@pytest.fixture(scope="session")
def fill(model_cache: Path) -> Iterator[object]:
    yield from _backend("fill", model_cache)


TASKS = ["inpaint", "fill"]
WIDE_MASK = box_mask(96, 64, (16, 16, 64, 48))


def test_registered() -> None:
    assert backend_class("inpaint") is InpaintBackend
    assert backend_class("fill") is FillBackend


@pytest.mark.parametrize("name", ["sdxl-inpaint", "flux-fill", "tiny-inpaint", "tiny-fill"])
def test_profile_defaults_are_valid(name: str) -> None:
    profile = PROFILES[name]
    spec = ModelSpec(task=profile["task"], model=profile["model"])
    backend = backend_class(profile["task"])(spec, Path("unused"))
    backend.validate(_req(mask=MASK, **profile["defaults"]))
    if name.startswith("tiny-"):
        assert profile["model"] == MODELS[profile["task"]]


@pytest.mark.parametrize("task", TASKS)
def test_one_output_per_image_and_seed_at_input_size(
    task: str, request: pytest.FixtureRequest
) -> None:
    backend = request.getfixturevalue(task)
    images = [noise_image(96, 64, 1), noise_image(96, 64, 2).convert("RGBA")]
    result = backend.run(Request(images=images, prompt=PROMPT, seeds=[1, 2], mask=WIDE_MASK))
    # not the pipelines' default size (64 px for sd-inpaint-tiny's UNet, 1024 px for FLUX)
    assert [im.size for im in result.images] == [(96, 64)] * 4
    assert all(im.mode == "RGB" for im in result.images)
    assert result.seconds > 0 and result.info["masked"] and result.info["calls"] == 1
    assert result.info["model"] == MODELS[task]
    # output k is (image k // seeds, seed k % seeds): each matches that pair run alone. The
    # seed tells the layouts apart (seed-major would put seed 1 second), since with random
    # weights the input image changes an inpainting far less than the seed does.
    first_seed2 = backend.run(Request(images=images[:1], prompt=PROMPT, seeds=[2], mask=WIDE_MASK))
    second_seed1 = backend.run(Request(images=images[1:], prompt=PROMPT, seeds=[1], mask=WIDE_MASK))
    assert close(result.images[1], first_seed2.images[0])
    assert close(result.images[2], second_seed1.images[0])
    assert differ(result.images[1], result.images[2])


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_image_and_seeds_differ(task: str, request: pytest.FixtureRequest) -> None:
    backend = request.getfixturevalue(task)
    mask = box_mask(64, 64, (0, 0, 40, 64))
    req = Request(images=[noise_image(64, 64, 3)], prompt=PROMPT, seeds=[7, 8], mask=mask)
    first, second = backend.run(req), backend.run(req)
    assert close(first.images[0], second.images[0])
    assert close(first.images[1], second.images[1])
    assert differ(first.images[0], first.images[1])


@pytest.mark.parametrize("task", TASKS)
def test_the_mask_reaches_the_pipeline(task: str, request: pytest.FixtureRequest) -> None:
    backend = request.getfixturevalue(task)
    image = noise_image(64, 64, 4)
    top, bottom = box_mask(64, 64, (0, 0, 64, 32)), box_mask(64, 64, (0, 32, 64, 64))
    top = backend.run(Request(images=[image], prompt=PROMPT, seeds=[1], mask=top))
    bottom = backend.run(Request(images=[image], prompt=PROMPT, seeds=[1], mask=bottom))
    assert differ(top.images[0], bottom.images[0])


def test_inpaint_strength_guidance_and_batching(inpaint, model_cache: Path) -> None:
    image, mask = noise_image(64, 64, 5), box_mask(64, 64, (8, 8, 56, 56))
    req = Request(
        images=[image],
        prompt=PROMPT,
        negative_prompt="blurry",
        seeds=[1],
        params={"steps": 4, "strength": 0.75, "guidance": 5.0},
        mask=mask,
    )
    result = inpaint.run(req)
    assert result.info["denoising_steps"] == 3 and result.images[0].size == (64, 64)
    spec = ModelSpec(task="inpaint", model=MODELS["inpaint"], options=(("max_batch", 1),))
    split_backend = InpaintBackend(spec, model_cache)
    request = Request(images=[image], prompt=PROMPT, seeds=[4, 5], mask=mask)
    split = split_backend.run(request)  # loads on first use
    assert split.info["calls"] == 2
    together = inpaint.run(request)
    assert all(close(a, b) for a, b in zip(split.images, together.images, strict=True))
    split_backend.unload()


def _sized_mask(width: int, height: int) -> Image.Image:
    return box_mask(width, height, (0, 0, 8, 8))


HINT = "needs a mask (white = repaint, black = keep): " + MASK_HINT


@pytest.mark.parametrize(
    ("task", "request_", "message"),
    [
        ("inpaint", _req(), "inpaint " + HINT),
        ("fill", _req(), "fill " + HINT),
        ("inpaint", _req(mask=_sized_mask(64, 48)), "the mask is 64x48 but input image 0 is 64x64"),
        ("fill", _req(mask=_sized_mask(64, 48)), "the mask must have the input's size"),
        ("fill", _req(mask=Image.new("L", (64, 64), 40)), "the mask has no white pixel"),
        (
            "inpaint",
            _req((60, 64), mask=_sized_mask(60, 64)),
            (
                "input image 0 is 60x64: inpaint (Stable Diffusion models) needs both sides to be "
                "multiples of 8"
            ),
        ),
        (
            "fill",
            _req((72, 64), mask=_sized_mask(72, 64)),
            "input image 0 is 72x64: fill (FLUX models) needs both sides to be multiples of 16",
        ),
        (
            "inpaint",
            _req(mask=MASK, strength=0.2, steps=2),
            (
                "strength 0.2 x steps 2 gives no denoising step: raise steps to at least 5 "
                "or strength to at least 0.5"
            ),
        ),
        (
            "inpaint",
            _req(mask=MASK, strength=0.3, steps=3),
            "raise steps to at least 4 or strength to at least 0.34",
        ),
        ("inpaint", _req(mask=MASK, strength=1.5), "strength 1.5 must be in (0, 1]"),
        ("inpaint", _req(mask=MASK, strength="high"), "strength must be a number"),
        ("fill", _req(mask=MASK, steps=0), "steps 0 must be at least 1"),
        ("fill", _req(mask=MASK, guidance=float("nan")), "guidance must be a number"),
        ("fill", _req(mask=MASK, seeds=()), "at least one seed"),
        ("fill", _req(mask=MASK, references=[MASK]), "fill takes no reference images"),
        (
            "inpaint",
            Request(images=[], prompt=PROMPT, seeds=[1], mask=MASK),
            "inpaint needs at least one input image",
        ),
    ],
)
def test_validate_says_what_to_change(task: str, request_: Request, message: str) -> None:
    backend = CLASSES[task](ModelSpec(task=task, model=MODELS[task]), Path("unused"))
    with pytest.raises(InvalidRequest) as info:
        backend.validate(request_)  # no load needed: validation never touches torch
    assert message in str(info.value)
