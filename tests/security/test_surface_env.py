"""Issue 15 (quiet surface): worker processes and ffmpeg never inherit the daemon's secrets.

The daemon holds AWS keys and the webhook secret; a worker runs model code (and unpickles
what model files contain) and ffmpeg parses media, so both start with an allow-listed
environment. Checked on the real processes: a worker's ``/proc/<pid>/environ`` and the
environment a (wrapped) ffmpeg binary sees.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from PIL import Image

from backends.base import Video
from daemon.execution.worker_handle import Worker, worker_environment

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
    "DARKROOM_WEBHOOKS__SECRET": "whsec_c2VjcmV0",
    "DARKROOM_WEBHOOK_SECRET": "another-secret",
    "PGPASSWORD": "db-password",
}
NEEDED = {
    "HF_HOME": "/tmp/hf-home",
    "CUDA_VISIBLE_DEVICES": "0",
    "OMP_NUM_THREADS": "1",
    "LC_ALL": "C.UTF-8",
    "GEMINI_API_KEY": "hosted-key",  # a hosted worker needs its provider's key
}


def process_environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode().partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_a_worker_process_gets_no_secret_from_the_daemons_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**SECRETS, **NEEDED, "MY_PROFILE_TOKEN": "custom"}.items():
        monkeypatch.setenv(name, value)
    worker = Worker("cpu", 0, tmp_path, allow_env={"MY_PROFILE_TOKEN"})
    worker.start()
    try:
        seen = process_environment(worker.process.pid)
        worker.call(("ping",), 30)  # it works without them
    finally:
        worker.stop()
    assert not set(SECRETS) & set(seen), sorted(set(SECRETS) & set(seen))
    assert not any(value in seen.values() for value in SECRETS.values())
    for name, value in {**NEEDED, "MY_PROFILE_TOKEN": "custom"}.items():
        assert seen.get(name) == value, name
    assert seen.get("PATH") == os.environ["PATH"]
    # The daemon keeps its own environment: S3 and webhooks still need these.
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "aws-secret-value"


def test_the_allow_list_keeps_what_workers_read_and_drops_the_rest() -> None:
    environ = {
        **SECRETS,
        **NEEDED,
        "PATH": "/usr/bin",
        "HOME": "/var/lib/darkroom",
        "CREDENTIALS_DIRECTORY": "/run/credentials/darkroom.service",
        "BFL_API_KEY": "k",
        "BFL_WEBHOOK_SECRET": "s",
        "NOTIFY_SOCKET": "/run/systemd/notify",  # only the main process talks to systemd
        "SQS_QUEUE_URL": "https://sqs.example/q",
    }
    kept = worker_environment(environ)
    assert set(kept) == {
        *NEEDED,
        "PATH",
        "HOME",
        "CREDENTIALS_DIRECTORY",
        "BFL_API_KEY",
        "BFL_WEBHOOK_SECRET",
    }


def test_ffmpeg_runs_without_the_daemons_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    from backends.video_io import encode_video, probe

    real = imageio_ffmpeg.get_ffmpeg_exe()
    dumps = tmp_path / "env"
    dumps.mkdir()
    wrapper = tmp_path / "ffmpeg"
    # imageio-ffmpeg's documented override: the binary it hands out.
    wrapper.write_text(f'#!/bin/sh\nenv > "{dumps}/$$"\nexec "{real}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(wrapper))
    for name, value in {**SECRETS, "LC_ALL": "C.UTF-8"}.items():
        monkeypatch.setenv(name, value)
    frames = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(3)]
    data = encode_video(Video(frames=frames, fps=8), "mp4")
    assert probe(data, "mp4")["frames"] == 3
    seen = [f.read_text() for f in dumps.iterdir()]
    assert len(seen) == 2  # the encode and the probe both went through the wrapper
    for text in seen:
        names = {line.partition("=")[0] for line in text.splitlines()}
        assert not set(SECRETS) & names and "aws-secret-value" not in text
        assert "LC_ALL" in names and "PATH" in names


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("the worker spawn filter is tested on Linux")
