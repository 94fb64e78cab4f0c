"""The image-to-video backends on random-weight svd-tiny, ltx-tiny and wan-tiny.

Shapes and order, seeds, batching, the messages of invalid requests, and the committed random
configs (their T5 tokenizer files are write_t5_tokenizer's output).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from backends import BackendMissing, InvalidRequest, ModelSpec, Request, backend_class
from backends.base import Video
from backends.profiles import PROFILES
from backends.random_models import CONFIG_ROOT, build_random_model, write_t5_tokenizer
from backends.video import LTXImageToVideoBackend, SVDBackend, WanImageToVideoBackend

PROMPT = "the product slowly turns on a marble counter, café ☕"
# task -> (random model, the smallest quick params, an input size the model accepts)
TINY = {
    "svd": ("svd-tiny", {"frames": 4, "fps": 7, "steps": 2}, (32, 32)),
    "ltx-i2v": ("ltx-tiny", {"frames": 9, "fps": 24, "steps": 2, "guidance": 1.0}, (32, 32)),
    "wan-i2v": ("wan-tiny", {"frames": 5, "fps": 16, "steps": 2, "guidance": 1.0}, (32, 32)),
}
TASKS = list(TINY)


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def clip_pixels(video: Video) -> np.ndarray:
    return np.stack([np.asarray(frame, dtype=np.int16) for frame in video.frames])


def close(a: Video, b: Video, max_diff: int = 3) -> bool:
    """Equal up to float noise: batching and thread counts change the last bits."""
    pa, pb = clip_pixels(a), clip_pixels(b)
    return pa.shape == pb.shape and int(np.abs(pa - pb).max()) <= max_diff


def differ(a: Video, b: Video, mean_diff: float = 5.0) -> bool:
    return float(np.abs(clip_pixels(a) - clip_pixels(b)).mean()) > mean_diff


@pytest.fixture(scope="session")
def video_backends(model_cache: Path) -> Iterator[Callable[[str], Any]]:
    """One loaded backend per task (built on first use), shared by every test."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    torch.set_num_threads(1)  # output bytes depend on the thread count
    loaded: dict[str, Any] = {}

    def get(task: str) -> Any:
        if task not in loaded:
            spec = ModelSpec(task=task, model=f"random:{TINY[task][0]}")
            backend = backend_class(task)(spec, model_cache)
            backend.load()
            loaded[task] = backend
        return loaded[task]

    yield get
    for backend in loaded.values():
        backend.unload()


def request(task: str, images: list[Image.Image], seeds: list[int], **params: Any) -> Request:
    return Request(images=images, prompt=PROMPT, seeds=seeds, params={**TINY[task][1], **params})


def test_registered() -> None:
    assert backend_class("svd") is SVDBackend
    assert backend_class("ltx-i2v") is LTXImageToVideoBackend
    assert backend_class("wan-i2v") is WanImageToVideoBackend


@pytest.mark.parametrize("task", TASKS)
def test_one_clip_per_image_and_seed_input_major(video_backends, task: str) -> None:
    backend = video_backends(task)
    _, params, (w, h) = TINY[task]
    wide = noise_image(2 * w, h, 2).convert("RGBA")
    result = backend.run(request(task, [noise_image(w, h, 1), wide], [1, 2]))
    assert result.videos is not None and len(result.videos) == len(result.images) == 4
    assert [v.frames[0].size for v in result.videos] == [(w, h)] * 2 + [(2 * w, h)] * 2
    for video, poster in zip(result.videos, result.images, strict=True):
        assert len(video.frames) == params["frames"]
        assert video.fps == params["fps"]
        assert all(f.mode == "RGB" and f.size == video.frames[0].size for f in video.frames)
        assert poster is video.frames[0]
    assert result.seconds > 0
    assert result.info["model"] == f"random:{TINY[task][0]}"
    assert (result.info["frames"], result.info["steps"], result.info["calls"]) == (
        params["frames"],
        2,
        4,
    )
    # clip k is (image k // seeds, seed k % seeds): it matches that pair run alone
    alone = backend.run(request(task, [wide], [1]))
    assert close(result.videos[2], alone.videos[0])


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_clip_and_seeds_differ(video_backends, task: str) -> None:
    backend = video_backends(task)
    image = noise_image(*TINY[task][2], seed=3)
    first = backend.run(request(task, [image], [7, 8]))
    second = backend.run(request(task, [image], [7]))
    assert close(first.videos[0], second.videos[0], max_diff=0)
    assert differ(first.videos[0], first.videos[1])
    # the clip moves: its frames are not one picture repeated
    frames = clip_pixels(first.videos[0])
    assert float(np.abs(frames[0] - frames[-1]).mean()) > 1.0


