"""Tasks ``kontext`` and ``kontext-inpaint``: instruction edits with FLUX.1 Kontext.

- ``kontext`` (``diffusers.FluxKontextPipeline``): "make the sky stormy" edits the whole image
  and keeps what the instruction does not mention. It takes no mask.
- ``kontext-inpaint`` (``diffusers.FluxKontextInpaintPipeline``, the same weights): the edit is
  limited to ``request.mask`` (white = change, black = keep); one ``request.references`` image,
  if given, is the pipeline's ``image_reference`` (what to paint into the masked area).

Request params (all optional):

- ``steps``     num_inference_steps >= 1, default 2 (28 for the real model: see the profiles);
- ``guidance``  guidance_scale >= 0, default 2.5: FLUX's embedded (distilled) guidance, so the
  request's ``negative_prompt`` is not used;
- ``strength``  (0, 1], default 1.0, ``kontext-inpaint`` only: how far the masked area may move;
- ``width`` + ``height`` (``kontext`` only, both or neither): the output size, a multiple of 16;
  by default each output has its input's size.

The pipelines' own default resizes every input to about 1024x1024 (``max_area``,
``_auto_resize``); these backends turn that off, so a 64x64 input gives a 64x64 output.

This module also holds :class:`EditPipelineBackend`, what every edit backend shares (loading,
validation of seeds, sizes, mask and references, batching, error translation);
``backends.inpaint`` builds ``inpaint`` and ``fill`` on it. Every input image is run with every
seed; outputs are input-major. Each output has its own ``torch.Generator``, so a variant is
reproducible alone (within floating-point tolerance: batching changes the summation order).

Spec options: ``max_batch`` (default 8) outputs per pipeline call; ``variant`` (e.g. ``fp16``)
for hub weights; ``generator_device`` (default ``cpu``: the same seed gives the same noise on
every device); ``loras``, ``vae_tiling``, ``vae_slicing``, ``compile``, ``share`` (see
:mod:`backends.runtime`) and ``cpu_offload`` (see :mod:`backends.runtime.placement`). ``kontext`` and
``kontext-inpaint`` on the same model share one loaded transformer, VAE and text encoders.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any, ClassVar

from backends.base import InvalidRequest, Request, Result
from backends.checks import check_request
from backends.pipeline import PipelineBackend
from backends.runtime.imports import require

if TYPE_CHECKING:
    from PIL.Image import Image

MAX_SEED = 2**64
FLUX_SIZE_MULTIPLE = 16  # VAE 8x, then 2x2 patches
SD_SIZE_MULTIPLE = 8
MASK_HINT = "add mask: to the step — a sidecar photo.mask.png, the image's alpha, or a path"


class EditPipelineBackend(PipelineBackend):
    """A diffusers pipeline that edits input images, optionally under a mask.

    Subclasses set the class variables and :meth:`call_kwargs` (what their pipeline needs beyond
    prompt, image, steps, guidance and generators).
    """

    task: ClassVar[str]
    pipeline_class: ClassVar[str]  # an attribute of the diffusers package
    family: ClassVar[str]  # in messages: "FLUX", "Stable Diffusion"
    size_multiple: ClassVar[int]
    defaults: ClassVar[dict[str, float]]  # the numeric params this task reads; strength if any
    mask_required: ClassVar[bool] = False
    max_references: ClassVar[int] = 0
    no_mask_hint: ClassVar[str] = "remove mask: from the step"
    no_references_hint: ClassVar[str] = "remove references: from the step"

    # -- the Backend protocol --------------------------------------------------------------

    def validate(self, request: Request) -> None:
        self.params(request)
        check_request(
            self.task,
            request,
            size_multiple=self.size_multiple,
            who=f"{self.task} ({self.family} models)",
        )
        self._validate_mask(request)
        if len(request.references) > self.max_references:
            if self.max_references == 0:
                raise InvalidRequest(
                    f"{self.task} takes no reference images, got {len(request.references)}: "
                    f"{self.no_references_hint}"
                )
            raise InvalidRequest(
                f"{self.task} takes at most {self.max_references} reference image(s), got "
                f"{len(request.references)}: keep only the one that matters"
            )

    def run(self, request: Request) -> Result:
        self.validate(request)
        self.load()
        torch = require("torch", self.task)
        p = self.params(request)
        gen_device = self.spec.option("generator_device", "cpu")
        max_batch = max(1, int(self.spec.option("max_batch", 8)))
        n_seeds = len(request.seeds)

        # (image index, seed) per output, input-major; batched by image size.
        outputs: list[Any] = [None] * (len(request.images) * n_seeds)
        batches = self.batches(request, max_batch)
        seconds = 0.0
        for batch in batches:
            images = [request.images[k // n_seeds].convert("RGB") for k in batch]
            seeds = [int(request.seeds[k % n_seeds]) for k in batch]
            kwargs: dict[str, Any] = {
                # pre-expanded, prompt-major: output k is exactly (image, seed) k
                "prompt": [request.prompt] * len(batch),
                "image": images,
                "num_inference_steps": p["steps"],
                "guidance_scale": p["guidance"],
                "generator": [torch.Generator(device=gen_device).manual_seed(s) for s in seeds],
                "num_images_per_prompt": 1,
                "output_type": "pil",
            }
            kwargs.update(self.call_kwargs(request, p, images))
            result, took = self.call(**kwargs)
            seconds += took
            for k, image in zip(batch, result.images, strict=True):
                outputs[k] = image.convert("RGB")
        info: dict[str, Any] = self.info(
            **p,
            denoising_steps=self.denoising_steps(p["steps"], p.get("strength", 1.0)),
            masked=request.mask is not None,
            references=len(request.references),
            calls=len(batches),
        )
        return Result(images=outputs, seconds=seconds, info=info)

    # -- what subclasses change --------------------------------------------------------------

    def call_kwargs(
        self, request: Request, p: dict[str, Any], images: list[Image]
    ) -> dict[str, Any]:
        """Pipeline arguments beyond the shared ones, for one batch of same-size ``images``."""
        return {}

    @staticmethod
    def denoising_steps(steps: int, strength: float) -> int:
        """Steps the pipeline runs: ``int(steps * strength)``, as SD/SDXL's ``get_timesteps``."""
        return min(int(steps * strength), steps)

    def params(self, request: Request) -> dict[str, Any]:
        """The task's numeric params with defaults filled in, or InvalidRequest."""
        p = request.params
        out: dict[str, Any] = {
            "steps": _number(p, "steps", int, self.defaults["steps"]),
            "guidance": _number(p, "guidance", float, self.defaults["guidance"]),
        }
        if out["steps"] < 1:
            raise InvalidRequest(f"steps {out['steps']} must be at least 1")
        if out["guidance"] < 0:
            raise InvalidRequest(f"guidance {out['guidance']:g} must be >= 0")
        if "strength" in self.defaults:
            strength = _number(p, "strength", float, self.defaults["strength"])
            if not 0.0 < strength <= 1.0:
                raise InvalidRequest(
                    f"strength {strength:g} must be in (0, 1]: 1.0 repaints the masked area "
                    "from scratch, lower values keep more of what is there"
                )
            out["strength"] = strength
            self._check_denoising(out["steps"], strength)
        return out

    # -- helpers -----------------------------------------------------------------------------

    def _check_denoising(self, steps: int, strength: float) -> None:
        if self.denoising_steps(steps, strength) >= 1:
            return
        need_steps = next(
            n for n in itertools.count(steps) if self.denoising_steps(n, strength) >= 1
        )
        need_strength = next(
            k / 100 for k in range(1, 101) if self.denoising_steps(steps, k / 100) >= 1
        )
        raise InvalidRequest(
            f"strength {strength:g} x steps {steps} gives no denoising step: raise steps to at "
            f"least {need_steps} or strength to at least {need_strength:g}"
        )

    def _validate_mask(self, request: Request) -> None:
        mask = request.mask
        task = self.task
        if mask is None:
            if self.mask_required:
                raise InvalidRequest(
                    f"{task} needs a mask (white = repaint, black = keep): {MASK_HINT}"
                )
            return
        if not self.mask_required:
            raise InvalidRequest(f"{task} takes no mask: {self.no_mask_hint}")
        for index, image in enumerate(request.images):
            if image.size != mask.size:
                raise InvalidRequest(
                    f"the mask is {mask.size[0]}x{mask.size[1]} but input image {index} is "
                    f"{image.size[0]}x{image.size[1]}: the mask must have the input's size "
                    "(draw it on the photo at full size, and resize both by the same rule)"
                )
        extrema = mask.convert("L").getextrema()
        if isinstance(extrema[1], (int, float)) and extrema[1] < 128:
            raise InvalidRequest(
                f"the mask has no white pixel, so {task} may change nothing: white (>= 128) marks "
                "the area to repaint, black keeps it (is the mask inverted?)"
            )


