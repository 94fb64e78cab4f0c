"""bench/gpu_check.py --dry-run: the GPU check runs end to end on the CPU before device time is spent.

One subprocess run of the whole script (tiny models, tiny sizes, the real daemon as a
subprocess); the JSON it writes must have every section, each ok or skipped, with sane fields.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # 1.5-4 minutes on 2 cores: seven daemon runs and a plain loop

SECTIONS = ("tasks", "pool", "sharing", "options")
TASKS = (
    "img2img",
    "img2img-sdxl",
    "img2img-flux",
    "ip-adapter",
    "upscale",
    "kontext",
    "kontext-inpaint",
    "inpaint",
    "fill",
    "svd",
    "ltx-i2v",
    "wan-i2v",
    "multi-edit",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> dict:
    out = tmp_path_factory.mktemp("gpu-check")
    cmd = [
        sys.executable,
        str(REPO / "bench" / "gpu_check.py"),
        "--dry-run",
        "--out",
        str(out),
        "--cache",
        str(model_cache),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=1500, env=env, check=False
    )
    path = out / "gpu_check.json"
    assert path.exists(), (
        f"no report; exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    data = json.loads(path.read_text())
    data["_exit"] = proc.returncode
    data["_out"] = out
    return data


def test_every_section_is_ok_or_skipped(report: dict) -> None:
    statuses = {name: report["sections"][name]["status"] for name in SECTIONS}
    assert all(s in ("ok", "skipped") for s in statuses.values()), json.dumps(report["sections"])[
        :6000
    ]
    assert report["_exit"] == 0
    assert report["dry_run"] is True
    for name in SECTIONS:
        assert report["sections"][name]["seconds"] >= 0


def test_environment_names_device_versions_and_dtypes(report: dict) -> None:
    env = report["environment"]
    assert env["device"] == "cpu"
    assert env["torch"] and "cuda" in env and env["dtypes"] == ["float32"]
    assert env["diffusers"] and env["python"]


def test_every_task_ran_in_the_daemon_or_says_why_not(report: dict) -> None:
    run = report["sections"]["tasks"]["runs"]["float32"]
    assert run["daemon"]["exit_code"] == 0
    assert set(run["tasks"]) == set(TASKS)
    for name, task in run["tasks"].items():
        if task["status"] == "skipped":
            assert name == "multi-edit" and "torchvision" in task["reason"]
            continue
        assert task["status"] == "ok", (name, task)
        assert task["outputs"] and task["outputs"][0]["width"] > 0
        assert task["load_seconds"], name  # the worker hook saw the load
    videos = {
        n
        for n, t in run["tasks"].items()
        if t.get("outputs") and t["outputs"][0]["kind"] == "video"
    }
    assert videos == {"svd", "ltx-i2v", "wan-i2v"}


def test_pool_compares_the_loop_with_the_daemon(report: dict) -> None:
    settings = report["sections"]["pool"]["settings"]
    assert list(settings) == ["sd-tiny-64-2"]
    summary = settings["sd-tiny-64-2"]["summary"]
    assert set(summary) == {"naive", "darkroom", "batched"}
    for mode in summary.values():
        assert mode["wall_median"] > 0 and mode["ratio_to_naive"] > 0
        assert mode["loads"] / mode["workers"] == 1
    assert (report["_out"] / "pool-sd-tiny-64-2.json").exists()


def test_two_models_share_the_device_and_swap_only_under_a_budget(report: dict) -> None:
    sharing = report["sections"]["sharing"]
    shared, budget = sharing["shared"], sharing["budget"]
    assert shared["status"] == "ok" and shared["swaps"] == 0
    assert set(shared["models"]) == set(sharing["models"])
    for model in shared["models"].values():
        assert model["loads"] == 1 and model["runs"] == 2 and model["run_peak_mib"] > 0
    assert budget["status"] == "ok" and budget["swaps"] >= 1


def test_the_oom_path_retries_with_batch_one(report: dict) -> None:
    oom = report["sections"]["sharing"]["oom"]
    assert oom["status"] == "ok", oom
    assert oom["oom_retries"][0]["max_batch"] == 1  # the pool's first rung: one at a time
    failed, retried = oom["attempts"][0], oom["attempts"][-1]
    assert "out of memory" in failed["error"] and failed["options"]["max_batch"] == 8
    assert retried["error"] is None and retried["options"]["max_batch"] == 1


def test_options_each_ran_once(report: dict) -> None:
    options = report["sections"]["options"]["options"]
    assert set(options) == {
        "opt-fp16",
        "opt-bf16",
        "opt-compile",
        "opt-offload-model",
        "opt-offload-sequential",
    }
    assert options["opt-fp16"]["status"] == options["opt-bf16"]["status"] == "ok"
    assert options["opt-compile"]["status"] == "skipped"