@pytest.mark.parametrize("task", ["svd", "ltx-i2v"])
def test_batched_clips_match_clips_alone(model_cache: Path, video_backends, task: str) -> None:
    video_backends(task)  # threads pinned, model built
    options = ModelSpec.freeze_options({"max_batch": 4})
    backend = backend_class(task)(
        ModelSpec(task=task, model=f"random:{TINY[task][0]}", options=options), model_cache
    )
    a, b = noise_image(*TINY[task][2], seed=4), noise_image(*TINY[task][2], seed=5)
    batched = backend.run(request(task, [a, b], [4, 5]))
    assert batched.info["calls"] == 1
    alone = video_backends(task).run(request(task, [b], [5]))
    assert close(batched.videos[3], alone.videos[0])
    backend.unload()


def test_wan_runs_one_clip_per_call(model_cache: Path, video_backends) -> None:
    video_backends("wan-i2v")
    options = ModelSpec.freeze_options({"max_batch": 4})
    backend = WanImageToVideoBackend(
        ModelSpec(task="wan-i2v", model="random:wan-tiny", options=options), model_cache
    )
    image = noise_image(32, 32)
    result = backend.run(request("wan-i2v", [image], [1, 2], negative_prompt="blurry"))
    assert result.info["calls"] == 2 and len(result.videos) == 2
    backend.unload()


# -- invalid requests: the message says what to change --------------------------------------


def unloaded(task: str, tmp_path: Path) -> Any:
    """validate() needs no model: the daemon checks requests before a worker loads one."""
    return backend_class(task)(ModelSpec(task=task, model=f"random:{TINY[task][0]}"), tmp_path)