class KontextBackend(EditPipelineBackend):
    task: ClassVar[str] = "kontext"
    pipeline_class: ClassVar[str] = "FluxKontextPipeline"
    family: ClassVar[str] = "FLUX"
    size_multiple: ClassVar[int] = FLUX_SIZE_MULTIPLE
    defaults: ClassVar[dict[str, float]] = {"steps": 2, "guidance": 2.5}
    no_mask_hint: ClassVar[str] = (
        "it edits the whole image; for an edit limited to a mask use task kontext-inpaint "
        "(profile kontext-inpaint), or remove mask: from the step"
    )
    no_references_hint: ClassVar[str] = (
        "for edits that combine several images use task multi-edit (profile qwen-edit-plus), or "
        "kontext-inpaint with one reference, or remove references: from the step"
    )

    def params(self, request: Request) -> dict[str, Any]:
        out = super().params(request)
        p = request.params
        given = [key for key in ("width", "height") if p.get(key) is not None]
        if len(given) == 1:
            raise InvalidRequest(
                f"{self.task}: give both width and height, or neither (the output then has the "
                f"input's size); got only {given[0]}"
            )
        if given:
            m = self.size_multiple
            for key in ("width", "height"):
                value = _number(p, key, int, 0)
                if value < m or value % m:
                    raise InvalidRequest(
                        f"{key} {value} must be a positive multiple of {m} for {self.family} "
                        f"models, e.g. {max(m, _round_down(value, m))}"
                    )
                out[key] = value
        return out

    def call_kwargs(
        self, request: Request, p: dict[str, Any], images: list[Image]
    ) -> dict[str, Any]:
        width, height = p.get("width") or images[0].width, p.get("height") or images[0].height
        # max_area = width * height makes the pipeline's area fit give back exactly (width,
        # height); without _auto_resize the input is kept at its size instead of ~1024².
        return {"width": width, "height": height, "max_area": width * height, "_auto_resize": False}


