"""Issue 20: a command whose reader goes away (``darkroom inspect x | head``) exits quietly
with status 141 (128 + SIGPIPE, documented in daemon/cli/output.py), never with a
BrokenPipeError traceback.

The reader is gone before the command writes (the read end of its stdout pipe is closed
before it starts), so every write meets EPIPE, whatever the size of the output."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from daemon.cli.main import CLOSED_PIPE_STATUS
from daemon.outputs import provenance
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # each runs the darkroom CLI as a subprocess


def run_into_a_closed_pipe(args: list[str], cwd: Path) -> tuple[int, str]:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (head) has already gone
    env = {
        "HF_HUB_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
        "PYTHONPATH": str(REPO),
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "daemon.cli", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env,
            timeout=300,
        )
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr


def test_status_141_is_documented() -> None:
    assert CLOSED_PIPE_STATUS == 141
    assert "141" in (REPO / "daemon" / "cli" / "output.py").read_text()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        textwrap.dedent("""\
        name: look
        match: {source: drop}
        prompt: "{stem} in the rain"
        steps:
          - {name: explore, model: stub, variants: 2, seed: 5}
        output: {sink: out}
        """)
    )
    (tmp_path / "drop").mkdir()
    (tmp_path / "darkroom.yaml").write_text(
        "state_dir: state\nsources: {drop: {path: drop}}\nsinks: {out: {path: out}}\n"
        "worker: {device: cpu}\n"
    )
    info = {"source": "drop:a.png", "rule": "look", "prompt": "a " * 5000, "seed": 5}
    Image.new("RGB", (8, 8)).save(tmp_path / "variant.png", **provenance.save_kwargs("PNG", info))
    Image.new("RGB", (64, 64), (200, 80, 40)).save(tmp_path / "drop" / "a.png")
    return tmp_path


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "variant.png"],
        ["rules", "schema"],
        ["--help"],
        ["jobs", "ls", "--help"],
        ["check"],
        ["check", "--json"],
        ["match", "drop/a.png"],
        ["match", "--json", "drop/a.png"],
        ["models"],
    ],
    ids=lambda args: " ".join(args),
)
def test_a_closed_pipe_ends_the_command_quietly(args: list[str], workdir: Path) -> None:
    status, stderr = run_into_a_closed_pipe(args, workdir)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert status == CLOSED_PIPE_STATUS, stderr
