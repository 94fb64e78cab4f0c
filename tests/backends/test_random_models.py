"""The random: model source: config folders -> saved pipelines, cached by config digest."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from backends import ModelUnavailable
from backends.random_models import (
    CONFIG_ROOT,
    build_random_model,
    config_digest,
    known_names,
    publish,
    resolve_model_dir,
)


def test_known_names() -> None:
    assert {"sd-tiny", "sd15"} <= set(known_names())


def test_unknown_name_lists_known(tmp_path) -> None:
    with pytest.raises(ModelUnavailable) as info:
        build_random_model("sd-huge", tmp_path)
    assert "random:sd-huge" in str(info.value) and "random:sd-tiny" in str(info.value)
    with pytest.raises(ModelUnavailable):
        build_random_model("../sd-tiny", tmp_path)


def test_built_dir_loads_like_real_weights(sd_tiny_dir: Path) -> None:
    import diffusers

    assert sd_tiny_dir.name == f"sd-tiny-{config_digest('sd-tiny')}"
    pipe = diffusers.AutoPipelineForImage2Image.from_pretrained(str(sd_tiny_dir))
    assert type(pipe).__name__ == "StableDiffusionImg2ImgPipeline"
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert pipe.tokenizer.model_max_length == 77
    assert not pipe.unet.training and not pipe.text_encoder.training
    # the local tokenizer covers the byte alphabet: any prompt tokenizes without unknowns
    ids = pipe.tokenizer("Große Ähre 🍞 — x²", truncation=True).input_ids
    assert pipe.tokenizer.unk_token_id not in ids[1:-1]


def test_building_twice_returns_the_same_dir(model_cache: Path, sd_tiny_dir: Path) -> None:
    before = (sd_tiny_dir / "model_index.json").stat().st_mtime_ns
    assert build_random_model("sd-tiny", model_cache) == sd_tiny_dir
    assert (sd_tiny_dir / "model_index.json").stat().st_mtime_ns == before


def test_changed_config_builds_a_new_dir_once(tmp_path: Path, sd_tiny_dir: Path) -> None:
    root = tmp_path / "configs"
    shutil.copytree(CONFIG_ROOT / "sd-tiny", root / "sd-tiny")
    assert config_digest("sd-tiny", root) == config_digest("sd-tiny")
    scheduler = root / "sd-tiny" / "scheduler.json"
    scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "beta_end": 0.013}))
    digest = config_digest("sd-tiny", root)
    assert digest != config_digest("sd-tiny")

    cache = tmp_path / "cache"
    with ThreadPoolExecutor(2) as pool:  # concurrent builders agree on one directory
        built = list(pool.map(lambda _: build_random_model("sd-tiny", cache, root), range(2)))
    assert built[0] == built[1] == cache / "random" / f"sd-tiny-{digest}"
    assert sorted(p.name for p in (cache / "random").iterdir()) == [f"sd-tiny-{digest}"]
    config = json.loads((built[0] / "scheduler" / "scheduler_config.json").read_text())
    assert config["beta_end"] == 0.013
    # same seed, same config shapes: the weights equal those of the committed config
    a = (built[0] / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    b = (sd_tiny_dir / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert a == b


def test_publish_keeps_the_first_build(tmp_path: Path) -> None:
    target = tmp_path / "model"
    first, second = tmp_path / ".a.tmp", tmp_path / ".b.tmp"
    for folder in (first, second):
        folder.mkdir()
        (folder / "who").write_text(folder.name)
    assert publish(first, target) == target
    assert publish(second, target) == target  # lost the race: discarded, no error
    assert (target / "who").read_text() == ".a.tmp"
    assert not first.exists() and not second.exists()


def test_resolve_model_dir(tmp_path: Path, model_cache: Path, sd_tiny_dir: Path) -> None:
    assert resolve_model_dir("random:sd-tiny", model_cache) == str(sd_tiny_dir)
    assert resolve_model_dir(str(tmp_path), model_cache) == str(tmp_path)
    assert resolve_model_dir("stabilityai/sd-turbo", model_cache) == "stabilityai/sd-turbo"


def test_sd15_config_has_the_real_shapes() -> None:
    torch = pytest.importorskip("torch")
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = CONFIG_ROOT / "sd15"
    spec = json.loads((folder / "pipeline.json").read_text())
    assert spec["pipeline"] == "StableDiffusionImg2ImgPipeline"
    read = lambda name: json.loads((folder / name).read_text())  # noqa: E731
    with torch.device("meta"):  # shapes only: no memory, no time
        unet = UNet2DConditionModel.from_config(read("unet.json"))
        vae = AutoencoderKL.from_config(read("vae.json"))
        clip = CLIPTextModel(CLIPTextConfig(**read("text_encoder.json")))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(unet) == 859_520_964
    assert count(vae) == 83_653_863
    assert count(clip) == 123_060_480
    tokenizer = json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text())
    assert tokenizer["model_max_length"] == 77


def test_a_broken_config_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "configs"
    shutil.copytree(CONFIG_ROOT / "sd-tiny", root / "sd-tiny")
    (root / "sd-tiny" / "unet.json").write_text("{not json")
    with pytest.raises(ModelUnavailable, match="could not build random:sd-tiny"):
        build_random_model("sd-tiny", tmp_path / "cache", root)
    assert list((tmp_path / "cache" / "random").iterdir()) == []  # no partial build left


@pytest.mark.parametrize("name", ["sd-tiny", "sd15"])
def test_committed_tokenizer_is_what_the_generator_writes(tmp_path: Path, name: str) -> None:
    from backends.random_models import write_clip_tokenizer

    write_clip_tokenizer(tmp_path)
    committed = CONFIG_ROOT / name / "tokenizer"
    for file in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (tmp_path / file).read_bytes() == (committed / file).read_bytes(), file
    assert "\n\n" not in (committed / "merges.txt").read_text()  # a blank line breaks CLIP
