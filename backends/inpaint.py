"""Tasks ``inpaint`` and ``fill``: repaint the masked area of an image from the prompt.

- ``inpaint`` (``diffusers.AutoPipelineForInpainting``): SD 1.x/2.x and SDXL inpainting
  checkpoints (a 9-channel UNet: noise, mask and masked-image latents). Params ``strength``
  (0, 1], default 1.0, ``steps`` >= 1, default 2 (``int(steps * strength)`` are run) and
  ``guidance`` >= 0, default 0.0; above 1 the request's ``negative_prompt`` is used. Sizes are
  multiples of 8.
- ``fill`` (``diffusers.FluxFillPipeline``): FLUX.1 Fill, inpainting and outpainting (pad the
  input and mask the padding). Params ``steps`` >= 1, default 2, and ``guidance`` >= 0, default
  30.0 (FLUX's embedded guidance; Fill wants it high). Sizes are multiples of 16.

Both need ``request.mask``: mode "L" (other modes are converted), the size of every input
image, white = repaint, black = keep. Both keep the input's size (the pipelines would otherwise
use their default sample size). Loading, validation, batching and seeds work as described in
:mod:`backends.edit`, whose :class:`~backends.edit.EditPipelineBackend` these build on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from backends.base import Request
from backends.edit import FLUX_SIZE_MULTIPLE, SD_SIZE_MULTIPLE, EditPipelineBackend

if TYPE_CHECKING:
    from PIL.Image import Image


class InpaintBackend(EditPipelineBackend):
    task: ClassVar[str] = "inpaint"
    pipeline_class: ClassVar[str] = "AutoPipelineForInpainting"
    family: ClassVar[str] = "Stable Diffusion"
    size_multiple: ClassVar[int] = SD_SIZE_MULTIPLE
    defaults: ClassVar[dict[str, float]] = {"steps": 2, "guidance": 0.0, "strength": 1.0}
    mask_required: ClassVar[bool] = True

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
        }
        if request.negative_prompt and p["guidance"] > 1:
            kwargs["negative_prompt"] = [request.negative_prompt] * len(images)
        return kwargs


class FillBackend(EditPipelineBackend):
    task: ClassVar[str] = "fill"
    pipeline_class: ClassVar[str] = "FluxFillPipeline"
    family: ClassVar[str] = "FLUX"
    size_multiple: ClassVar[int] = FLUX_SIZE_MULTIPLE
    defaults: ClassVar[dict[str, float]] = {"steps": 2, "guidance": 30.0}
    mask_required: ClassVar[bool] = True

    def call_kwargs(
        self, request: Request, p: dict[str, Any], images: list[Image]
    ) -> dict[str, Any]:
        width, height = images[0].size
        assert request.mask is not None  # check_request refused a masked task without one
        return {
            "mask_image": [request.mask.convert("L")] * len(images),
            "width": width,
            "height": height,
        }


__all__ = ["FillBackend", "InpaintBackend"]
