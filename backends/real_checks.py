"""The real-size checks for the GPU script: each built-in local profile on ordinary photo sizes.

``REAL_SIZE_CHECKS`` lists ``(profile, (width, height))`` input sizes; the GPU check (bench/)
fits each input with :func:`backends.sizes.fit_size` under the profile's rule and ``max_side``,
runs one output at batch 1 and records the peak memory (``torch.cuda.max_memory_allocated``)
against :data:`backends.cards.CARDS`' computed figure. Heaviest last, so a short device budget
covers the most profiles.
"""

from __future__ import annotations

PHOTO_3_2 = (6000, 4000)  # a DSLR photo, landscape
PHOTO_2_3 = (4000, 6000)  # portrait
PHOTO_4_5 = (1080, 1350)  # a feed portrait
VIDEO_16_9 = (1921, 1081)  # 16:9, odd sides

REAL_SIZE_CHECKS: list[tuple[str, tuple[int, int]]] = [
    ("sd-turbo", PHOTO_3_2),
    ("sdxl-turbo", PHOTO_4_5),
    ("upscale-x4", PHOTO_2_3),
    ("sdxl-inpaint", PHOTO_4_5),
    ("sdxl-ip-adapter", PHOTO_3_2),
    ("svd", VIDEO_16_9),
    ("sdxl-hires", PHOTO_3_2),
    ("ltx-video", VIDEO_16_9),
    ("flux-schnell", PHOTO_3_2),
    ("kontext", PHOTO_2_3),
    ("kontext-inpaint", PHOTO_4_5),
    ("flux-fill", PHOTO_3_2),
    ("wan-i2v", PHOTO_2_3),
    ("qwen-edit-plus", PHOTO_4_5),
]


def fitted_checks() -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
    """``(profile, input size, fitted size)`` for every check, with the built-in profiles."""
    from backends.profiles import PROFILES
    from backends.sizes import fit_size, size_rule

    out = []
    for name, (width, height) in REAL_SIZE_CHECKS:
        profile = PROFILES[name]
        rule = size_rule(profile["task"], profile["options"])
        out.append((name, (width, height), fit_size(width, height, rule, profile["max_side"])))
    return out
