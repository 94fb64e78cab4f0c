"""Input sizes each task accepts, and :func:`fit_size`: the size the caller resizes an input to.

Every local model works on latents: the VAE divides each side by 8 and transformers then cut
the latent into 2x2 patches (FLUX, Qwen, Wan: 16 px) or LTX's 32x32-pixel latent cells. An
input whose sides are not multiples of that fails or is silently resized by the pipeline, so
the caller (the daemon's runner) fits every input *before* the request:

    rule = size_rule(profile.task, profile.options)
    width, height = fit_size(image.width, image.height, rule, max_side=profile.max_side)
    image = ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)  # cover + centre crop

:func:`fit_size` only ever floors to the multiple (never rounds up past a limit), so the fitted
size is always valid, never zero, and within one multiple of the scaled input on each side;
covering then crops at most ``multiple - 1`` pixels from each side, so nothing is distorted.
Video models trained at one resolution (SVD at 1024x576, Wan 480p at 832x480) are brought to
that *area* whatever the input's aspect ratio (``target_area``: scaled up or down), then
``max_side`` applies. Explicit sizes from a rule are checked with :func:`size_problem`.

No torch here: the daemon imports this module to plan and to validate rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class SizeRule:
    """What a task's model accepts. ``min_side`` is rounded up to a multiple of ``multiple``."""

    multiple: int = 8
    min_side: int = 8
    max_area: int | None = None  # scale down (never up) until width * height fits
    target_area: int | None = None  # scale up or down to about this area (video models)
    why: str = ""  # for messages: what the multiple comes from

    def __post_init__(self) -> None:
        if self.multiple < 1:
            raise ValueError(f"SizeRule.multiple must be >= 1, not {self.multiple}")
        smallest = max(self.multiple, math.ceil(self.min_side / self.multiple) * self.multiple)
        object.__setattr__(self, "min_side", smallest)


_SD = "the VAE works in 8x8 pixel cells"
_PATCH16 = "the VAE's 8x8 cells, then 2x2 patches"

# Task -> rule. A literal table: the daemon reads it without loading a model.
SIZE_RULES: dict[str, SizeRule] = {
    # img2img covers SD/SDXL (8) and FLUX.1 img2img, whose profiles set size_multiple: 16
    # (fitting SD photos to 16 would crop up to 15 px for nothing).
    "img2img": SizeRule(8, why=_SD + "; FLUX profiles set size_multiple: 16 (" + _PATCH16 + ")"),
    "ip-adapter": SizeRule(8, why=_SD),
    "multi-edit": SizeRule(16, max_area=1024 * 1024, why=_PATCH16),
    "upscale": SizeRule(8, why=_SD),
    "kontext": SizeRule(16, why=_PATCH16),
    "kontext-inpaint": SizeRule(16, why=_PATCH16),
    "inpaint": SizeRule(8, why=_SD),
    "fill": SizeRule(16, why=_PATCH16),
    # SVD was trained at 1024x576: other sizes of about that area work, far smaller ones blur.
    "svd": SizeRule(8, min_side=64, target_area=1024 * 576, why=_SD),
    # LTX-Video: latents of 32x32-pixel cells; the model card: best under 720x1280.
    "ltx-i2v": SizeRule(32, min_side=32, max_area=720 * 1280, why="the VAE's 32x32 cells"),
    # Wan 2.1 I2V 480P: 832x480's area at the input's aspect ratio, as the model card does.
    "wan-i2v": SizeRule(16, min_side=16, target_area=832 * 480, why=_PATCH16),
    "rendition": SizeRule(1, min_side=1, why="no model"),
    "stub": SizeRule(8, why="the daemon's tests"),
}
# Hosted models resize on the provider's side; any size goes.
ANY_SIZE = SizeRule(1, min_side=1, why="the provider resizes")
# Profile options that change a task's rule (e.g. a FLUX model under a task that says 8).
RULE_OPTIONS = ("size_multiple", "min_side", "max_area", "target_area")


def size_rule(task: str, options: Mapping[str, Any] | None = None) -> SizeRule:
    """The rule for ``task``, with a profile's ``size_multiple``/``min_side``/``max_area``/
    ``target_area`` options applied. Unknown (hosted) tasks take any size."""
    rule = SIZE_RULES.get(task, ANY_SIZE)
    options = options or {}
    changes: dict[str, Any] = {}
    for option in RULE_OPTIONS:
        if options.get(option) is not None:
            field = "multiple" if option == "size_multiple" else option
            value = options[option]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"option {option} must be a whole number >= 1, not {value!r}")
            changes[field] = value
    return replace(rule, **changes) if changes else rule


def fit_size(
    width: int, height: int, rule: SizeRule, max_side: int | None = None
) -> tuple[int, int]:
    """The size to resize a ``width`` x ``height`` input to: valid for ``rule``, never zero.

    Scale (to ``target_area``, or down to ``max_area``), then down to ``max_side``, then floor
    each side to the rule's multiple, at least ``min_side``. Only ``target_area`` scales up.
    When ``max_side`` is below the rule's ``min_side`` the rule wins (a valid size beats a small
    one). The aspect ratio is kept within one multiple, except where ``min_side`` lifts a side.
    """
    if width < 1 or height < 1:
        raise ValueError(f"cannot fit a {width}x{height} image: both sides must be >= 1")
    scale = 1.0
    if rule.target_area:
        scale = math.sqrt(rule.target_area / (width * height))
    elif rule.max_area and width * height > rule.max_area:
        scale = math.sqrt(rule.max_area / (width * height))
    if max_side and max(width, height) * scale > max_side:
        scale = max_side / max(width, height)
    m = rule.multiple
    # The 1e-9 keeps 1024 * (576 / 576) from flooring to 1023.99... and losing a whole multiple.
    w = max(rule.min_side, int(width * scale + 1e-9) // m * m)
    h = max(rule.min_side, int(height * scale + 1e-9) // m * m)
    return w, h


def size_problem(width: int, height: int, rule: SizeRule, who: str = "this model") -> str | None:
    """Why an explicit ``width`` x ``height`` is invalid for ``rule`` (with a valid one), or None."""
    m = rule.multiple
    bad = [f"{name} {v}" for name, v in (("width", width), ("height", height)) if v % m]
    small = [
        f"{name} {v}" for name, v in (("width", width), ("height", height)) if v < rule.min_side
    ]
    if not bad and not small and not (rule.max_area and width * height > rule.max_area):
        return None
    fixed = fit_size(max(1, width), max(1, height), replace(rule, target_area=None))
    if bad:
        why = f" ({rule.why})" if rule.why else ""
        return (
            f"{' and '.join(bad)} must be a multiple of {m} for {who}{why}: "
            f"use {fixed[0]}x{fixed[1]}"
        )
    if small:
        return f"{' and '.join(small)} is below {who}'s minimum of {rule.min_side}"
    return (
        f"{width}x{height} is over {who}'s limit of {rule.max_area} pixels: "
        f"use {fixed[0]}x{fixed[1]}"
    )
