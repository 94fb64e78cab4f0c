"""Sizes: fit_size gives every task a valid size for ordinary photos, and each local task's tiny
twin runs on such odd-size inputs once fitted (issue 22, item 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageOps

from backends import ModelSpec, Request, backend_class
from backends.profiles import PROFILES
from backends.sizes import SIZE_RULES, SizeRule, fit_size, size_problem, size_rule

ASPECTS = {
    "3:2": (6001, 4001),
    "2:3": (3999, 6003),
    "4:5": (1081, 1349),
    "16:9": (1921, 1079),
    "odd": (97, 65),
    "tiny": (3, 7),
}
LOCAL_TASKS = sorted(t for t in SIZE_RULES if t not in ("rendition", "stub"))
TINY = [
    "tiny",
    "tiny-sdxl",
    "tiny-flux",
    "tiny-ip-adapter",
    "tiny-upscale",
    "tiny-kontext",
    "tiny-kontext-inpaint",
    "tiny-inpaint",
    "tiny-fill",
    "tiny-svd",
    "tiny-ltx",
    "tiny-wan",
]


@pytest.mark.parametrize("task", sorted(SIZE_RULES))
@pytest.mark.parametrize("aspect", sorted(ASPECTS))
@pytest.mark.parametrize("max_side", [None, 64, 512, 1024, 2048])
def test_fit_size_is_always_valid(task: str, aspect: str, max_side: int | None) -> None:
    rule = SIZE_RULES[task]
    width, height = fit_size(*ASPECTS[aspect], rule, max_side)
    assert width % rule.multiple == 0 and height % rule.multiple == 0
    assert min(width, height) >= rule.min_side > 0
    assert size_problem(width, height, rule) is None
    if max_side and max_side >= rule.min_side:
        assert max(width, height) <= max_side


@pytest.mark.parametrize("aspect", ["3:2", "2:3", "4:5", "16:9"])
def test_fit_size_keeps_the_aspect_within_one_multiple(aspect: str) -> None:
    w0, h0 = ASPECTS[aspect]
    rule = SIZE_RULES["kontext"]
    width, height = fit_size(w0, h0, rule, 1024)
    scale = 1024 / max(w0, h0)
    assert w0 * scale - 16 < width <= w0 * scale + 1e-6
    assert h0 * scale - 16 < height <= h0 * scale + 1e-6


def test_the_issue_photo_fits_flux_and_ltx() -> None:
    # 6000x4000 became 1024x680 under the old multiple-of-8 fit: invalid for FLUX (16), LTX (32).
    assert fit_size(6000, 4000, SIZE_RULES["kontext"], 1024) == (1024, 672)
    assert fit_size(6000, 4000, SIZE_RULES["ltx-i2v"], 1024) == (1024, 672)


def test_video_models_are_brought_to_their_trained_area() -> None:
    assert fit_size(1920, 1080, SIZE_RULES["svd"], 1024) == (1024, 576)  # SVD's 1024x576
    assert fit_size(640, 360, SIZE_RULES["svd"], 1024) == (1024, 576)  # scaled up too
    width, height = fit_size(4000, 6000, SIZE_RULES["wan-i2v"], 832)
    assert (width, height) == (512, 768) and width * height <= 832 * 480


def test_profile_options_change_the_rule_and_bad_values_say_so() -> None:
    assert size_rule("img2img", {"size_multiple": 64}).multiple == 64
    assert size_rule("gemini-image").multiple == 1  # hosted: the provider resizes
    with pytest.raises(ValueError, match="size_multiple must be a whole number"):
        size_rule("img2img", {"size_multiple": 0})
    assert SizeRule(32, min_side=40).min_side == 64  # rounded up to the multiple


def test_size_problem_names_a_valid_size() -> None:
    message = size_problem(1000, 680, SIZE_RULES["kontext"], "kontext")
    assert message is not None and "multiple of 16" in message and "use 992x672" in message
    assert size_problem(1024, 672, SIZE_RULES["kontext"]) is None


@pytest.mark.parametrize("name", TINY)
def test_every_task_rule_passes_its_backends_own_check(name: str) -> None:
    """A fitted size must never be refused by the backend (no quarantine for our own choice)."""
    from backends.checks import check_request

    profile = PROFILES[name]
    cls = backend_class(profile["task"])
    multiple = getattr(cls, "size_multiple", None) or getattr(cls, "SIZE_MULTIPLE", None) or 8
    assert size_rule(profile["task"], profile["options"]).multiple % multiple == 0
    for w0, h0 in ASPECTS.values():
        size = fit_size(w0, h0, size_rule(profile["task"], profile["options"]), profile["max_side"])
        check_request(
            name,
            Request(images=[Image.new("RGB", size)], prompt="", seeds=[0]),
            size_multiple=multiple,
        )


def _spec(name: str) -> ModelSpec:
    p = PROFILES[name]
    return ModelSpec(
        task=p["task"],
        model=p["model"],
        dtype=p["dtype"],
        options=ModelSpec.freeze_options(p["options"]),
    )


@pytest.mark.parametrize("name", TINY)
def test_tiny_twins_run_on_odd_photos_once_fitted(name: str, model_cache: Path) -> None:
    import torch

    torch.set_num_threads(1)
    profile = PROFILES[name]
    rule = size_rule(profile["task"], profile["options"])
    backend = backend_class(profile["task"])(_spec(name), model_cache)
    try:
        for aspect in ("3:2", "2:3", "4:5", "16:9"):
            w0, h0 = ASPECTS[aspect]
            # Small stand-ins with the photos' odd sides and aspect ratios (decoding 6000 px is slow).
            source = Image.new("RGB", (w0 // 10 | 1, h0 // 10 | 1), (120, 80, 40))
            size = fit_size(*source.size, rule, profile["max_side"])
            image = ImageOps.fit(source, size, Image.Resampling.LANCZOS)
            mask = Image.new("L", size, 255) if "inpaint" in name or "fill" in name else None
            refs = [image] if name == "tiny-ip-adapter" else []
            request = Request(
                images=[image],
                prompt="a photo",
                seeds=[1],
                params=dict(profile["defaults"]),
                mask=mask,
                references=refs,
            )
            result = backend.run(request)
            expected = (size[0] * 4, size[1] * 4) if profile["task"] == "upscale" else size
            assert result.images[0].size == expected, (aspect, size)
    finally:
        backend.unload()
