"""Task text2img: a prompt alone through diffusers' text-to-image pipelines (the tiny SD,
SDXL and FLUX twins, loaded through the same from_pretrained path as img2img), and the
hosted Gemini models taking a brief's prompt without an input image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backends import BACKENDS, InvalidRequest, ModelSpec, Request, backend_class
from backends.cards import CARDS
from backends.profiles import PROFILES
from backends.text2img import Text2ImgBackend

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def sd(model_cache):
    import torch

    torch.set_num_threads(1)  # output bytes depend on the thread count
    backend = Text2ImgBackend(ModelSpec(task="text2img", model="random:sd-tiny"), model_cache)
    yield backend
    backend.unload()


def test_each_seed_makes_one_image_of_the_asked_size_reproducibly(sd):
    both = sd.run(
        Request(images=[], prompt="a red bottle", seeds=[4, 5], params={"width": 48, "height": 32})
    )
    assert [im.size for im in both.images] == [(48, 32), (48, 32)]
    assert both.info["pipeline"] == "StableDiffusionPipeline" and both.info["width"] == 48
    alone = sd.run(
        Request(images=[], prompt="a red bottle", seeds=[5], params={"width": 48, "height": 32})
    )
    a, b = (np.asarray(im, dtype=np.int16) for im in (both.images[1], alone.images[0]))
    assert np.abs(a - b).mean() < 2  # variant 2 alone is variant 2 of the pair
    other = np.asarray(both.images[0], dtype=np.int16)
    assert np.abs(other - a).mean() > 1  # another seed, another image


@pytest.mark.parametrize(
    ("name", "pipeline"), [("sdxl-tiny", "StableDiffusionXL"), ("flux-tiny", "Flux")]
)
def test_sdxl_and_flux_twins_load_as_text_to_image(model_cache, name, pipeline):
    backend = Text2ImgBackend(
        ModelSpec(task="text2img", model=f"random:{name}", options=(("size_multiple", 16),)),
        model_cache,
    )
    result = backend.run(
        Request(images=[], prompt="lemons", seeds=[1], params={"width": 32, "height": 64})
    )
    assert result.images[0].size == (32, 64)
    assert result.info["pipeline"].startswith(pipeline) and "Img2Img" not in result.info["pipeline"]
    backend.unload()


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (Request(images=[Image.new("RGB", (8, 8))], prompt="p", seeds=[1]), "img2img profile"),
        (
            Request(images=[], prompt="p", seeds=[1], references=[Image.new("RGB", (8, 8))]),
            "no reference",
        ),
        (Request(images=[], prompt=" ", seeds=[1]), "needs a prompt"),
        (
            Request(images=[], prompt="p", seeds=[1], params={"width": 50}),
            "width 50 must be a multiple of 8",
        ),
        (Request(images=[], prompt="p", seeds=[]), "at least one seed"),
    ],
)
def test_requests_that_cannot_work_say_what_to_change(request_, message):
    spec = ModelSpec(task="text2img", model="random:sd-tiny")
    with pytest.raises(InvalidRequest, match=message):
        Text2ImgBackend(spec, Path(".")).validate(request_)


def test_text_to_image_profiles_are_registered_with_cards():
    assert backend_class("text2img") is Text2ImgBackend and "text2img" in BACKENDS
    for tiny in ("tiny-t2i", "tiny-sdxl-t2i", "tiny-flux-t2i"):
        assert PROFILES[tiny]["task"] == "text2img" and PROFILES[tiny]["model"].startswith(
            "random:"
        )
    for real, twin in (
        ("sd-turbo-t2i", "sd-turbo"),
        ("sdxl-turbo-t2i", "sdxl-turbo"),
        ("flux-schnell-t2i", "flux-schnell"),
    ):
        assert PROFILES[real]["model"] == PROFILES[twin]["model"] and CARDS[real] is CARDS[twin]
    assert PROFILES["nano-banana-pro"]["options"]["text_to_image"] is True


def test_gemini_takes_a_prompt_alone(monkeypatch):
    from tests.hosted.conftest import make
    from tests.hosted.fakes import FakeGemini

    monkeypatch.setenv("GEMINI_API_KEY", FakeGemini.key)
    with FakeGemini() as fake:
        backend = make(
            "gemini-image", "gemini-3-pro-image", f"{fake.url}/v1beta", max_input_images=14
        )
        result = backend.run(Request(images=[], prompt="a lemon grove at dusk", seeds=[1, 2]))
        assert len(result.images) == 2 and all(im is not None for im in result.images)
        parts = fake.requests[0]["body"]["contents"][0]["parts"]
        assert parts == [{"text": "a lemon grove at dusk"}]  # no image part
