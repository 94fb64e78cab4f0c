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

Provenance: :func:`encode_video` takes the record the daemon embeds in every output. mp4 gets
it as container metadata (``comment``: the JSON record; ``description``: one human line naming
the IPTC digital source type), which players, ``ffprobe`` and ``exiftool`` show and
:func:`read_mp4_tags` reads back without ffmpeg; animated WebP gets the same XMP packet as a
still; GIF the JSON in its comment extension.

This module imports neither torch nor diffusers; imageio-ffmpeg is imported only for mp4, and
only for its ffmpeg binary: ffmpeg runs with an allow-listed environment
(:func:`ffmpeg_environment`: PATH, HOME, LANG/LC_*, TZ, TMPDIR), never the daemon's secrets.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from backends.base import BackendError, BackendMissing, InvalidRequest, Video

if TYPE_CHECKING:
    from PIL.Image import Image

FORMATS = ("mp4", "webp", "gif")
MP4_CRF = 18
WEBP_QUALITY = 90


def encode_video(
    video: Video,
    fmt: str,
    provenance: Mapping[str, Any] | None = None,
    *,
    xmp: bytes | None = None,
) -> bytes:
    """The clip as an ``fmt`` file (``mp4``, ``webp`` or ``gif``), in memory, carrying
    ``provenance`` (a JSON-able record) and, in WebP, the ``xmp`` packet the caller built
    for it (see the module docstring for where each goes)."""
    fmt = _format(fmt)
    frames = _frames(video)
    if fmt == "mp4":
        return _encode_mp4(frames, video.fps, _mp4_metadata(provenance))
    return _encode_pillow(frames, video.fps, fmt, _pillow_metadata(provenance, fmt, xmp))


def read_mp4_tags(data: bytes) -> dict[str, str]:
    """The text tags of an mp4's ``moov/udta/meta/ilst`` (what ffmpeg's ``-metadata`` writes),
    by name (``comment``, ``description``, ``title``, ...); {} when there are none or the
    bytes are not an mp4. Parses the boxes itself: no ffmpeg needed."""
    tags: dict[str, str] = {}
    ilst = _box_path(data, (b"moov", b"udta", b"meta", b"ilst"))
    if ilst is None:
        return tags
    for kind, item in _boxes(data, *ilst):
        payload = _box_path(data, (b"data",), *item)
        if payload is None or payload[1] - payload[0] < 8:
            continue
        start, end = payload
        name = _MP4_TAG_NAMES.get(kind, kind.decode("latin-1"))
        tags[name] = data[start + 8 : end].decode("utf-8", "replace")  # type + locale first
    return tags


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


# ffmpeg's -metadata keys and the iTunes-style atoms its mp4 muxer writes them to.
_MP4_TAG_NAMES = {
    b"\xa9cmt": "comment",
    b"desc": "description",
    b"\xa9nam": "title",
    b"\xa9too": "encoder",
}


def _mp4_metadata(provenance: Mapping[str, Any] | None) -> list[str]:
    if not provenance:
        return []
    record = json.dumps(dict(provenance), sort_keys=True, ensure_ascii=False, default=str)
    source_type = str(provenance.get("digital_source_type") or "")
    label = source_type.rsplit("/", 1)[-1] or "unspecified"
    description = f"Made by Darkroom with an AI model (IPTC digital source type: {label})"
    if source_type:
        description += f" {source_type}"
    return ["-metadata", f"comment={record}", "-metadata", f"description={description}"]


def _pillow_metadata(
    provenance: Mapping[str, Any] | None, fmt: str, xmp: bytes | None
) -> dict[str, Any]:
    if fmt == "webp":
        return {"xmp": xmp} if xmp else {}
    if not provenance:  # gif: Pillow writes no XMP there; the record goes in the comment
        return {}
    return {
        "comment": json.dumps(dict(provenance), sort_keys=True, ensure_ascii=False, default=str)
    }


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, tuple[int, int]]]:
    """(type, (payload start, payload end)) of the ISO boxes in ``data[start:end]``."""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        header = 8
        if size == 1 and at + 16 <= end:  # 64-bit size
            size, header = struct.unpack(">Q", data[at + 8 : at + 16])[0], 16
        elif size == 0:  # to the end of the enclosing box
            size = end - at
        if size < header or at + size > end:
            return
        yield kind, (at + header, at + size)
        at += size


