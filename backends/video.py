"""Tasks ``svd``, ``ltx-i2v`` and ``wan-i2v``: an input image becomes a short clip.

One clip per (input image, seed), input-major like every task: ``Result.videos[k]`` is the clip
of image ``k // len(seeds)`` with seed ``seed[k % len(seeds)]`` and ``Result.images[k]`` its
first frame (the poster). Frames are RGB PIL images of the input's size: the caller sizes inputs
(each model needs sides that are multiples of its ``SIZE_MULTIPLE``); ``Video.fps`` is the
request's ``fps``. :mod:`backends.video_io` encodes clips to mp4/webp/gif.

Request params (all optional; the profile supplies the model's usual values):

==================== ======================= ========================= =========================
param                ``svd``                 ``ltx-i2v``               ``wan-i2v``
==================== ======================= ========================= =========================
frames               >= 2, default 14        8k+1 (9, 17, ...), 49     4k+1 (5, 9, ...), 33
fps                  > 0, default 7 (the     > 0, default 24 (also     > 0, default 16 (playback
                     model is conditioned)   conditions the model)     only)
steps                >= 1, default 25        >= 1, default 30          >= 1, default 30
guidance             -                       >= 0, default 3.0         >= 0, default 5.0
min/max_guidance     1.0 / 3.0 (per frame)   -                         -
motion_bucket_id     0-1023, default 127     -                         -
noise_aug_strength   >= 0, default 0.02      -                         -
decode_chunk_size    >= 1 frames decoded at  -                         -
                     once, default all
==================== ======================= ========================= =========================

SVD takes no prompt (the request's prompt is ignored); LTX and Wan use the prompt, and the
negative prompt when guidance is above 1.

Each clip has its own CPU ``torch.Generator`` seeded with its seed, so a clip is reproducible
alone. SVD and LTX may batch clips of the same size into one pipeline call (spec option
``max_batch``, default 1: video latents are large); images are passed pre-expanded, one per
clip, since LTX pairs images with prompts only that way. Wan always runs one clip per call: its
pipeline takes one image per call and fails with more than one video per prompt.

Spec options: ``max_batch``; ``variant`` (e.g. ``fp16``) for hub weights; ``generator_device``
(default ``cpu``: the same seed gives the same noise on every device); ``max_sequence_length``
(LTX default 128, Wan 512: prompt tokens given to the text encoder).
"""

from __future__ import annotations

from typing import Any, ClassVar

from backends.base import InvalidRequest, Request, Result, Video
from backends.checks import check_request
from backends.pipeline import PipelineBackend
from backends.runtime.imports import require

MAX_SEED = 2**64


