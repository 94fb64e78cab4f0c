"""Shared fixtures. Every test runs offline: no test may reach a model hub."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# The smallest rule over a source named drop: one stub step, one seed, one job per file.
STUB_RULE = """\
name: r
match: {source: drop}
prompt: "{stem}"
steps: [{name: one, model: stub, seeds: [1]}]
output: {sink: out}
"""


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


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium through selenium (see tests/browser.py); skips without chromium."""
    from tests.browser import CHROMIUM, chromium

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)")
    yield from chromium(tmp_path_factory.mktemp("chromium-profile"))


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx (and a browser) honour *_PROXY variables: none may carry a loopback request."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
