"""Encoding clips (:class:`~backends.base.Video`) to files, reading them back, and review strips.

- ``mp4``:  H.264 (libx264), yuv420p, CRF 18, ``+faststart``, through the ffmpeg that the
  ``imageio-ffmpeg`` wheel bundles. yuv420p needs even sides: a clip with an odd width or height
  is **padded** by one row/column repeating its edge pixels (nothing is cropped), so the file is
  at most one pixel wider/taller than the clip.
- ``webp``: animated WebP through Pillow (lossy, quality 90, loops forever).
- ``gif``:  animated GIF through Pillow (256 colours per frame, loops forever).

Frame timing: WebP stores whole milliseconds and GIF whole centiseconds per frame, so their fps
is the nearest the format can hold (7 fps plays as 7.0 in WebP, 7.14 in GIF). GIF also merges
identical consecutive frames into one longer frame (Pillow does): it plays the same, but
:func:`probe` then counts fewer frames.

This module imports neither torch nor diffusers; imageio-ffmpeg is imported only for mp4.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from backends.base import BackendMissing, InvalidRequest, Video

if TYPE_CHECKING:
    from PIL.Image import Image

FORMATS = ("mp4", "webp", "gif")
MP4_CRF = 18
WEBP_QUALITY = 90


def encode_video(video: Video, fmt: str) -> bytes:
    """The clip as an ``fmt`` file (``mp4``, ``webp`` or ``gif``), in memory."""
    fmt = _format(fmt)
    frames = _frames(video)
    if fmt == "mp4":
        return _encode_mp4(frames, video.fps)
    return _encode_pillow(frames, video.fps, fmt)


def probe(data: bytes, fmt: str) -> dict[str, Any]:
    """``{"frames", "fps", "width", "height"}`` of an encoded clip, read back from the bytes."""
    fmt = _format(fmt)
    if fmt == "mp4":
        return _probe_mp4(data)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        count = getattr(image, "n_frames", 1)
        total_ms = 0
        for index in range(count):
            image.seek(index)
            image.load()  # WebP fills in the frame's duration only when it is decoded
            total_ms += int(image.info.get("duration", 0) or 0)
        fps = count * 1000.0 / total_ms if total_ms else 0.0
        return {"frames": count, "fps": fps, "width": image.width, "height": image.height}


def frame_strip(video: Video, count: int = 6, height: int = 128) -> Image:
    """``count`` evenly spaced frames (first and last included) side by side, ``height`` px high.

    Fewer frames in the clip than ``count`` gives every frame. Each frame keeps its aspect ratio.
    """
    from PIL import Image

    if count < 1 or height < 1:
        raise ValueError(f"frame_strip needs count >= 1 and height >= 1, not {count}, {height}")
    frames = _frames(video)
    n = len(frames)
    shown = min(count, n)
    picks = [0] if shown == 1 else [round(i * (n - 1) / (shown - 1)) for i in range(shown)]
    width, frame_height = frames[0].size
    frame_width = max(1, round(width * height / frame_height))
    strip = Image.new("RGB", (frame_width * len(picks), height))
    for slot, index in enumerate(picks):
        tile = frames[index].resize((frame_width, height), Image.Resampling.BILINEAR)
        strip.paste(tile, (slot * frame_width, 0))
    return strip


# --- mp4 ----------------------------------------------------------------------------------


def _ffmpeg() -> Any:
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise BackendMissing(
            "mp4 needs the Python package 'imageio-ffmpeg' (it bundles ffmpeg), which is not "
            f"installed: pip install 'imageio-ffmpeg>=0.5' ({exc})"
        ) from exc
    return imageio_ffmpeg


def _encode_mp4(frames: list[Image], fps: float) -> bytes:
    import numpy as np

    ffmpeg = _ffmpeg()
    width, height = frames[0].size
    pad_w, pad_h = width % 2, height % 2
    with _temp_path(".mp4") as path:
        writer = ffmpeg.write_frames(
            path,
            (width + pad_w, height + pad_h),
            fps=Fraction(fps).limit_denominator(1001),
            codec="libx264",
            pix_fmt_out="yuv420p",
            quality=None,
            macro_block_size=2,  # sides are even already: never let ffmpeg rescale
            ffmpeg_log_level="error",
            output_params=["-crf", str(MP4_CRF), "-movflags", "+faststart"],
        )
        writer.send(None)  # start ffmpeg
        try:
            for frame in frames:
                pixels = np.asarray(frame, dtype=np.uint8)
                if pad_w or pad_h:
                    pixels = np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
                writer.send(np.ascontiguousarray(pixels))
        finally:
            writer.close()
        with open(path, "rb") as handle:
            return handle.read()


def _probe_mp4(data: bytes) -> dict[str, Any]:
    ffmpeg = _ffmpeg()
    with _temp_path(".mp4") as path:
        with open(path, "wb") as handle:
            handle.write(data)
        reader = ffmpeg.read_frames(path)
        meta = reader.__next__()
        try:
            count = sum(1 for _ in reader)
        finally:
            reader.close()
    width, height = meta["size"]
    return {"frames": count, "fps": float(meta["fps"]), "width": width, "height": height}


@contextmanager
def _temp_path(suffix: str) -> Iterator[str]:
    # ffmpeg wants a seekable file for mp4 (the moov atom), not a pipe.
    handle, path = tempfile.mkstemp(prefix="darkroom-video-", suffix=suffix)
    os.close(handle)
    try:
        yield path
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


# --- webp / gif ---------------------------------------------------------------------------


def _encode_pillow(frames: list[Image], fps: float, fmt: str) -> bytes:
    unit = 10 if fmt == "gif" else 1  # GIF counts centiseconds, WebP milliseconds
    duration = max(unit, round(1000.0 / fps / unit) * unit)
    out = io.BytesIO()
    options: dict[str, Any] = {"quality": WEBP_QUALITY} if fmt == "webp" else {}
    frames[0].save(
        out,
        format=fmt.upper(),
        save_all=True,
        append_images=frames[1:],
        duration=duration,
        loop=0,
        **options,
    )
    return out.getvalue()


# --- checks -------------------------------------------------------------------------------


def _format(fmt: str) -> str:
    name = fmt.lower().lstrip(".")
    if name not in FORMATS:
        raise InvalidRequest(f"unknown video format {fmt!r}: use one of {', '.join(FORMATS)}")
    return name


def _frames(video: Video) -> list[Image]:
    if not video.frames:
        raise InvalidRequest("the clip has no frames")
    if not video.fps or video.fps <= 0:
        raise InvalidRequest(f"the clip's fps {video.fps!r} must be above 0")
    frames = [frame.convert("RGB") for frame in video.frames]
    size = frames[0].size
    for index, frame in enumerate(frames):
        if frame.size != size:
            raise InvalidRequest(
                f"frame {index} is {frame.width}x{frame.height} but frame 0 is "
                f"{size[0]}x{size[1]}: every frame of a clip must have the same size"
            )
    return frames


__all__ = ["FORMATS", "encode_video", "frame_strip", "probe"]