def _box_path(
    data: bytes, path: tuple[bytes, ...], start: int = 0, end: int | None = None
) -> tuple[int, int] | None:
    """The payload span of the box at ``path`` below ``data[start:end]``."""
    span = (start, len(data) if end is None else end)
    for kind in path:
        found = next((inner for k, inner in _boxes(data, *span) if k == kind), None)
        if found is None:
            return None
        # ``meta`` is a full box: version and flags come before its children.
        span = (found[0] + 4, found[1]) if kind == b"meta" else found
    return span


def _encode_mp4(frames: list[Image], fps: float, metadata: list[str] | None = None) -> bytes:
    import numpy as np

    width, height = frames[0].size
    pad_w, pad_h = width % 2, height % 2
    rate = Fraction(fps).limit_denominator(1001)
    raw = bytearray()
    for frame in frames:
        pixels = np.asarray(frame, dtype=np.uint8)
        if pad_w or pad_h:  # yuv420p needs even sides: repeat the edge, never rescale
            pixels = np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        raw += np.ascontiguousarray(pixels).tobytes()
    with _temp_path(".mp4") as path:
        _run_ffmpeg(
            [
                *("-f", "rawvideo", "-pix_fmt", "rgb24"),
                *("-s", f"{width + pad_w}x{height + pad_h}", "-r", str(rate), "-i", "-"),
                *("-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(MP4_CRF)),
                *("-movflags", "+faststart", *(metadata or []), "-y", path),
            ],
            stdin=bytes(raw),
        )
        with open(path, "rb") as handle:
            return handle.read()


_STREAM = re.compile(r"Stream #.*: Video: ")
_SIZE = re.compile(r", (\d+)x(\d+)")
_FPS = re.compile(r" (\d+(?:\.\d+)?) fps")
_FRAMES = re.compile(r"frame=\s*(\d+)")


def _probe_mp4(data: bytes) -> dict[str, Any]:
    with _temp_path(".mp4") as path:
        with open(path, "wb") as handle:
            handle.write(data)
        # Copying the video stream to the null muxer counts its frames without decoding them.
        log = _run_ffmpeg(["-i", path, "-map", "0:v:0", "-c", "copy", "-f", "null", "-"], "info")
    stream = next((line for line in log.splitlines() if _STREAM.search(line)), "")
    size, fps, counted = _SIZE.search(stream), _FPS.search(stream), _FRAMES.findall(log)
    if size is None or not counted:
        raise InvalidRequest("ffmpeg found no video stream in the mp4")
    return {
        "frames": int(counted[-1]),
        "fps": float(fps.group(1)) if fps else 0.0,
        "width": int(size.group(1)),
        "height": int(size.group(2)),
    }


# What ffmpeg may see of the daemon's environment: it needs to find libraries and temp space,
# never the secrets the daemon holds (AWS keys, webhook secrets, provider API keys).
FFMPEG_ENV_NAMES = frozenset(
    {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH"}
)
FFMPEG_ENV_PREFIXES = ("LC_",)


def ffmpeg_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` that ffmpeg is started with (an allow-list)."""
    return {
        name: value
        for name, value in environ.items()
        if name in FFMPEG_ENV_NAMES or name.startswith(FFMPEG_ENV_PREFIXES)
    }


def _run_ffmpeg(args: list[str], level: str = "error", stdin: bytes | None = None) -> str:
    """Run the bundled ffmpeg with ``args`` and an allow-listed environment; its log (stderr).

    imageio-ffmpeg's own frame readers and writers start ffmpeg with the daemon's whole
    environment, so only its binary is used here."""
    exe = _ffmpeg().get_ffmpeg_exe()
    command = [exe, "-hide_banner", "-nostdin", "-loglevel", level, *args]
    if stdin is not None:
        command.remove("-nostdin")  # frames arrive on stdin
    done = subprocess.run(
        command,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        env=ffmpeg_environment(os.environ),
        check=False,
    )
    log = done.stderr.decode("utf-8", "replace")
    if done.returncode != 0:
        raise BackendError(f"ffmpeg failed (exit status {done.returncode}): {log.strip()[-500:]}")
    return log


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


def _encode_pillow(
    frames: list[Image], fps: float, fmt: str, metadata: dict[str, Any] | None = None
) -> bytes:
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
        **(metadata or {}),
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


__all__ = ["FORMATS", "encode_video", "frame_strip", "probe", "read_mp4_tags"]