class KontextInpaintBackend(EditPipelineBackend):
    task: ClassVar[str] = "kontext-inpaint"
    pipeline_class: ClassVar[str] = "FluxKontextInpaintPipeline"
    family: ClassVar[str] = "FLUX"
    size_multiple: ClassVar[int] = FLUX_SIZE_MULTIPLE
    defaults: ClassVar[dict[str, float]] = {"steps": 2, "guidance": 2.5, "strength": 1.0}
    mask_required: ClassVar[bool] = True
    max_references: ClassVar[int] = 1

    @staticmethod
    def denoising_steps(steps: int, strength: float) -> int:
        # FLUX's get_timesteps: steps - int(steps - steps * strength), at least 1 for strength > 0
        return steps - int(max(steps - min(steps * strength, steps), 0))

    def call_kwargs(
        self, request: Request, p: dict[str, Any], images: list[Image]
    ) -> dict[str, Any]:
        width, height = images[0].size
        assert request.mask is not None  # check_request refused a masked task without one
        kwargs: dict[str, Any] = {
            "mask_image": [request.mask.convert("L")] * len(images),
            "strength": p["strength"],
            "width": width,
            "height": height,
            "max_area": width * height,
            "_auto_resize": False,
        }
        if request.references:
            kwargs["image_reference"] = request.references[0].convert("RGB")
        return kwargs


def _number(p: Any, key: str, kind: type, default: float) -> Any:
    value = p.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"{key} must be a number, not {value!r}")
    if kind is int and value != int(value):
        raise InvalidRequest(f"{key} must be a whole number, not {value!r}")
    return kind(value)


def _round_down(value: int, multiple: int) -> int:
    return max(multiple, value // multiple * multiple)


__all__ = [
    "FLUX_SIZE_MULTIPLE",
    "MASK_HINT",
    "SD_SIZE_MULTIPLE",
    "EditPipelineBackend",
    "KontextBackend",
    "KontextInpaintBackend",
]
