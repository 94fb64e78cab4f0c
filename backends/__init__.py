"""Model backends for Darkroom: a leaf package that never imports ``daemon``.

``BACKENDS`` is the registry: a literal table from task name to the class that runs it,
as a dotted path so that torch and diffusers are imported only when a task is used.
"""

from __future__ import annotations

import importlib

from backends.base import (
    Backend,
    BackendError,
    BackendMissing,
    DeviceError,
    InvalidRequest,
    ModelSpec,
    ModelUnavailable,
    Request,
    Result,
)

BACKENDS: dict[str, str] = {
    # explore / hires: image to image (SD, SDXL, FLUX.1-schnell; sizes up to 2048 px)
    "img2img": "backends.img2img:Img2ImgBackend",
    # briefs without a photo: a prompt alone (SD, SDXL, FLUX.1 through AutoPipelineForText2Image)
    "text2img": "backends.text2img:Text2ImgBackend",
    # reference: identity from several reference images
    "ip-adapter": "backends.reference:IPAdapterBackend",
    "multi-edit": "backends.reference:MultiImageEditBackend",
    # hires: x4 upscaler
    "upscale": "backends.upscale:UpscaleBackend",
    # edit: instruction edits and masked edits
    "kontext": "backends.edit:KontextBackend",
    "kontext-inpaint": "backends.edit:KontextInpaintBackend",
    "inpaint": "backends.inpaint:InpaintBackend",
    "fill": "backends.inpaint:FillBackend",
    # animate: image to video
    "svd": "backends.video:SVDBackend",
    "ltx-i2v": "backends.video:LTXImageToVideoBackend",
    "wan-i2v": "backends.video:WanImageToVideoBackend",
    # renditions: no model; channel formats
    "rendition": "backends.renditions:RenditionBackend",
    # hosted: provider APIs, no GPU (backends/hosted/)
    "gemini-image": "backends.hosted.gemini:GeminiImageBackend",
    "seedream": "backends.hosted.seedream:SeedreamBackend",
    "bfl-kontext": "backends.hosted.bfl:BFLKontextBackend",
    # the daemon's own tests
    "stub": "backends.stub:StubBackend",
}


def backend_class(task: str) -> type[Backend]:
    """The class registered for ``task``; an unknown task names the known ones."""
    try:
        target = BACKENDS[task]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise InvalidRequest(f"unknown task {task!r}; known tasks: {known}") from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "BackendMissing",
    "DeviceError",
    "InvalidRequest",
    "ModelSpec",
    "ModelUnavailable",
    "Request",
    "Result",
    "backend_class",
]
