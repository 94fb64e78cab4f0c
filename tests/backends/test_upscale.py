"""UpscaleBackend on the random-weight x4 upscaler."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backends import InvalidRequest, ModelSpec, Request, backend_class
from backends.upscale import UpscaleBackend
from tests.backends.test_img2img_models import close, differ, noise_image

PARAMS = {"steps": 2, "guidance": 1.0}


@pytest.fixture(scope="session")
def upscaler(model_cache: Path) -> Iterator[UpscaleBackend]:
    pytest.importorskip("torch").set_num_threads(1)
    backend = UpscaleBackend(ModelSpec(task="upscale", model="random:upscale-tiny"), model_cache)
    backend.load()
    yield backend
    backend.unload()


def test_registered() -> None:
    assert backend_class("upscale") is UpscaleBackend


def test_outputs_are_4x_per_image_and_seed(upscaler) -> None:
    square, wide = noise_image(32, 32, 1), noise_image(48, 32, 2)
    result = upscaler.run(
        Request(images=[square, wide], prompt="sharp", seeds=[1, 2], params=PARAMS)
    )
    assert [im.size for im in result.images] == [(128, 128), (128, 128), (192, 128), (192, 128)]
    assert result.info["pipeline"] == "StableDiffusionUpscalePipeline" and result.info["scale"] == 4
    alone = upscaler.run(Request(images=[square], prompt="sharp", seeds=[2], params=PARAMS))
    assert close(result.images[1], alone.images[0])
    assert differ(result.images[0], result.images[1], mean_diff=1.0)


def test_noise_level_reaches_the_model(upscaler) -> None:
    image = noise_image(32, 32, 3)
    low = upscaler.run(
        Request(images=[image], prompt="x", seeds=[1], params={**PARAMS, "noise_level": 0})
    )
    high = upscaler.run(
        Request(images=[image], prompt="x", seeds=[1], params={**PARAMS, "noise_level": 300})
    )
    assert differ(low.images[0], high.images[0], mean_diff=1.0)


def _request(size=(32, 32), **params) -> Request:
    return Request(images=[noise_image(*size)], prompt="x", seeds=[1], params={**PARAMS, **params})


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (_request(steps=0), "steps 0 must be a whole number >= 1"),
        (_request(guidance=-1), "guidance -1 must be >= 0"),
        (_request(noise_level=400), "noise_level 400 must be a whole number in [0, 350]"),
        (_request(noise_level="lots"), "noise_level must be a number"),
        (_request(size=(36, 32)), "multiples of 8"),
        (_request(size=(640, 320)), "x4 would be 2560x1280, over 2048 px"),
    ],
)
def test_validate_says_what_to_change(request_, message) -> None:
    backend = UpscaleBackend(ModelSpec(task="upscale", model="random:upscale-tiny"), Path("unused"))
    with pytest.raises(InvalidRequest) as info:
        backend.validate(request_)
    assert message in str(info.value)


def test_tiling_lifts_the_size_limit() -> None:
    spec = ModelSpec(
        task="upscale", model="m", options=ModelSpec.freeze_options({"vae_tiling": True})
    )
    UpscaleBackend(spec, Path("unused")).validate(_request(size=(640, 320)))
