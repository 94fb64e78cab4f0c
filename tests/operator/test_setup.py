"""Issue 20: the set-up picks the right torch build and says what it is doing.

The Makefile's real targets run here (``make torch-index`` only probes and writes the pip
arguments; ``make -n venv`` prints the recipe), against a loopback stand-in for the PyTorch
CPU index and a fake ``nvidia-smi`` first on PATH, so no test downloads anything.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


class _Index(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        ok = self.path.rstrip("/") == "/whl/cpu/torch"
        body = b"<a href='torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl'>torch</a>" if ok else b""
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def cpu_index() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/whl/cpu"
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fake_nvidia_smi(folder: Path, *, gpu: bool) -> Path:
    """A bin folder whose nvidia-smi finds a GPU (exit 0) or none (exit 9, as with no driver)."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\necho 'GPU 0: Fake'\nexit {0 if gpu else 9}\n")
    tool.chmod(0o755)
    return folder


def make(*args: str, path_first: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    assignments = [f"{k}={v}" for k, v in variables.items()]
    return subprocess.run(
        ["make", "--no-print-directory", *args, *assignments],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={
            "PATH": f"{path_first}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(path_first.parent),
            # the probe must reach the loopback index directly
            "NO_PROXY": "127.0.0.1",
        },
        timeout=120,
    )


def test_without_a_gpu_the_cpu_torch_build_is_chosen_from_the_cpu_index(
    tmp_path: Path, cpu_index: str
) -> None:
    venv = tmp_path / "venv"
    result = make(
        "torch-index",
        path_first=fake_nvidia_smi(tmp_path / "bin", gpu=False),
        VENV=str(venv),
        TORCH_CPU_INDEX=cpu_index,
        TORCH_INDEX_URL="",
    )
    assert result.returncode == 0, result.stderr
    assert (venv / ".torch-index").read_text().split() == ["--extra-index-url", cpu_index]
    assert f"no NVIDIA GPU: torch==2.13.0, the CPU build from {cpu_index}" in result.stdout


def test_an_unreachable_cpu_index_falls_back_to_the_configured_one_and_says_so(
    tmp_path: Path, closed_port: int
) -> None:
    venv = tmp_path / "venv"
    result = make(
        "torch-index",
        path_first=fake_nvidia_smi(tmp_path / "bin", gpu=False),
        VENV=str(venv),
        TORCH_CPU_INDEX=f"http://127.0.0.1:{closed_port}/whl/cpu",
        TORCH_INDEX_URL="",
    )
    assert result.returncode == 0, result.stderr
    assert (venv / ".torch-index").read_text().strip() == ""  # pip's own configuration
    assert "did not answer within 5 s" in result.stdout
    assert "TORCH_INDEX_URL=" in result.stdout  # how to choose one


def test_a_gpu_gets_pypis_cuda_build_and_torch_index_url_wins_over_everything(
    tmp_path: Path, cpu_index: str
) -> None:
    gpu_bin = fake_nvidia_smi(tmp_path / "bin", gpu=True)
    venv = tmp_path / "venv"
    result = make("torch-index", path_first=gpu_bin, VENV=str(venv), TORCH_CPU_INDEX=cpu_index)
    assert result.returncode == 0, result.stderr
    assert (venv / ".torch-index").read_text().strip() == ""
    assert "NVIDIA GPU found" in result.stdout and "CUDA build" in result.stdout

    chosen = make(
        "torch-index",
        path_first=gpu_bin,
        VENV=str(venv),
        TORCH_INDEX_URL="https://mirror.example/whl/cu130",
    )
    assert (venv / ".torch-index").read_text().split() == [
        "--index-url",
        "https://mirror.example/whl/cu130",
    ]
    assert "from TORCH_INDEX_URL=https://mirror.example/whl/cu130" in chosen.stdout


def test_every_setup_phase_announces_itself_and_pip_is_never_quiet(tmp_path: Path) -> None:
    # -n prints the recipes of a fresh set-up (demo: runtime; test: + the test tools).
    result = make(
        "-n",
        "demo",
        f"{tmp_path / 'venv'}/.test-installed",
        path_first=fake_nvidia_smi(tmp_path / "bin", gpu=False),
        VENV=str(tmp_path / "venv"),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    installs = [line for line in lines if re.search(r"-m pip [^|]*\binstall\b", line)]
    assert len(installs) >= 4  # torch, torchvision, darkroom, the test tools
    for line in installs:
        assert not re.search(r"\s-q\b|--quiet", line), line
    phases = [line for line in lines if line.startswith('echo "==> ')]
    for what in ("creating", "torch==2.13.0", "torchvision", "darkroom", "test tools", "demo"):
        assert any(what in phase for phase in phases), (what, phases)
    # Each phase prints a line every 10 s while it works, and how long it took.
    tickers = [line for line in lines if "still working" in line]
    assert len(tickers) >= 5 and all("-ge 10" in line and "done in" in line for line in tickers)


def test_a_python_without_venv_support_is_told_to_install_python3_venv(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "python3-without-venv"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 1\n")  # `-c 'import ensurepip, venv'` fails, as on Debian
    fake.chmod(0o755)
    result = make("venv", path_first=fake.parent, VENV=str(tmp_path / "venv"), PYTHON=str(fake))
    assert result.returncode != 0
    assert "sudo apt install python3-venv" in result.stdout
    assert not (tmp_path / "venv").exists()


def test_every_setup_recipe_is_valid_shell(tmp_path: Path) -> None:
    """A bare comma inside $(call phase,...) splits the command (the dev tools' install once
    read '.[test' and broke `make lint` on a clean clone): every line make would run for a
    fresh demo, test and lint set-up must parse as shell."""
    venv = tmp_path / "venv"
    result = make(
        "-n",
        "demo",
        f"{venv}/.test-installed",
        f"{venv}/.dev-installed",
        path_first=fake_nvidia_smi(tmp_path / "bin", gpu=False),
        VENV=str(venv),
    )
    assert result.returncode == 0, result.stderr
    # One command per recipe line; a line ending in a backslash continues on the next.
    text = result.stdout.replace("\\\n", "\n")
    commands, pending = [], ""
    for line in result.stdout.splitlines():
        pending += line + "\n"
        if not line.endswith("\\"):
            commands.append(pending)
            pending = ""
    # The phases' commands (a sub-make's own output is printed among them under -n).
    lines = [c for c in commands if "still working" in c]
    assert len(lines) >= 5
    assert "'.[test,dev]'" in text  # the dev extras, whole
    for line in lines:
        check = subprocess.run(["sh", "-n", "-c", line], capture_output=True, text=True)
        assert check.returncode == 0, (line, check.stderr)