@pytest.mark.parametrize(
    ("task", "frames", "message"),
    [
        ("ltx-i2v", 10, "frames 10 does not fit LTX-Video: it needs 8k+1 frames (9, 17, 25, ...)"),
        ("ltx-i2v", 10, "use 9 or 17"),
        ("ltx-i2v", 4, "use 9"),
        ("ltx-i2v", 48, "use 41 or 49"),
        ("wan-i2v", 6, "does not fit Wan image-to-video: it needs 4k+1 frames (5, 9, 13, ...)"),
        ("wan-i2v", 6, "use 5 or 9"),
        ("wan-i2v", 1, "use 5"),
        ("svd", 1, "frames 1 must be at least 2"),
        ("svd", 2.5, "whole number"),
    ],
)  # fmt: skip
def test_invalid_frame_counts(tmp_path: Path, task: str, frames: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        unloaded(task, tmp_path).validate(request(task, [noise_image(32, 32)], [1], frames=frames))
    assert message in str(info.value)


@pytest.mark.parametrize(("task", "size", "multiple", "hint"), [
    ("svd", (36, 32), 8, "32x32"),
    ("ltx-i2v", (48, 96), 32, "32x96"),
    ("wan-i2v", (40, 24), 16, "32x16"),
])  # fmt: skip
def test_sizes_must_fit_the_model(tmp_path: Path, task: str, size, multiple: int, hint) -> None:
    with pytest.raises(InvalidRequest) as info:
        unloaded(task, tmp_path).validate(request(task, [noise_image(*size)], [1]))
    assert f"{size[0]}x{size[1]}" in str(info.value)
    assert f"multiples of {multiple}" in str(info.value) and hint in str(info.value)


@pytest.mark.parametrize(
    ("task", "change", "message"),
    [
        ("svd", {"images": []}, "at least one input image"),
        ("ltx-i2v", {"seeds": []}, "at least one seed"),
        ("wan-i2v", {"seeds": [-1]}, "seed -1 must be an integer"),
        ("svd", {"params": {"fps": 0}}, "fps 0 must be above 0"),
        ("ltx-i2v", {"params": {"steps": 0}}, "steps 0 must be at least 1"),
        ("wan-i2v", {"params": {"guidance": -1}}, "guidance -1 must be >= 0"),
        ("svd", {"params": {"motion_bucket_id": 5000}}, "motion_bucket_id 5000"),
        ("svd", {"params": {"decode_chunk_size": 0}}, "decode_chunk_size 0"),
        ("svd", {"params": {"min_guidance": 4.0}}, "min_guidance <= max_guidance"),
        ("ltx-i2v", {"params": {"frames": "nine"}}, "frames must be a number, not 'nine'"),
    ],
)
def test_invalid_requests(tmp_path: Path, task: str, change: dict, message: str) -> None:
    fields = {"images": [noise_image(32, 32)], "prompt": PROMPT, "seeds": [1], "params": {}}
    fields.update(change)
    with pytest.raises(InvalidRequest) as info:
        unloaded(task, tmp_path).validate(Request(**fields))
    assert message in str(info.value)


def test_params_default_and_whole_floats(tmp_path: Path) -> None:
    backend = unloaded("svd", tmp_path)
    p = backend.params(Request(images=[], prompt="", seeds=[], params={"frames": 25.0}))
    assert p["frames"] == 25 and isinstance(p["frames"], int)
    assert (p["fps"], p["motion_bucket_id"], p["decode_chunk_size"]) == (7, 127, None)


def test_wan_without_ftfy_names_the_package(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ftfy", None)  # what `import ftfy` sees when it is missing
    with pytest.raises(BackendMissing) as info:
        unloaded("wan-i2v", tmp_path).load()
    assert "pip install 'ftfy>=6'" in str(info.value)


@pytest.mark.parametrize(
    "name", ["tiny-svd", "tiny-ltx", "tiny-wan", "svd", "ltx-video", "wan-i2v", "animate"]
)
def test_profile_defaults_are_valid(tmp_path: Path, name: str) -> None:
    profile = PROFILES[name]
    backend = backend_class(profile["task"])(
        ModelSpec(task=profile["task"], model=profile["model"]), tmp_path
    )
    side = backend.SIZE_MULTIPLE * 2
    backend.validate(
        Request(images=[noise_image(side, side)], prompt="", seeds=[0], params=profile["defaults"])
    )


# -- the committed random configs -------------------------------------------------------------


@pytest.mark.parametrize("name", ["ltx-tiny", "wan-tiny"])
def test_committed_t5_tokenizer_follows_its_recipe(tmp_path: Path, name: str) -> None:
    pytest.importorskip("tokenizers")
    folder = CONFIG_ROOT / name / "tokenizer"
    write_t5_tokenizer(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in tmp_path.iterdir())
    for path in tmp_path.iterdir():
        assert (folder / path.name).read_text() == path.read_text(), (
            f"regenerate with backends.random_models.write_t5_tokenizer({folder})"
        )
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    text_encoder = json.loads((CONFIG_ROOT / name / "text_encoder.json").read_text())
    assert len(vocab) <= text_encoder["vocab_size"]


@pytest.mark.parametrize(
    ("name", "pipeline"),
    [
        ("svd-tiny", "StableVideoDiffusionPipeline"),
        ("ltx-tiny", "LTXImageToVideoPipeline"),
        ("wan-tiny", "WanImageToVideoPipeline"),
    ],
)
def test_built_dir_loads_like_real_weights(
    model_cache: Path, video_backends, name: str, pipeline: str
) -> None:
    import diffusers
    import torch

    pipe = diffusers.DiffusionPipeline.from_pretrained(str(build_random_model(name, model_cache)))
    assert type(pipe).__name__ == pipeline
    modules = [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]
    assert modules and not any(m.training for m in modules)
    if name == "svd-tiny":  # the pipeline resizes to 224 for CLIP whatever the config says
        assert pipe.image_encoder.config.image_size == 224
    else:
        ids = pipe.tokenizer(PROMPT, padding="max_length", max_length=32).input_ids
        assert len(ids) == 32 and ids[0] != pipe.tokenizer.unk_token_id
        assert pipe.tokenizer.eos_token_id == 1 and pipe.tokenizer.pad_token_id == 0
