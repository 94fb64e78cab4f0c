"""LoRA adapters from the spec's loras option, on the random-weight sd-tiny pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends import InvalidRequest, ModelSpec, ModelUnavailable, Request
from backends.img2img import Img2ImgBackend
from backends.lora import parse_loras
from tests.backends.test_img2img_models import close, differ, noise_image

PROMPT = "a photo of a cat on a marble counter"


@pytest.fixture(scope="session")
def lora_file(tmp_path_factory, sd_tiny_dir: Path) -> Path:
    pytest.importorskip("peft")
    import diffusers

    from backends.lora import write_random_lora

    pipe = diffusers.AutoPipelineForImage2Image.from_pretrained(str(sd_tiny_dir))
    return write_random_lora(pipe, tmp_path_factory.mktemp("lora"), rank=4, seed=1)


def _run(model_cache: Path, loras=None, seeds=(1,)) -> list:
    options = {"loras": loras} if loras is not None else {}
    spec = ModelSpec(
        task="img2img", model="random:sd-tiny", options=ModelSpec.freeze_options(options)
    )
    backend = Img2ImgBackend(spec, model_cache)
    result = backend.run(Request(images=[noise_image(64, 64, 4)], prompt=PROMPT, seeds=list(seeds)))
    backend.unload()
    return result.images


def test_lora_scale_changes_the_output_and_zero_matches_none(
    model_cache, lora_file, img2img
) -> None:
    plain = img2img.run(Request(images=[noise_image(64, 64, 4)], prompt=PROMPT, seeds=[1])).images
    strong = _run(model_cache, [{"path": str(lora_file), "scale": 1.0}])
    off = _run(model_cache, [{"path": str(lora_file), "scale": 0.0, "name": "style"}])
    assert differ(strong[0], plain[0])
    assert close(off[0], plain[0])


def test_lora_from_a_folder_with_weight_name(model_cache, lora_file, img2img) -> None:
    by_file = _run(model_cache, [{"path": str(lora_file), "scale": 0.7}])
    by_dir = _run(
        model_cache, [{"path": str(lora_file.parent), "weight_name": lora_file.name, "scale": 0.7}]
    )
    assert close(by_file[0], by_dir[0])


def test_missing_lora_file_names_the_path(model_cache, tmp_path, sd_tiny_dir) -> None:
    pytest.importorskip("peft")
    missing = tmp_path / "nope" / "style.safetensors"
    with pytest.raises(ModelUnavailable) as info:
        _run(model_cache, [{"path": str(missing), "scale": 1.0}])
    assert str(missing) in str(info.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("style.safetensors", "option loras must be a list"),
        ([{"scale": 1.0}], "loras[0] needs a path"),
        ([{"path": "a.safetensors", "scale": "big"}], "loras[0].scale must be a number"),
        ([{"path": "a.safetensors", "name": "my.lora"}], "loras[0].name 'my.lora'"),
        ([{"path": "a.safetensors", "strength": 1}], "unknown keys ['strength']"),
        (
            [{"path": "a.safetensors"}, {"path": "b.safetensors", "name": "lora0"}],
            "duplicate names",
        ),
    ],
)
def test_bad_lora_options_say_what_to_change(value, message) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_loras(value)
    assert message in str(info.value)


def test_lora_entries_get_defaults() -> None:
    assert parse_loras(["a.safetensors", {"path": "org/lora", "scale": 0.5, "name": "b"}]) == [
        {"path": "a.safetensors", "weight_name": None, "scale": 1.0, "name": "lora0"},
        {"path": "org/lora", "weight_name": None, "scale": 0.5, "name": "b"},
    ]
