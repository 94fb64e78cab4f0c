"""ip-adapter on the random SDXL + IP-Adapter model; multi-edit on a fake Qwen pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from backends import InvalidRequest, ModelSpec, ModelUnavailable, Request, backend_class
from backends.profiles import PROFILES
from backends.reference import IPAdapterBackend, MultiImageEditBackend
from tests.backends.test_img2img_models import close, differ, noise_image

PROMPT = "portrait of a woman with red hair, studio light"
PARAMS = {"steps": 2, "strength": 0.6, "guidance": 0.0}


def _spec(task: str, profile: str, **extra) -> ModelSpec:
    p = PROFILES[profile]
    return ModelSpec(
        task=task,
        model=p["model"],
        dtype=p["dtype"],
        options=ModelSpec.freeze_options({**p["options"], **extra}),
    )


@pytest.fixture(scope="session")
def ip_adapter(model_cache: Path) -> Iterator[IPAdapterBackend]:
    pytest.importorskip("torch").set_num_threads(1)
    backend = IPAdapterBackend(_spec("ip-adapter", "tiny-ip-adapter"), model_cache)
    backend.load()  # load_ip_adapter from the built folder, as from h94/IP-Adapter
    yield backend
    backend.unload()


def _request(references, seeds=(1, 2), **params) -> Request:
    return Request(
        images=[noise_image(64, 64, 1)],
        prompt=PROMPT,
        seeds=list(seeds),
        references=references,
        params={**PARAMS, **params},
    )


def test_registered() -> None:
    assert backend_class("ip-adapter") is IPAdapterBackend
    assert backend_class("multi-edit") is MultiImageEditBackend


def test_ip_adapter_outputs_and_references_reach_the_model(ip_adapter) -> None:
    red, blue = Image.new("RGB", (48, 48), (230, 20, 20)), Image.new("RGB", (80, 64), (20, 20, 230))
    first = ip_adapter.run(_request([red]))
    assert [im.size for im in first.images] == [(64, 64), (64, 64)]
    assert first.info["references"] == 1 and first.info["ip_adapter_scale"] == 0.6
    assert first.info["pipeline"] == "StableDiffusionXLImg2ImgPipeline"
    again = ip_adapter.run(_request([red]))
    assert close(first.images[1], again.images[1], max_diff=0)
    other = ip_adapter.run(_request([blue]))
    assert differ(first.images[0], other.images[0])
    both = ip_adapter.run(_request([red, blue]))  # several references, one adapter
    assert differ(first.images[0], both.images[0])
    # scale 0: the references are ignored
    off_red = ip_adapter.run(_request([red], seeds=[1], ip_adapter_scale=0.0))
    off_blue = ip_adapter.run(_request([blue], seeds=[1], ip_adapter_scale=0.0))
    assert close(off_red.images[0], off_blue.images[0])


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (_request([]), "add references: to the step"),
        (_request([noise_image(32, 32)], ip_adapter_scale=-1), "ip_adapter_scale -1 must be"),
        (_request([noise_image(32, 32)], ip_adapter_scale="high"), "ip_adapter_scale 'high'"),
        (_request([noise_image(32, 32)] * 5), "at most 4 reference images, got 5"),
        (_request([noise_image(32, 32)], strength=0.2), "gives no denoising step"),
    ],
)
def test_ip_adapter_validate_says_what_to_change(request_, message) -> None:
    backend = IPAdapterBackend(_spec("ip-adapter", "tiny-ip-adapter"), Path("unused"))
    with pytest.raises(InvalidRequest) as info:
        backend.validate(request_)
    assert message in str(info.value)


def test_ip_adapter_option_is_required(model_cache, tmp_path) -> None:
    pytest.importorskip("torch")
    backend = IPAdapterBackend(ModelSpec(task="ip-adapter", model="random:sdxl-tiny"), model_cache)
    with pytest.raises(ModelUnavailable, match="needs the option ip_adapter"):
        backend.load()


# --- multi-edit: the tiny Qwen-Image-Edit-Plus cannot be built here (see the module's note) ---


class FakeQwenEditPlus:
    """Records calls; the output is the mean colour of the images it was given, per seed."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        images = kwargs["image"]
        colours = [im.resize((1, 1)).getpixel((0, 0)) for im in images]
        mean = tuple(sum(c[i] for c in colours) // len(colours) for i in range(3))
        seed = kwargs["generator"].initial_seed()
        out = Image.new("RGB", (kwargs["width"], kwargs["height"]), mean)
        out.putpixel((0, 0), (seed % 256, 0, 0))
        return SimpleNamespace(images=[out])


@pytest.fixture
def multi_edit() -> MultiImageEditBackend:
    pytest.importorskip("torch")
    backend = MultiImageEditBackend(_spec("multi-edit", "tiny-multi-edit"), Path("unused"))
    backend._pipe = FakeQwenEditPlus()  # the seam: what load() would have put there
    return backend


def test_multi_edit_passes_input_then_references(multi_edit) -> None:
    a, b = noise_image(64, 48, 1), noise_image(64, 48, 2)
    red, blue = Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (40, 32), (0, 0, 255))
    result = multi_edit.run(
        Request(
            images=[a, b],
            prompt="put the bag on the table",
            seeds=[7, 8],
            references=[red, blue],
            params={"steps": 2, "guidance": 4.0},
        )
    )
    assert [im.size for im in result.images] == [(64, 48)] * 4
    calls = multi_edit._pipe.calls
    assert len(calls) == 4  # one prompt per call: the pipeline does not batch
    assert [c["image"][1:] for c in calls] == [[red, blue]] * 4
    assert (
        calls[0]["image"][0].tobytes() == a.tobytes()
        and calls[2]["image"][0].tobytes() == b.tobytes()
    )
    assert [c["generator"].initial_seed() for c in calls] == [7, 8, 7, 8]
    assert calls[0]["true_cfg_scale"] == 4.0 and calls[0]["negative_prompt"] == " "
    assert calls[0]["num_inference_steps"] == 2
    # references reach the model: other references, another result
    other = multi_edit.run(Request(images=[a], prompt="x", seeds=[7], references=[blue]))
    assert differ(result.images[0], other.images[0])
    assert result.info["references"] == 2 and result.info["calls"] == 4


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            Request(
                images=[noise_image(64, 64)],
                prompt="x",
                seeds=[1],
                references=[noise_image(16, 16)] * 3,
            ),
            "at most 3 images per edit (the input plus 2 references), got the input plus 3",
        ),
        (Request(images=[noise_image(60, 64)], prompt="x", seeds=[1]), "multiples of 16"),
        (
            Request(images=[noise_image(64, 64)], prompt="x", seeds=[1], params={"steps": 0}),
            "steps 0 must be at least 1",
        ),
        (
            Request(images=[noise_image(64, 64)], prompt="x", seeds=[1], params={"guidance": -2}),
            "guidance -2 must be a number >= 0",
        ),
        (Request(images=[], prompt="x", seeds=[1]), "at least one input image"),
        (Request(images=[noise_image(64, 64)], prompt="x", seeds=[]), "at least one seed"),
    ],
)
def test_multi_edit_validate_says_what_to_change(request_, message) -> None:
    backend = MultiImageEditBackend(_spec("multi-edit", "tiny-multi-edit"), Path("unused"))
    with pytest.raises(InvalidRequest) as info:
        backend.validate(request_)
    assert message in str(info.value)
