"""backends.video_io: mp4/webp/gif round trips read back with probe(), odd sizes, review strips."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from backends import BackendMissing, InvalidRequest
from backends.base import Video
from backends.video_io import FORMATS, encode_video, frame_strip, probe


def clip(width: int, height: int, frames: int, fps: float, seed: int = 0) -> Video:
    """A moving gradient with some noise: every frame differs from the one before."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    out = []
    for t in range(frames):
        base = np.stack([(x * 4 + t * 20) % 256, (y * 4 + t * 10) % 256, (x + y + t * 30) % 256])
        pixels = base.transpose(1, 2, 0) + rng.integers(-8, 9, (height, width, 3))
        out.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
    return Video(frames=out, fps=fps)


def need(fmt: str) -> None:
    if fmt == "mp4":
        pytest.importorskip("imageio_ffmpeg")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("frames", "fps"), [(4, 7), (9, 24), (17, 16)])
def test_round_trip_keeps_frames_and_fps(fmt: str, frames: int, fps: float) -> None:
    need(fmt)
    data = encode_video(clip(32, 24, frames, fps), fmt)
    info = probe(data, fmt)
    assert (info["frames"], info["width"], info["height"]) == (frames, 32, 24)
    # WebP stores whole milliseconds and GIF whole centiseconds per frame
    unit = {"mp4": 0.0, "webp": 0.001, "gif": 0.01}[fmt]
    assert abs(1 / info["fps"] - 1 / fps) <= unit / 2 + 1e-9


@pytest.mark.parametrize("fmt", FORMATS)
def test_magic_bytes(fmt: str) -> None:
    need(fmt)
    data = encode_video(clip(16, 16, 3, 8), fmt)
    if fmt == "mp4":
        assert data[4:8] == b"ftyp"
    elif fmt == "webp":
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    else:
        assert data[:6] == b"GIF89a"


def test_mp4_is_h264_yuv420p_and_close_to_the_frames(tmp_path) -> None:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    video = clip(48, 32, 5, 12)
    data = encode_video(video, "mp4")
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    decoded = [np.frombuffer(f, np.uint8).reshape(32, 48, 3) for f in reader]
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    first = np.asarray(video.frames[0], dtype=np.int16)
    assert float(np.abs(decoded[0].astype(np.int16) - first).mean()) < 12


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", [(33, 31), (17, 16), (1, 1)])
def test_odd_sizes(fmt: str, size: tuple[int, int]) -> None:
    need(fmt)
    info = probe(encode_video(clip(*size, 3, 10), fmt), fmt)
    assert info["frames"] == 3
    if fmt == "mp4":  # yuv420p: padded by one edge row/column, never cropped
        assert (info["width"], info["height"]) == (size[0] + size[0] % 2, size[1] + size[1] % 2)
    else:
        assert (info["width"], info["height"]) == size


def test_fractional_fps_mp4() -> None:
    need("mp4")
    info = probe(encode_video(clip(16, 16, 4, 23.976), "mp4"), "mp4")
    assert info["frames"] == 4 and abs(info["fps"] - 23.976) < 0.01


def test_rgba_and_grey_frames_are_encoded_as_rgb() -> None:
    video = clip(16, 16, 3, 10)
    video.frames[1] = video.frames[1].convert("RGBA")
    video.frames[2] = video.frames[2].convert("L")
    assert probe(encode_video(video, "webp"), "webp")["frames"] == 3


def test_gif_merges_identical_frames() -> None:
    still = clip(16, 16, 1, 10).frames * 4
    info = probe(encode_video(Video(frames=still, fps=10), "gif"), "gif")
    assert info["frames"] == 1 and info["fps"] == pytest.approx(2.5)  # one frame shown 0.4 s


@pytest.mark.parametrize(
    ("video", "fmt", "message"),
    [
        (Video(frames=[], fps=7), "webp", "no frames"),
        (clip(8, 8, 2, 0), "gif", "fps 0 must be above 0"),
        (clip(8, 8, 2, 7), "avi", "unknown video format 'avi': use one of mp4, webp, gif"),
        (Video(frames=[Image.new("RGB", (8, 8)), Image.new("RGB", (8, 6))], fps=7), "gif",
         "frame 1 is 8x6 but frame 0 is 8x8"),
    ],
)  # fmt: skip
def test_invalid_clips(video: Video, fmt: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        encode_video(video, fmt)
    assert message in str(info.value)


def test_mp4_without_imageio_ffmpeg_names_the_package(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(BackendMissing) as info:
        encode_video(clip(8, 8, 2, 7), "mp4")
    assert "pip install 'imageio-ffmpeg" in str(info.value)


@pytest.mark.parametrize(
    ("frames", "size", "count", "height", "expected"),
    [
        (25, (64, 48), 6, 128, (171 * 6, 128)),
        (4, (32, 32), 6, 128, (128 * 4, 128)),  # fewer frames than count: every frame
        (9, (48, 96), 3, 64, (32 * 3, 64)),
        (1, (20, 10), 6, 10, (20, 10)),
        (5, (30, 20), 1, 20, (30, 20)),
    ],
)
def test_frame_strip_dimensions(frames, size, count, height, expected) -> None:
    strip = frame_strip(clip(*size, frames, 8), count=count, height=height)
    assert strip.mode == "RGB" and strip.size == expected


def test_frame_strip_takes_first_and_last_evenly() -> None:
    video = Video(frames=[Image.new("RGB", (10, 10), (i * 10, 0, 0)) for i in range(11)], fps=5)
    strip = frame_strip(video, count=3, height=10)
    reds = [strip.getpixel((x * 10 + 5, 5))[0] for x in range(3)]
    assert reds == [0, 50, 100]  # frames 0, 5 and 10
