"""Shared fixtures. Every test runs offline: no test may reach a model hub."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """Where random models are built, once: $DARKROOM_TEST_MODEL_CACHE or .pytest_cache."""
    env = os.environ.get("DARKROOM_TEST_MODEL_CACHE")
    path = Path(env) if env else REPO / ".pytest_cache" / "darkroom-models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_image(
    path: Path, size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 80, 40)
) -> Path:
    """A small image with some structure (a gradient and a block), saved by extension."""
    image = Image.new("RGB", size, color)
    for x in range(size[0]):
        for y in range(0, size[1], 4):
            image.putpixel((x, y), (x * 4 % 256, y * 4 % 256, 128))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


# The real-daemon fixture, for every folder that runs `darkroom run` as a subprocess.
from tests.e2e.conftest import daemon_factory  # noqa: E402,F401
