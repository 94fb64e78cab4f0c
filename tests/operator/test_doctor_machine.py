"""Issue 20: ``darkroom doctor``'s machine checks — GPU/driver and torch build, tools — and
``check --live``. The GPU is simulated with an ``nvidia-smi`` script on PATH (the torch here
is the CPU build), so the test runs the same on any box."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.operator.test_check_every_problem import darkroom, write
from tests.operator.test_doctor_live import closed_port_url

pytestmark = pytest.mark.slow

CONFIG = """\
state_dir: state
sources: {drop: {path: drop}}
sinks: {out: {path: out}}
worker: {device: DEVICE}
"""
RULE = """\
name: r
match: {source: drop}
steps: [{name: one, model: stub}]
output: {sink: out}
"""


def setup(tmp_path: Path, device: str = "auto", extra: str = "") -> None:
    write(
        tmp_path, {"darkroom.yaml": CONFIG.replace("DEVICE", device) + extra, "rules/r.yaml": RULE}
    )
    (tmp_path / "drop").mkdir(exist_ok=True)


def fake_gpu_path(tmp_path: Path) -> str:
    """PATH with an ``nvidia-smi`` that lists one GPU, ahead of the real PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    tool.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-fake)'\n")
    tool.chmod(0o755)
    return f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"


def torch_is_a_cpu_build() -> bool:
    import importlib.util

    spec = importlib.util.find_spec("torch")
    assert spec is not None and spec.submodule_search_locations
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return not any(lib.glob("libtorch_cuda*"))


def gpu_line(result_stdout: str) -> dict[str, str]:
    return next(r for r in json.loads(result_stdout) if r["check"] == "gpu")


@pytest.mark.skipif(not torch_is_a_cpu_build(), reason="needs the CPU build of torch")
def test_a_cpu_torch_on_a_gpu_box_warns_with_the_fix(tmp_path: Path) -> None:
    setup(tmp_path)
    result = darkroom("doctor", "--json", cwd=tmp_path, env={"PATH": fake_gpu_path(tmp_path)})
    gpu = gpu_line(result.stdout)
    assert gpu["status"] == "warn", gpu
    assert "NVIDIA H200" in gpu["message"] and "CPU build" in gpu["message"]
    assert "CUDA build of torch" in gpu["fix"]
    assert result.returncode == 1  # a warning at worst


def test_cuda_configured_without_a_gpu_fails(tmp_path: Path) -> None:
    setup(tmp_path, device="cuda:0")
    empty = tmp_path / "nobin"
    empty.mkdir()
    result = darkroom("doctor", "--json", cwd=tmp_path, env={"PATH": f"{empty}:/usr/bin:/bin"})
    if any(Path(p, "nvidia-smi").exists() for p in ("/usr/bin", "/bin")):
        pytest.skip("this box has a real nvidia-smi")
    gpu = gpu_line(result.stdout)
    assert gpu["status"] == "fail" and "no NVIDIA GPU answers" in gpu["message"]
    assert "worker.device: cpu" in gpu["fix"]
    assert result.returncode == 2


def test_check_live_adds_the_doctor_lines(tmp_path: Path) -> None:
    hook_url = closed_port_url()
    setup(tmp_path, device="cpu", extra=f'webhooks: {{urls: ["{hook_url}"]}}\n')
    result = darkroom("check", "--live", cwd=tmp_path)
    assert result.stdout.startswith("ok: 1 rule(s)")
    lines = result.stdout.splitlines()
    assert any(line.startswith("ok    gpu: ") for line in lines)
    assert any(line.startswith("ok    tool ffmpeg: ") for line in lines)
    hook = next(line for line in lines if f"webhook {hook_url}" in line)
    assert hook.startswith("fail") and "unreachable" in hook and "(fix: " in hook
    assert result.returncode == 2
