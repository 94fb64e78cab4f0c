"""Img2ImgBackend on the random-weight sd-tiny pipeline: shapes, order, seeds, errors."""

from __future__ import annotations

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
from backends.img2img import Img2ImgBackend
from backends.runtime import errors, imports

PROMPT = "a photo of a cat on a marble counter, café ☕"


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def close(a: Image.Image, b: Image.Image, max_diff: int = 3) -> bool:
    """Equal up to float noise: batching and thread counts change the last bits."""
    return a.size == b.size and int(np.abs(pixels(a) - pixels(b)).max()) <= max_diff


def differ(a: Image.Image, b: Image.Image, mean_diff: float = 5.0) -> bool:
    return float(np.abs(pixels(a) - pixels(b)).mean()) > mean_diff


def test_registered_for_img2img() -> None:
    assert backend_class("img2img") is Img2ImgBackend


def test_one_output_per_image_and_seed_input_major(img2img) -> None:
    square, wide = noise_image(64, 64, 1), noise_image(96, 64, 2).convert("RGBA")
    result = img2img.run(Request(images=[square, wide], prompt=PROMPT, seeds=[1, 2]))
    assert [im.size for im in result.images] == [(64, 64), (64, 64), (96, 64), (96, 64)]
    assert all(im.mode == "RGB" for im in result.images)
    assert result.seconds > 0
    assert result.info["model"] == "random:sd-tiny"
    info = result.info
    assert (info["steps"], info["strength"], info["denoising_steps"]) == (2, 0.5, 1)
    # output k is (image k // seeds, seed k % seeds): each matches that pair run alone
    alone = img2img.run(Request(images=[wide], prompt=PROMPT, seeds=[1]))
    assert close(result.images[2], alone.images[0])


def test_same_seed_same_image_and_seeds_differ(img2img) -> None:
    request = Request(images=[noise_image(64, 64)], prompt=PROMPT, seeds=[7, 8])
    first, second = img2img.run(request), img2img.run(request)
    assert close(first.images[0], second.images[0], max_diff=0)
    assert differ(first.images[0], first.images[1])


def test_a_variant_is_reproducible_alone(img2img) -> None:
    image = noise_image(64, 64, 3)
    batched = img2img.run(Request(images=[image], prompt=PROMPT, seeds=[4, 5]))
    alone = img2img.run(Request(images=[image], prompt=PROMPT, seeds=[5]))
    assert batched.info["calls"] == 1
    assert close(batched.images[1], alone.images[0])
    assert differ(batched.images[0], alone.images[0])


def test_guidance_uses_negative_prompt(img2img) -> None:
    request = Request(
        images=[noise_image(64, 64)],
        prompt=PROMPT,
        negative_prompt="blurry",
        seeds=[1],
        params={"guidance": 5.0, "steps": 4, "strength": 0.75},
    )
    result = img2img.run(request)
    assert result.info["denoising_steps"] == 3 and result.images[0].size == (64, 64)


def test_max_batch_splits_calls_without_changing_outputs(model_cache, sd_tiny_dir, img2img) -> None:
    spec = ModelSpec(task="img2img", model=str(sd_tiny_dir), options=(("max_batch", 1),))
    backend = Img2ImgBackend(spec, model_cache)
    request = Request(images=[noise_image(64, 64)], prompt=PROMPT, seeds=[4, 5])
    split = backend.run(request)  # loads on first use, from a local directory
    assert split.info["calls"] == 2
    together = img2img.run(request)
    assert all(close(a, b) for a, b in zip(split.images, together.images, strict=True))
    backend.unload()


def _request(**params) -> Request:
    return Request(images=[noise_image(64, 64)], prompt=PROMPT, seeds=[1], params=params)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            _request(strength=0.2, steps=2),
            "strength 0.2 x steps 2 gives no denoising step: raise steps to at least 5 "
            "or strength to at least 0.5",
        ),
        (_request(strength=0.3, steps=3), "raise steps to at least 4 or strength to at least 0.34"),
        (_request(strength=0), "strength 0.0 must be in (0, 1]"),
        (_request(strength=1.5), "strength 1.5 must be in (0, 1]"),
        (_request(strength="high"), "strength must be a number"),
        (_request(steps=0), "steps 0 must be at least 1"),
        (_request(steps=2.5), "steps must be a whole number"),
        (_request(guidance=-1), "guidance -1.0 must be >= 0"),
        (Request(images=[], prompt=PROMPT, seeds=[1]), "at least one input image"),
        (Request(images=[noise_image(64, 64)], prompt=PROMPT, seeds=[]), "at least one seed"),
        (Request(images=[noise_image(64, 64)], prompt=PROMPT, seeds=[-1]), "seed -1 must be"),
        (Request(images=[noise_image(60, 64)], prompt=PROMPT, seeds=[1]), "multiples of 8"),
    ],
)
def test_validate_says_what_to_change(request_: Request, message: str) -> None:
    backend = Img2ImgBackend(ModelSpec(task="img2img", model="random:sd-tiny"), Path("unused"))
    with pytest.raises(InvalidRequest) as info:
        backend.validate(request_)  # no load needed: validation never touches torch
    assert message in str(info.value)


def test_valid_requests_pass(img2img) -> None:
    img2img.validate(_request(strength=1.0, steps=1))
    img2img.validate(_request(strength=0.25, steps=4))


def test_hub_model_missing_offline_names_model_and_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    backend = Img2ImgBackend(ModelSpec(task="img2img", model="stabilityai/sd-turbo"), tmp_path)
    with pytest.raises(ModelUnavailable) as info:
        backend.load()
    message = str(info.value)
    assert "stabilityai/sd-turbo" in message
    assert str(tmp_path / "hf") in message
    assert "hf download" in message and "local directory" in message


def test_local_directory_that_is_not_a_pipeline(tmp_path) -> None:
    spec = ModelSpec(task="img2img", model=str(tmp_path))
    with pytest.raises(ModelUnavailable, match="model_index.json"):
        Img2ImgBackend(spec, tmp_path).load()


def test_unknown_random_model_names_the_known_ones(tmp_path) -> None:
    spec = ModelSpec(task="img2img", model="random:nope")
    with pytest.raises(ModelUnavailable, match="random:sd-tiny"):
        Img2ImgBackend(spec, tmp_path).load()


def test_missing_package_gives_pip_command() -> None:
    with pytest.raises(BackendMissing, match="pip install 'no_such_package_darkroom'"):
        imports.require("no_such_package_darkroom", "img2img")


def _raise(exc: BaseException) -> None:
    with errors.device_errors(ModelSpec(task="img2img", model="m", device="cuda:0"), "running m"):
        raise exc


def test_device_errors_are_translated() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(DeviceError) as oom:
        _raise(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert oom.value.out_of_memory and not oom.value.sticky
    with pytest.raises(DeviceError) as cpu_oom:
        _raise(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory"))
    assert cpu_oom.value.out_of_memory
    with pytest.raises(DeviceError) as sticky:
        _raise(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert sticky.value.sticky and not sticky.value.out_of_memory
    with pytest.raises(BackendError) as other:
        _raise(ValueError("`prompt` has to be of type `str` or `list`"))
    assert type(other.value) is BackendError
    assert "`prompt` has to be of type" in str(other.value)