class _ImageToVideoBackend(PipelineBackend):
    """What the three image-to-video tasks share; a subclass names the pipeline and its rules."""

    task: ClassVar[str]
    pipeline_class: ClassVar[str]  # the diffusers class (there is no AutoPipeline for video)
    model_name: ClassVar[str]  # for messages
    SIZE_MULTIPLE: ClassVar[int]
    FRAME_STEP: ClassVar[int] = 1  # frames must be FRAME_STEP * k + 1 (1: any count)
    MIN_FRAMES: ClassVar[int] = 2
    DEFAULTS: ClassVar[dict[str, Any]]
    BATCHES: ClassVar[bool] = True

    # -- the Backend protocol -------------------------------------------------------------

    def validate(self, request: Request) -> None:
        self.params(request)
        check_request(
            self.task, request, size_multiple=self.SIZE_MULTIPLE, per="clip", who=self.model_name
        )

    def run(self, request: Request) -> Result:
        self.validate(request)
        self.load()
        torch = require("torch", self.task)
        p = self.params(request)
        gen_device = self.spec.option("generator_device", "cpu")
        max_batch = max(1, int(self.spec.option("max_batch", 1))) if self.BATCHES else 1

        n_seeds = len(request.seeds)
        batches = self.batches(request, max_batch)
        videos: list[Any] = [None] * (len(request.images) * n_seeds)
        seconds = 0.0
        for batch in batches:
            images = [request.images[k // n_seeds].convert("RGB") for k in batch]
            seeds = [int(request.seeds[k % n_seeds]) for k in batch]
            generators = [torch.Generator(device=gen_device).manual_seed(s) for s in seeds]
            width, height = images[0].size
            kwargs: dict[str, Any] = {
                "image": images if len(batch) > 1 else images[0],
                "generator": generators if len(batch) > 1 else generators[0],
                "height": height,
                "width": width,
                "num_frames": p["frames"],
                "num_inference_steps": p["steps"],
                "num_videos_per_prompt": 1,
                "output_type": "pil",
                **self._call_kwargs(request, p, len(batch)),
            }
            result, took = self.call(**kwargs)
            seconds += took
            for k, frames in zip(batch, result.frames, strict=True):
                videos[k] = Video([f.convert("RGB") for f in frames], float(p["fps"]))
        return Result(
            images=[video.frames[0] for video in videos],
            videos=videos,
            seconds=seconds,
            info=self.info(**p, calls=len(batches)),
        )

    # -- parameters -------------------------------------------------------------------------

    def params(self, request: Request) -> dict[str, Any]:
        """The request's params with defaults filled in, or InvalidRequest saying what to change."""
        p = request.params  # params another task uses are ignored, as img2img does
        out = {key: _number(p, key, default) for key, default in self.DEFAULTS.items()}
        frames, fps, steps = out["frames"], out["fps"], out["steps"]
        if isinstance(frames, float) or isinstance(steps, float):
            raise InvalidRequest(f"frames and steps must be whole numbers, not {frames}, {steps}")
        step = self.FRAME_STEP
        if frames < self.MIN_FRAMES or (frames - 1) % step:
            if step == 1:
                raise InvalidRequest(
                    f"frames {frames} must be at least {self.MIN_FRAMES} for {self.model_name}"
                )
            low = max(step + 1, (frames - 1) // step * step + 1)
            high = low if frames < step + 1 else low + step
            options = f"{low}" if low == high else f"{low} or {high}"
            raise InvalidRequest(
                f"frames {frames} does not fit {self.model_name}: it needs {step}k+1 frames "
                f"({step + 1}, {2 * step + 1}, {3 * step + 1}, ...); use {options}"
            )
        if fps <= 0:
            raise InvalidRequest(f"fps {fps} must be above 0 (7-30 is usual)")
        if steps < 1:
            raise InvalidRequest(f"steps {steps} must be at least 1")
        self._check(out)
        return out

    def _check(self, p: dict[str, Any]) -> None:
        """Task-specific checks of the filled-in params."""

    def _call_kwargs(self, request: Request, p: dict[str, Any], n: int) -> dict[str, Any]:
        """The pipeline arguments beyond those every task shares, for a batch of ``n`` clips."""
        raise NotImplementedError


class SVDBackend(_ImageToVideoBackend):
    """Stable Video Diffusion: motion from the image alone, no prompt."""

    task: ClassVar[str] = "svd"
    pipeline_class: ClassVar[str] = "StableVideoDiffusionPipeline"
    model_name: ClassVar[str] = "Stable Video Diffusion"
    SIZE_MULTIPLE: ClassVar[int] = 8
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "frames": 14,
        "fps": 7,
        "steps": 25,
        "min_guidance": 1.0,
        "max_guidance": 3.0,
        "motion_bucket_id": 127,
        "noise_aug_strength": 0.02,
        "decode_chunk_size": None,
    }

    def _check(self, p: dict[str, Any]) -> None:
        if not 0 <= p["motion_bucket_id"] <= 1023 or isinstance(p["motion_bucket_id"], float):
            raise InvalidRequest(
                f"motion_bucket_id {p['motion_bucket_id']} must be a whole number in 0-1023 "
                "(127 is the default; higher moves more)"
            )
        if p["noise_aug_strength"] < 0:
            raise InvalidRequest(
                f"noise_aug_strength {p['noise_aug_strength']} must be >= 0 (0.02 is the default)"
            )
        if not 0 <= p["min_guidance"] <= p["max_guidance"]:
            raise InvalidRequest(
                f"min_guidance {p['min_guidance']} and max_guidance {p['max_guidance']} need "
                "0 <= min_guidance <= max_guidance (1.0 and 3.0 are the defaults)"
            )
        chunk = p["decode_chunk_size"]
        if chunk is not None and (isinstance(chunk, float) or chunk < 1):
            raise InvalidRequest(
                f"decode_chunk_size {chunk} must be a whole number >= 1 (frames decoded at once; "
                "lower it to save memory)"
            )

    def _call_kwargs(self, request: Request, p: dict[str, Any], n: int) -> dict[str, Any]:
        return {
            "fps": p["fps"],  # SVD is conditioned on the frame rate too
            "min_guidance_scale": p["min_guidance"],
            "max_guidance_scale": p["max_guidance"],
            "motion_bucket_id": p["motion_bucket_id"],
            "noise_aug_strength": p["noise_aug_strength"],
            "decode_chunk_size": p["decode_chunk_size"],
        }


class _PromptedBackend(_ImageToVideoBackend):
    SEQUENCE_LENGTH: ClassVar[int]

    def _check(self, p: dict[str, Any]) -> None:
        if p["guidance"] < 0:
            raise InvalidRequest(f"guidance {p['guidance']} must be >= 0")

    def _call_kwargs(self, request: Request, p: dict[str, Any], n: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "prompt": [request.prompt] * n if n > 1 else request.prompt,
            "guidance_scale": p["guidance"],
            "max_sequence_length": int(
                self.spec.option("max_sequence_length", self.SEQUENCE_LENGTH)
            ),
        }
        if request.negative_prompt and p["guidance"] > 1:
            kwargs["negative_prompt"] = (
                [request.negative_prompt] * n if n > 1 else request.negative_prompt
            )
        return kwargs


class LTXImageToVideoBackend(_PromptedBackend):
    """LTX-Video image to video: prompt-driven motion, fast."""

    task: ClassVar[str] = "ltx-i2v"
    pipeline_class: ClassVar[str] = "LTXImageToVideoPipeline"
    model_name: ClassVar[str] = "LTX-Video"
    SIZE_MULTIPLE: ClassVar[int] = 32
    FRAME_STEP: ClassVar[int] = 8
    MIN_FRAMES: ClassVar[int] = 9
    SEQUENCE_LENGTH: ClassVar[int] = 128
    DEFAULTS: ClassVar[dict[str, Any]] = {"frames": 49, "fps": 24, "steps": 30, "guidance": 3.0}

    def _call_kwargs(self, request: Request, p: dict[str, Any], n: int) -> dict[str, Any]:
        return {**super()._call_kwargs(request, p, n), "frame_rate": p["fps"]}


class WanImageToVideoBackend(_PromptedBackend):
    """Wan 2.1 image to video: one image and one clip per pipeline call."""

    task: ClassVar[str] = "wan-i2v"
    pipeline_class: ClassVar[str] = "WanImageToVideoPipeline"
    model_name: ClassVar[str] = "Wan image-to-video"
    SIZE_MULTIPLE: ClassVar[int] = 16
    FRAME_STEP: ClassVar[int] = 4
    MIN_FRAMES: ClassVar[int] = 5
    SEQUENCE_LENGTH: ClassVar[int] = 512
    DEFAULTS: ClassVar[dict[str, Any]] = {"frames": 33, "fps": 16, "steps": 30, "guidance": 5.0}
    BATCHES: ClassVar[bool] = False


def _number(p: Any, key: str, default: Any) -> Any:
    value = p.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{key} must be a number, not {value!r}")
    if isinstance(value, float) and value.is_integer() and isinstance(default, int | None):
        return int(value)  # 25.0 from YAML/JSON is 25
    return value


__all__ = ["LTXImageToVideoBackend", "SVDBackend", "WanImageToVideoBackend"]
