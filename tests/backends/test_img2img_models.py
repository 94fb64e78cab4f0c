"""Img2ImgBackend on SDXL and FLUX random models; runtime options (tiling, offload)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backends import InvalidRequest, ModelSpec, Request
from backends.img2img import Img2ImgBackend
from backends.random_models import CONFIG_ROOT, write_clip_tokenizer, write_t5_tokenizer
from backends.runtime import loading, placement

PROMPT = "a photo of a watch on a white background"

# Image helpers, shared with the other backend test modules.


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def close(a: Image.Image, b: Image.Image, max_diff: int = 3) -> bool:
    """Equal up to float noise: batching and thread counts change the last bits."""
    return a.size == b.size and int(np.abs(pixels(a) - pixels(b)).max()) <= max_diff


def differ(a: Image.Image, b: Image.Image, mean_diff: float = 3.0) -> bool:
    return float(np.abs(pixels(a) - pixels(b)).mean()) > mean_diff


def _backend(model_cache: Path, model: str, **options) -> Iterator[Img2ImgBackend]:
    pytest.importorskip("torch").set_num_threads(1)
    spec = ModelSpec(task="img2img", model=model, options=ModelSpec.freeze_options(options))
    backend = Img2ImgBackend(spec, model_cache)
    backend.load()
    yield backend
    backend.unload()


@pytest.fixture(scope="session")
def sdxl_tiny(model_cache: Path) -> Iterator[Img2ImgBackend]:
    yield from _backend(model_cache, "random:sdxl-tiny")


@pytest.fixture(scope="session")
def flux_tiny(model_cache: Path) -> Iterator[Img2ImgBackend]:
    yield from _backend(model_cache, "random:flux-tiny")


@pytest.mark.parametrize(
    ("fixture", "pipeline"),
    [("sdxl_tiny", "StableDiffusionXLImg2ImgPipeline"), ("flux_tiny", "FluxImg2ImgPipeline")],
)
def test_random_models_run_through_img2img(request, fixture: str, pipeline: str) -> None:
    backend = request.getfixturevalue(fixture)
    params = {"steps": 2, "strength": 0.6}
    square, wide = noise_image(64, 64, 1), noise_image(96, 64, 2)
    result = backend.run(Request(images=[square, wide], prompt=PROMPT, seeds=[1, 2], params=params))
    assert result.info["pipeline"] == pipeline
    # FLUX would resize to its default 1024 px without height/width: sizes are kept
    assert [im.size for im in result.images] == [(64, 64), (64, 64), (96, 64), (96, 64)]
    again = backend.run(Request(images=[square], prompt=PROMPT, seeds=[1, 2], params=params))
    assert close(result.images[0], again.images[0], max_diff=0)
    assert close(result.images[1], again.images[1], max_diff=0)
    assert differ(again.images[0], again.images[1], mean_diff=1.0)


def test_vae_tiling_keeps_size_at_256(model_cache: Path, sd_tiny_dir: Path) -> None:
    pytest.importorskip("torch").set_num_threads(1)
    spec = ModelSpec(
        task="img2img",
        model="random:sd-tiny",
        options=ModelSpec.freeze_options({"vae_tiling": True, "vae_slicing": True}),
    )
    backend = Img2ImgBackend(spec, model_cache)
    backend.load()
    assert backend._pipe.vae.use_tiling and backend._pipe.vae.use_slicing
    result = backend.run(Request(images=[noise_image(256, 256)], prompt=PROMPT, seeds=[3]))
    assert [im.size for im in result.images] == [(256, 256)]
    backend.unload()


def test_cpu_offload_on_cpu_keeps_the_pipeline_working(
    model_cache: Path, sd_tiny_dir: Path
) -> None:
    spec = ModelSpec(
        task="img2img",
        model="random:sd-tiny",
        options=ModelSpec.freeze_options({"cpu_offload": "model"}),
    )
    backend = Img2ImgBackend(spec, model_cache)
    result = backend.run(Request(images=[noise_image(64, 64)], prompt=PROMPT, seeds=[1]))
    assert result.images[0].size == (64, 64)
    backend.unload()


class _FakePipe:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def to(self, device):
        self.calls.append(("to", device))
        return self

    def enable_model_cpu_offload(self, device=None):
        self.calls.append(("model", device))

    def enable_sequential_cpu_offload(self, device=None):
        self.calls.append(("sequential", device))

    def set_progress_bar_config(self, **kwargs):
        pass


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_place_offloads_on_an_accelerator(mode: str) -> None:
    pipe = _FakePipe()
    spec = ModelSpec(
        task="img2img",
        model="m",
        device="cuda:1",
        options=ModelSpec.freeze_options({"cpu_offload": mode}),
    )
    assert placement.place(pipe, spec) is pipe
    assert pipe.calls == [(mode, "cuda:1")]


def test_place_without_offload_moves_to_the_device() -> None:
    pipe = _FakePipe()
    placement.place(pipe, ModelSpec(task="img2img", model="m", device="cuda:0"))
    assert pipe.calls == [("to", "cuda:0")]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cpu_offload": "gpu"}, "option cpu_offload 'gpu' must be one of model, sequential"),
        ({"vae_tiling": "yes"}, "option vae_tiling must be true or false"),
    ],
)
def test_bad_runtime_options_say_what_to_change(options, message) -> None:
    spec = ModelSpec(task="img2img", model="m", options=ModelSpec.freeze_options(options))
    with pytest.raises(InvalidRequest) as info:
        if "cpu_offload" in options:
            placement.place(_FakePipe(), spec)
        else:
            loading.configure(_FakePipe(), spec, "img2img")
    assert message in str(info.value)


def test_sdxl_config_has_the_real_shapes() -> None:
    torch = pytest.importorskip("torch")
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = CONFIG_ROOT / "sdxl"
    assert json.loads((folder / "pipeline.json").read_text())["pipeline"] == (
        "StableDiffusionXLImg2ImgPipeline"
    )

    def read(name):
        return json.loads((folder / name).read_text())

    with torch.device("meta"):  # shapes only: no memory, no time
        unet = UNet2DConditionModel.from_config(read("unet.json"))
        vae = AutoencoderKL.from_config(read("vae.json"))
        clip = CLIPTextModel(CLIPTextConfig(**read("text_encoder.json")))
        clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**read("text_encoder_2.json")))

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(unet) == 2_567_463_684
    assert count(vae) == 83_653_863
    assert count(clip) == 123_060_480
    assert count(clip_g) == 694_659_840


@pytest.mark.parametrize(
    "folder",
    [
        "sdxl-tiny/tokenizer",
        "sdxl-tiny/tokenizer_2",
        "sdxl/tokenizer",
        "sdxl/tokenizer_2",
        "sdxl-ip-tiny/tokenizer",
        "sdxl-ip-tiny/tokenizer_2",
        "flux-tiny/tokenizer",
        "upscale-tiny/tokenizer",
    ],
)
def test_committed_clip_tokenizers_are_what_the_generator_writes(
    tmp_path: Path, folder: str
) -> None:
    write_clip_tokenizer(tmp_path)
    for file in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (tmp_path / file).read_bytes() == (CONFIG_ROOT / folder / file).read_bytes(), file


def test_committed_t5_tokenizer_is_what_the_generator_writes(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    write_t5_tokenizer(tmp_path)
    for file in ("tokenizer.json", "tokenizer_config.json"):
        committed = CONFIG_ROOT / "flux-tiny" / "tokenizer_2" / file
        assert (tmp_path / file).read_bytes() == committed.read_bytes(), file
