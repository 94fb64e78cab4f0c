"""Fixtures for the backend tests: one random-weight sd-tiny, built once and cached across runs."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub

from collections.abc import Iterator
from pathlib import Path

import pytest

from backends import ModelSpec
from backends.random_models import build_random_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """Where random models are built: DARKROOM_TEST_MODEL_CACHE, else under .pytest_cache."""
    env = os.environ.get("DARKROOM_TEST_MODEL_CACHE")
    path = Path(env) if env else REPO / ".pytest_cache" / "darkroom-models"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def sd_tiny_dir(model_cache: Path) -> Path:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)  # output bytes depend on the thread count
    return build_random_model("sd-tiny", model_cache)


@pytest.fixture(scope="session")
def img2img(model_cache: Path, sd_tiny_dir: Path) -> Iterator[object]:
    from backends.img2img import Img2ImgBackend

    backend = Img2ImgBackend(ModelSpec(task="img2img", model="random:sd-tiny"), model_cache)
    backend.load()
    yield backend
    backend.unload()
