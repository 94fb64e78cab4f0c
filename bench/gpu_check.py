"""The daemon on a real GPU: one prepared script that checks and measures it (issue 17).

    python3 bench/gpu_check.py                       # CUDA: ~8 minutes on an H100
    .venv/bin/python bench/gpu_check.py --dry-run    # the same script on the CPU, tiny everything

Writes ``gpu_check.json`` (and one ``pool-*.json`` per pool setting) under ``bench/results/gpu/``
(``--out``), rewritten after every section so a killed run still leaves what it measured.

Sections, each time-boxed and failure-isolated (an error is recorded and the next section runs),
all inside one global deadline (``--deadline``):

1. ``tasks``   the real daemon (``darkroom process``, a subprocess with a generated config and
               rule) runs every backend task on its tiny profile, once per dtype (fp16, bf16);
               the multi-image edit (Qwen-Image-Edit-Plus) is built here from a tiny config and
               is skipped, with the reason, where torchvision is missing.
2. ``pool``    bench/pool_bench.py at real sizes: SD 1.5 shapes at 512 px and SDXL shapes at
               1024 px, fp16, a 4-step and a 20-step setting: naive loop vs daemon vs dynamic
               batching, GPU busy fraction (NVML), loads per worker.
3. ``sharing`` two rules on two models in one daemon on one GPU: loads, swaps (with and without a
               memory budget) and each profile's memory high-water mark; then the OOM path
               (batch 1, then CPU offload) forced by ``torch.cuda.set_per_process_memory_fraction``.
4. ``options`` the profile options fp16, bf16, torch.compile and CPU offload (model, sequential),
               each once, checked on the loaded pipeline.

How the daemon's worker is observed: the daemon runs as ``python bench/gpu_check.py --daemon
ARGS`` (the CLI's own entry point). Its workers are spawned, and a spawned child re-runs its
parent's main file as ``__mp_main__``: that is where this file wraps ``backends.backend_class``
to record each load and run (seconds, peak device memory, whether the denoiser is compiled or
offloaded) into a JSON-lines file, and applies the memory cap. Nothing in the daemon changes.
So this file imports only the standard library at the top: workers import it too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

ENV_EVENTS = "DARKROOM_GPU_CHECK_EVENTS"  # worker: append load/run events here
ENV_FRACTION = "DARKROOM_GPU_CHECK_MEMORY_FRACTION"  # worker: cap the CUDA allocator
ENV_FAKE_OOM = "DARKROOM_GPU_CHECK_FAKE_OOM"  # worker (CPU dry run): first batched run fails OOM
MIB = 1024**2

TINY_TASKS: list[tuple[str, str, dict[str, Any]]] = [
    # (task, profile, step fields beyond model/input/seeds): every backend task once
    ("img2img", "tiny", {}),
    ("img2img-sdxl", "tiny-sdxl", {}),
    ("img2img-flux", "tiny-flux", {}),
    ("ip-adapter", "tiny-ip-adapter", {"references": ["refs/*.png"]}),
    ("upscale", "tiny-upscale", {}),
    ("kontext", "tiny-kontext", {}),
    ("kontext-inpaint", "tiny-kontext-inpaint", {"mask": "sidecar"}),
    ("inpaint", "tiny-inpaint", {"mask": "sidecar"}),
    ("fill", "tiny-fill", {"mask": "sidecar"}),
    # webp/gif, not mp4: imageio-ffmpeg does not fit the GPU machine's carry limit
    ("svd", "tiny-svd", {"frames": 4, "video_format": "webp"}),
    ("ltx-i2v", "tiny-ltx", {"frames": 9, "video_format": "webp"}),
    ("wan-i2v", "tiny-wan", {"frames": 5, "video_format": "gif"}),
    ("multi-edit", "gc-multi-edit", {"references": ["refs/*.png"]}),
]


# == inside the daemon's worker process ==========================================================


def _record(event: dict[str, Any]) -> None:
    path = os.environ.get(ENV_EVENTS)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(event, default=str) + "\n")


def _memory_now(device: str) -> dict[str, Any]:
    """Peak and current memory since the last reset: CUDA allocator, else this process's RSS."""
    if device.startswith("cuda"):
        import torch

        return {
            "peak_mib": round(torch.cuda.max_memory_allocated(device) / MIB, 1),
            "allocated_mib": round(torch.cuda.memory_allocated(device) / MIB, 1),
        }
    import resource

    rss = 0
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    # ru_maxrss is a process-lifetime peak (KiB): on the CPU there is no per-call reset
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_mib": round(peak / MIB, 1), "allocated_mib": round(rss / MIB, 1)}


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)


_capped: set[str] = set()


def _apply_memory_cap(device: str) -> None:
    """The OOM section's cap, set once per device before this worker's first load."""
    fraction = os.environ.get(ENV_FRACTION)
    if not fraction or not device.startswith("cuda") or device in _capped:
        return
    import torch

    torch.cuda.set_per_process_memory_fraction(float(fraction), torch.device(device))
    _capped.add(device)
    _record(
        {"phase": "memory-cap", "device": device, "fraction": float(fraction), "pid": os.getpid()}
    )


def _pipeline_facts(backend: Any) -> dict[str, Any]:
    """What the loaded pipeline looks like: compiled denoiser? offloaded? where are the weights?"""
    pipe = getattr(backend, "_pipe", None)
    if pipe is None:
        return {}
    facts: dict[str, Any] = {"pipeline": type(pipe).__name__}
    denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    if denoiser is not None:
        facts["compiled"] = hasattr(denoiser, "_orig_mod") or "Optimized" in type(denoiser).__name__
        try:
            facts["denoiser_device"] = str(next(denoiser.parameters()).device)
            facts["denoiser_dtype"] = str(next(denoiser.parameters()).dtype)
        except (StopIteration, AttributeError, TypeError):
            pass
    components = getattr(pipe, "components", {}) or {}
    facts["offload_hooks"] = sorted(n for n, m in components.items() if hasattr(m, "_hf_hook"))
    return facts


def _describe(spec: Any) -> dict[str, Any]:
    options = {k: v for k, v in getattr(spec, "options", ())}
    keep = ("max_batch", "cpu_offload", "compile")
    return {
        "task": spec.task,
        "model": spec.model,
        "dtype": spec.dtype,
        "device": spec.device,
        "options": {k: options[k] for k in keep if k in options},
    }


def _fake_oom(spec: Any, request: Any) -> None:
    """Dry run only: the first call of more than one output fails as a CUDA OOM would."""
    if not os.environ.get(ENV_FAKE_OOM) or _fake_oom.done:  # type: ignore[attr-defined]
        return
    if len(request.seeds) * len(request.images) > 1 and spec.option("max_batch") != 1:
        from backends.base import DeviceError

        _fake_oom.done = True  # type: ignore[attr-defined]
        raise DeviceError(
            "CUDA out of memory (simulated by gpu_check --dry-run)", out_of_memory=True
        )


_fake_oom.done = False  # type: ignore[attr-defined]


def _observed(cls: type) -> type:
    """A subclass of a backend class whose load and run are recorded."""

    def load(self: Any) -> None:
        if getattr(self, "_pipe", None) is not None:
            return cls.load(self)  # backends call load() again at the start of run(): a no-op
        spec = self.spec
        _apply_memory_cap(spec.device)
        _reset_peak(spec.device)
        before = _memory_now(spec.device)["allocated_mib"]
        started = time.perf_counter()
        event = {"phase": "load", "pid": os.getpid(), "before_mib": before, **_describe(spec)}
        try:
            cls.load(self)
        except Exception as exc:
            _record({**event, "error": f"{type(exc).__name__}: {exc}"[:500]})
            raise
        seconds = time.perf_counter() - started
        _record(
            {
                **event,
                "seconds": round(seconds, 3),
                **_memory_now(spec.device),
                **_pipeline_facts(self),
            }
        )

    def run(self: Any, request: Any) -> Any:
        spec = self.spec
        _reset_peak(spec.device)
        before = _memory_now(spec.device)["allocated_mib"]
        started = time.perf_counter()
        batch = len(request.seeds) * max(1, len(request.images))
        event = {
            "phase": "run",
            "pid": os.getpid(),
            "batch": batch,
            "before_mib": before,
            **_describe(spec),
        }
        try:
            _fake_oom(spec, request)
            result = cls.run(self, request)
        except Exception as exc:
            _record(
                {**event, "error": f"{type(exc).__name__}: {exc}"[:500], **_memory_now(spec.device)}
            )
            raise
        seconds = time.perf_counter() - started
        _record({**event, "seconds": round(seconds, 3), **_memory_now(spec.device)})
        return result

    def replace(self: Any, spec: Any) -> None:
        """The pool's OOM fallback re-places a loaded pipeline (cpu_offload) in place."""
        started = time.perf_counter()
        event = {"phase": "replace", "pid": os.getpid(), **_describe(spec)}
        try:
            cls.replace(self, spec)
        except Exception as exc:
            _record({**event, "error": f"{type(exc).__name__}: {exc}"[:500]})
            raise
        _record(
            {**event, "seconds": round(time.perf_counter() - started, 3), **_pipeline_facts(self)}
        )

    methods: dict[str, Any] = {"load": load, "run": run, "__module__": cls.__module__}
    if hasattr(cls, "replace"):
        methods["replace"] = replace
    return type(cls.__name__, (cls,), methods)


def install_worker_hooks() -> None:
    """In a spawned worker: record every backend's load and run (see the module docstring)."""
    import backends

    original = backends.backend_class
    made: dict[type, type] = {}

    def backend_class(task: str) -> type:
        cls = original(task)
        if cls not in made:
            made[cls] = _observed(cls)
        return made[cls]

    backends.backend_class = backend_class  # type: ignore[assignment]


if __name__ == "__mp_main__" and os.environ.get(ENV_EVENTS):
    install_worker_hooks()


# == the daemon, as its command line ==============================================================


def cli_main(argv: list[str]) -> int:
    """The ``darkroom`` entry point named in pyproject.toml (it moves with the package layout)."""
    target = "daemon.cli:main"
    try:
        import tomllib

        scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
        target = scripts.get("darkroom", target)
    except (OSError, KeyError, ValueError, ImportError):
        pass
    module, _, attr = target.partition(":")
    import importlib

    return int(getattr(importlib.import_module(module), attr)(argv) or 0)


@dataclass
class DaemonRun:
    """One ``darkroom process`` run in its own folder: what it wrote and what its worker did."""

    work: Path
    exit_code: int | None = None
    seconds: float = 0.0
    timed_out: bool = False
    log: str = ""
    manifests: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def log_events(self, pattern: str) -> list[dict[str, Any]]:
        """The daemon's JSON log lines whose event matches ``pattern``."""
        found = []
        for line in self.log.splitlines():
            try:
                # the progress bar shares the stream: a log line may follow it on one line
                item = json.loads(line[line.find("{") :])
            except ValueError:
                continue
            if isinstance(item, dict) and re.search(pattern, str(item.get("event", ""))):
                found.append(item)
        return found

    def steps(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for m in self.manifests for s in m.get("steps", [])}

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 2),
            "timed_out": self.timed_out,
            "manifests": [m.get("status") for m in self.manifests],
        }
        if self.exit_code != 0:
            out["log_tail"] = self.log[-3000:]
        return out


@dataclass
class Check:
    """Settings shared by every section, fixed by ``--dry-run`` or the GPU defaults."""

    dry_run: bool
    device: str
    dtypes: list[str]
    cache: Path
    out: Path
    threads: int
    deadline: float  # time.monotonic() by which everything must have ended
    keep: bool

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timeout(self, cap: float) -> float:
        return max(1.0, min(cap, self.left()))


def write_config(
    work: Path,
    check: Check,
    rules: dict[str, str],
    *,
    profiles: dict[str, Any],
    worker: dict[str, Any] | None = None,
) -> Path:
    """A config and rules folder in ``work``, the way a user writes them (README: Configuration)."""
    for name in ("drop", "out", "rules"):
        (work / name).mkdir(parents=True, exist_ok=True)
    for name, text in rules.items():
        (work / "rules" / f"{name}.yaml").write_text(text)
    settings = {
        "state_dir": "state",
        "rules_dir": "rules",
        "model_cache": str(check.cache),
        "rules_reload_interval": 0,
        "sources": {"drop": {"type": "folder", "path": "drop"}},
        "sinks": {"out": {"type": "folder", "path": "out"}},
        "profiles": profiles,
        "worker": {
            "device": check.device,
            "threads": check.threads,
            "job_timeout": 600,
            "stop_timeout": 10,
            **(worker or {}),
        },
        # one attempt: a check wants the first error, not three retries of it
        "jobs": {"max_attempts": 1, "retry_backoff": 0.1},
        "digest": {"enabled": False},
        "metrics": {"enabled": False},
        "log": {"level": "info", "format": "json"},
    }
    config = work / "darkroom.yaml"
    config.write_text(json.dumps(settings, indent=2, default=str))  # JSON is YAML
    return config


def run_process(
    work: Path, config: Path, files: list[Path], timeout: float, env: dict[str, str] | None = None
) -> DaemonRun:
    """``darkroom process FILES --config CONFIG`` as a subprocess, killed at ``timeout``."""
    run = DaemonRun(work)
    events = work / "events.jsonl"
    events.unlink(missing_ok=True)
    log_path = work / "daemon.log"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--daemon",
        "process",
        *[str(f) for f in files],
        "--config",
        str(config),
    ]
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        ENV_EVENTS: str(events),
        **(env or {}),
    }
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        # its own session: on a timeout the whole group (daemon + workers) is killed
        proc = subprocess.Popen(
            cmd,
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
        try:
            run.exit_code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            run.timed_out = True
            _kill_group(proc)
    run.seconds = time.perf_counter() - started
    run.log = log_path.read_text(errors="replace")
    for path in sorted((work / "out").rglob("manifest.json")):
        try:
            run.manifests.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    if events.exists():
        run.events = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    return run


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def make_image(path: Path, size: int, color: tuple[int, int, int]) -> Path:
    """An input with some structure (a gradient and a block)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), color)
    draw = ImageDraw.Draw(image)
    for y in range(0, size, 4):
        draw.line([(0, y), (size, y)], fill=(y * 255 // size, 128, 255 - y * 255 // size))
    draw.rectangle([size // 4, size // 4, size * 3 // 4, size * 3 // 4], fill=(240, 220, 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def make_mask(path: Path, size: int) -> Path:
    from PIL import Image

    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, size * 3 // 4, size * 3 // 4))
    mask.save(path)
    return path


def loads_by_profile(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model: loads, load seconds and the memory high-water marks of its loads and runs."""
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.get("phase") not in ("load", "run") or "model" not in e:
            continue
        entry = out.setdefault(
            str(e["model"]),
            {
                "loads": 0,
                "load_seconds": [],
                "runs": 0,
                "load_peak_mib": 0.0,
                "run_peak_mib": 0.0,
                "errors": [],
            },
        )
        if e.get("error"):
            entry["errors"].append(e["error"])
            continue
        if e["phase"] == "load":
            entry["loads"] += 1
            entry["load_seconds"].append(e.get("seconds"))
            entry["load_peak_mib"] = max(entry["load_peak_mib"], e.get("peak_mib") or 0.0)
            # what this load added: other models may already be on the device
            entry["weights_mib"] = round(
                (e.get("allocated_mib") or 0) - (e.get("before_mib") or 0), 1
            )
        else:
            entry["runs"] += 1
            entry["run_peak_mib"] = max(entry["run_peak_mib"], e.get("peak_mib") or 0.0)
            working = (e.get("peak_mib") or 0.0) - (e.get("before_mib") or 0.0)
            entry["run_working_mib"] = round(max(entry.get("run_working_mib", 0.0), working), 1)
    return out


# == section 1: every task at its tiny size, per dtype ============================================


def torchvision_missing() -> str | None:
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return "torchvision is not installed: Qwen2-VL's processor needs it (GPU machine only)"
    return None


def build_tiny_qwen(target: Path, timeout: float) -> Path:
    """A tiny random Qwen-Image-Edit-Plus pipeline saved to ``target`` (in a child process)."""
    if (target / "model_index.json").is_file():
        return target
    cmd = [sys.executable, str(Path(__file__).resolve()), "--build-qwen", str(target)]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building the tiny Qwen-Image-Edit-Plus failed:\n{proc.stderr[-3000:]}")
    return target


def _byte_level_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table (what Qwen2's byte-level BPE tokenizes into)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def build_qwen_child(target: Path) -> None:
    """``--build-qwen DIR``: the shapes of diffusers' own QwenImageEditPlus tests, but with a
    tokenizer written here (their tests fetch one from the hub) and saved like a real model."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPlusPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2Tokenizer,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
    )

    work = Path(tempfile.mkdtemp(prefix="qwen-tok-"))
    vocab = {c: i for i, c in enumerate(_byte_level_alphabet())}
    (work / "vocab.json").write_text(json.dumps(vocab))
    (work / "merges.txt").write_text("#version: 0.2\n")
    special = [
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    tokenizer = Qwen2Tokenizer(
        vocab_file=str(work / "vocab.json"),
        merges_file=str(work / "merges.txt"),
        unk_token=None,
        bos_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
    try:
        processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tokenizer)
    except (TypeError, ValueError, AttributeError, ImportError):
        from transformers import Qwen2VLVideoProcessor

        processor = Qwen2VLProcessor(
            image_processor=Qwen2VLImageProcessor(),
            tokenizer=tokenizer,
            video_processor=Qwen2VLVideoProcessor(),
        )
    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    z_dim = 4
    vae = AutoencoderKLQwenImage(
        base_dim=z_dim * 6,
        z_dim=z_dim,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    text = {
        "hidden_size": 16,
        "intermediate_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "vocab_size": len(tokenizer),
        "rope_theta": 1000000.0,
        "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
    }
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
        },
        hidden_size=16,
        vocab_size=len(tokenizer),
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        vision_token_id=ids["<|vision_pad|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()  # built in train mode
    pipe = QwenImageEditPlusPipeline(
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        processor=processor,
    )
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    os.replace(tmp, target)
    shutil.rmtree(work, ignore_errors=True)


def tasks_rule(tasks: list[tuple[str, str, dict[str, Any]]]) -> str:
    steps = []
    for i, (name, profile, extra) in enumerate(tasks):
        step = {"name": name, "input": "source", "model": profile, "seeds": [i + 1], **extra}
        steps.append("  - " + json.dumps(step))
    return (
        'name: every-task\nmatch: {source: drop, include: ["**/*.png"]}\n'
        'prompt: "{stem}, golden hour"\nsteps:\n' + "\n".join(steps) + "\noutput: {sink: out}\n"
    )


def section_tasks(check: Check, work: Path, cap: float) -> dict[str, Any]:
    started = time.monotonic()
    tasks = list(TINY_TASKS)
    result: dict[str, Any] = {"runs": {}}
    skipped: dict[str, str] = {}
    qwen: Path | None = None
    reason = torchvision_missing()
    if reason is None:
        try:
            qwen = build_tiny_qwen(check.cache / "gpu-check" / "qwen-edit-tiny", check.timeout(120))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            reason = f"could not build the tiny Qwen-Image-Edit-Plus: {exc}"[-2000:]
    if reason is not None:
        skipped["multi-edit"] = reason
        tasks = [t for t in tasks if t[0] != "multi-edit"]
    for n, dtype in enumerate(check.dtypes):
        # an even share of what is left, so the second dtype is not starved by the first
        share = (cap - (time.monotonic() - started)) / (len(check.dtypes) - n)
        if check.left() < 5 or share < 5:
            result["runs"][dtype] = {"status": "skipped", "reason": "out of time"}
            continue
        result["runs"][dtype] = run_tasks(check, work / dtype, tasks, dtype, qwen, share, skipped)
    statuses = [r["status"] for r in result["runs"].values()]
    result["status"] = "ok" if statuses and all(s == "ok" for s in statuses) else "failed"
    if all(s == "skipped" for s in statuses):
        result["status"] = "skipped"
    return result


def run_tasks(
    check: Check,
    work: Path,
    tasks: list[tuple[str, str, dict[str, Any]]],
    dtype: str,
    qwen: Path | None,
    timeout: float,
    skipped: dict[str, str],
) -> dict[str, Any]:
    profiles: dict[str, Any] = {profile: {"dtype": dtype} for _, profile, _ in tasks}
    if qwen is not None:
        profiles["gc-multi-edit"] = {"like": "tiny-multi-edit", "model": str(qwen), "dtype": dtype}
    config = write_config(
        work, check, {"every-task": tasks_rule(tasks)}, profiles=profiles, worker={"max_batch": 1}
    )
    for i, color in enumerate([(30, 160, 90), (160, 60, 200)]):  # ip-adapter, multi-edit
        make_image(work / "rules" / "refs" / f"ref-{i}.png", 64, color)
    inputs = work / "inputs"
    make_mask(make_image(inputs / "room.png", 64, (90, 140, 200)).with_name("room.mask.png"), 64)
    run = run_process(work, config, [inputs / "room.png"], timeout)
    steps = run.steps()
    events = [e for e in run.events if e.get("phase") in ("load", "run")]
    per_task: dict[str, Any] = {}
    for name, profile, _ in tasks:
        step = steps.get(name, {})
        outputs = step.get("outputs") or []
        loads = [e for e in events if e["phase"] == "load" and e.get("task") == _task_of(name)]
        runs = [e for e in events if e["phase"] == "run" and e.get("task") == _task_of(name)]
        entry = {
            "status": "ok" if step.get("state") == "done" else "failed",
            "profile": profile,
            "state": step.get("state"),
            "seconds": step.get("seconds"),
            "outputs": [
                {k: o.get(k) for k in ("width", "height", "kind", "frames", "seconds")}
                for o in outputs
            ],
            "load_seconds": [e.get("seconds") for e in loads if "model" in e],
            "peak_mib": max([e.get("peak_mib") or 0 for e in runs], default=None),
        }
        if step.get("error") or entry["status"] != "ok":
            entry["error"] = step.get("error") or "no step in the manifest (see log_tail)"
        per_task[name] = entry
    for name, why in skipped.items():
        per_task[name] = {"status": "skipped", "reason": why}
    ok = run.exit_code == 0 and all(t["status"] in ("ok", "skipped") for t in per_task.values())
    return {"status": "ok" if ok else "failed", "daemon": run.summary(), "tasks": per_task}


def _task_of(step_name: str) -> str:
    """The backend task a step of the every-task rule runs (img2img-sdxl -> img2img)."""
    return {"img2img-sdxl": "img2img", "img2img-flux": "img2img"}.get(step_name, step_name)


# == section 2: pool_bench at real sizes ==========================================================


@dataclass(frozen=True)
class PoolSetting:
    name: str
    model: str
    size: int
    steps: int
    files: int


def pool_settings(check: Check) -> list[PoolSetting]:
    if check.dry_run:
        return [PoolSetting("sd-tiny-64-2", "random:sd-tiny", 64, 2, 2)]
    # most telling first: the section's time may run out before the last one
    return [
        PoolSetting("sd15-512-4", "random:sd15", 512, 4, 8),
        PoolSetting("sdxl-1024-4", "random:sdxl", 1024, 4, 8),
        PoolSetting("sd15-512-20", "random:sd15", 512, 20, 8),
        PoolSetting("sdxl-1024-20", "random:sdxl", 1024, 20, 6),
    ]


def prebuild_models(check: Check) -> subprocess.Popen | None:
    """Build the random real-size models in the background (CPU work while section 1 runs)."""
    models = sorted({s.model for s in pool_settings(check)} | set(sharing_models(check)))
    code = (
        "import sys; from pathlib import Path; from backends.random_models import resolve_model_dir\n"
        "for m in sys.argv[2:]: resolve_model_dir(m, Path(sys.argv[1]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(check.cache), *models],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def section_pool(
    check: Check, work: Path, cap: float, prebuild: subprocess.Popen | None
) -> dict[str, Any]:
    started = time.monotonic()
    result: dict[str, Any] = {"settings": {}}
    if prebuild is not None:
        try:
            prebuild.wait(check.timeout(cap))
        except subprocess.TimeoutExpired:
            pass  # pool_bench builds what is missing itself, inside its own time box
        if prebuild.returncode not in (0, None):
            result["prebuild_error"] = (prebuild.stderr.read() if prebuild.stderr else "")[-2000:]
    for setting in pool_settings(check):
        left = min(cap - (time.monotonic() - started), check.left())
        if left < 10:
            result["settings"][setting.name] = {"status": "skipped", "reason": "out of time"}
            continue
        result["settings"][setting.name] = run_pool_setting(check, work, setting, left)
    statuses = [s["status"] for s in result["settings"].values()]
    result["status"] = "ok" if "ok" in statuses and "failed" not in statuses else "failed"
    if all(s == "skipped" for s in statuses):
        result["status"] = "skipped"
    return result


def run_pool_setting(
    check: Check, work: Path, setting: PoolSetting, timeout: float
) -> dict[str, Any]:
    out = check.out / f"pool-{setting.name}.json"
    out.unlink(missing_ok=True)
    dtype = "float32" if check.dry_run else "float16"
    cmd = [
        sys.executable,
        str(BENCH / "pool_bench.py"),
        "--device",
        check.device,
        "--dtype",
        dtype,
        "--model",
        setting.model,
        "--size",
        str(setting.size),
        "--steps",
        str(setting.steps),
        "--strength",
        "1.0",
        "--files",
        str(setting.files),
        "--runs",
        "1",
        "--max-batch",
        "4",
        "--threads",
        str(check.threads),
        "--cache",
        str(check.cache),
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    entry: dict[str, Any] = {
        "params": {
            "model": setting.model,
            "size": setting.size,
            "steps": setting.steps,
            "files": setting.files,
            "dtype": dtype,
        }
    }
    log = work / f"pool-{setting.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
        )
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            code = None
    entry["seconds"] = round(time.perf_counter() - started, 2)
    text = log.read_text(errors="replace")
    if code != 0 or not out.exists():
        entry.update(status="timeout" if code is None else "failed", log_tail=text[-3000:])
        return entry
    data = json.loads(out.read_text())
    entry.update(status="ok", json=out.name, summary=data.get("summary"), goals=data.get("goals"))
    return entry


# == section 3: two rules, two models, one GPU; then the OOM path ================================


def sharing_models(check: Check) -> list[str]:
    return (
        ["random:sd-tiny", "random:sdxl-tiny"] if check.dry_run else ["random:sd15", "random:sdxl"]
    )


def sharing_profiles(check: Check) -> dict[str, Any]:
    size = 64 if check.dry_run else 512
    a, b = sharing_models(check)
    dtype = "float32" if check.dry_run else "float16"
    turbo = {"steps": 4, "strength": 1.0, "guidance": 0.0}
    return {
        "gc-a": {
            "task": "img2img",
            "model": a,
            "dtype": dtype,
            "max_side": size,
            "defaults": turbo,
            "options": {"max_batch": 8},
        },
        "gc-b": {
            "task": "img2img",
            "model": b,
            "dtype": dtype,
            "max_side": size,
            "defaults": turbo,
        },
    }


def two_rules(variants_a: int = 1) -> dict[str, str]:
    rule = (
        'name: {name}\nmatch: {{source: drop, include: ["**/{prefix}-*.png"]}}\n'
        'prompt: "{{stem}}, studio light"\nsteps:\n'
        "  - {{name: one, model: {profile}, variants: {variants}, seed: 3}}\noutput: {{sink: out}}\n"
    )
    return {
        "rule-a": rule.format(name="rule-a", prefix="a", profile="gc-a", variants=variants_a),
        "rule-b": rule.format(name="rule-b", prefix="b", profile="gc-b", variants=1),
    }


def sharing_inputs(work: Path, size: int, per_rule: int) -> list[Path]:
    files = []
    for i in range(per_rule):  # interleaved a, b, a, b: the order that would swap most
        files.append(make_image(work / "inputs" / f"a-{i}.png", size, (200, 90 + i * 20, 40)))
        files.append(make_image(work / "inputs" / f"b-{i}.png", size, (40, 90 + i * 20, 200)))
    return files


def sharing_run(
    check: Check,
    work: Path,
    timeout: float,
    *,
    worker: dict[str, Any],
    variants_a: int = 1,
    per_rule: int = 2,
    env: dict[str, str] | None = None,
    only_a: bool = False,
) -> tuple[DaemonRun, dict[str, Any]]:
    size = 64 if check.dry_run else 512
    rules = two_rules(variants_a)
    if only_a:  # the OOM run: the cap is sized for model A alone, and rules' models are preloaded
        rules.pop("rule-b")
    config = write_config(
        work,
        check,
        rules,
        profiles=sharing_profiles(check),
        worker={"max_batch": 1, **worker},
    )
    files = sharing_inputs(work, size, per_rule)
    if only_a:
        files = [f for f in files if f.name.startswith("a-")]
    run = run_process(work, config, files, timeout, env)
    models = loads_by_profile(run.events)
    loads = sum(m["loads"] for m in models.values())
    done = [m.get("status") for m in run.manifests]
    entry = {
        "status": "ok"
        if run.exit_code == 0 and done and all(s == "done" for s in done)
        else "failed",
        "daemon": run.summary(),
        "loads": loads,
        "swaps": max(0, loads - len(models)),  # a load beyond each model's first
        "models": models,
    }
    return run, entry


def section_sharing(check: Check, work: Path, cap: float) -> dict[str, Any]:
    started = time.monotonic()
    result: dict[str, Any] = {"models": sharing_models(check)}

    def left() -> float:
        return min(cap - (time.monotonic() - started), check.left())

    # (a) both models fit: each loads once and stays; the high-water marks per profile
    run, result["shared"] = sharing_run(check, work / "shared", left() / 3, worker={})
    # (b) a budget below one model: every switch of rule is a swap (LRU, newest kept)
    if left() > 10:
        _, result["budget"] = sharing_run(
            check, work / "budget", left() / 2, worker={"memory_budget_gb": 0.001}
        )
        result["budget"]["memory_budget_gb"] = 0.001
    else:
        result["budget"] = {"status": "skipped", "reason": "out of time"}
    # (c) the OOM path: a cap that fits batch 1 of model A but not its batch of 8
    if left() > 10:
        result["oom"] = oom_run(check, work / "oom", left(), run)
    else:
        result["oom"] = {"status": "skipped", "reason": "out of time"}
    parts = [result[k]["status"] for k in ("shared", "budget", "oom")]
    result["status"] = "ok" if all(p in ("ok", "skipped") for p in parts) else "failed"
    return result


def memory_fraction(check: Check, shared: DaemonRun) -> tuple[float | None, dict[str, Any]]:
    """A cap (fraction of the card) that fits model A's weights and a batch-1 call with room to
    spare (the allocator reserves more than it hands out), but not a batch of 8."""
    import torch

    total = torch.cuda.get_device_properties(torch.device(check.device)).total_memory
    a = sharing_models(check)[0]
    loads = [
        e
        for e in shared.events
        if e.get("phase") == "load" and e.get("model") == a and "error" not in e
    ]
    runs = [
        e
        for e in shared.events
        if e.get("phase") == "run" and e.get("model") == a and "error" not in e
    ]
    if not loads or not runs:
        return None, {
            "reason": "model A's weights or batch-1 peak were not measured in the shared run"
        }
    weights = (float(loads[0]["allocated_mib"]) - float(loads[0].get("before_mib") or 0)) * MIB
    working = max(float(e["peak_mib"]) - float(e.get("before_mib") or 0) for e in runs) * MIB
    cap = 1.1 * weights + 2.5 * max(working, 128 * MIB) + 256 * MIB
    return min(0.95, cap / total), {
        "weights_mib": round(weights / MIB),
        "batch1_working_mib": round(working / MIB),
        "cap_mib": round(cap / MIB),
        "total_mib": round(total / MIB),
    }


def oom_run(check: Check, work: Path, timeout: float, shared: DaemonRun) -> dict[str, Any]:
    env: dict[str, str] = {}
    info: dict[str, Any] = {}
    if check.device.startswith("cuda"):
        fraction, info = memory_fraction(check, shared)
        if fraction is None:
            return {"status": "skipped", **info}
        env[ENV_FRACTION] = f"{fraction:.4f}"
        info["fraction"] = round(fraction, 4)
    else:
        env[ENV_FAKE_OOM] = "1"
        info["simulated"] = "CPU: the worker raises a CUDA-style OOM on its first batched call"
    variants = 2 if check.dry_run else 8  # on the CPU, 8 serial retries cost 18 s for nothing
    run, entry = sharing_run(
        check, work, timeout, worker={}, variants_a=variants, per_rule=1, env=env, only_a=True
    )
    retries = run.log_events("out of memory")
    entry.update(info)
    entry["oom_retries"] = [
        {k: r.get(k) for k in ("event", "reason", "max_batch", "cpu_offload")} for r in retries
    ]
    entry["attempts"] = [
        {k: e.get(k) for k in ("phase", "batch", "options", "seconds", "peak_mib", "error")}
        for e in run.events
        if e.get("model") == sharing_models(check)[0] and e.get("phase") in ("run", "replace")
    ]
    if not retries:  # the cap did not bite: the path was not exercised
        entry["status"] = "failed"
        entry["error"] = "no out-of-memory retry happened under the cap"
    return entry


# == section 4: dtype, compile and offload options, each once ====================================


def option_profiles(check: Check) -> dict[str, dict[str, Any]]:
    base = "tiny"
    profiles = {
        "opt-fp16": {"like": base, "dtype": "float16"},
        "opt-bf16": {"like": base, "dtype": "bfloat16"},
        "opt-compile": {"like": base, "dtype": check.dtypes[0], "options": {"compile": True}},
        "opt-offload-model": {
            "like": base,
            "dtype": check.dtypes[0],
            "options": {"cpu_offload": "model"},
        },
        "opt-offload-sequential": {
            "like": base,
            "dtype": check.dtypes[0],
            "options": {"cpu_offload": "sequential"},
        },
    }
    if check.dry_run:
        # a CPU has no device to offload from, and compiling takes 15-45 s on 2 cores
        for name in ("opt-compile", "opt-offload-model", "opt-offload-sequential"):
            profiles.pop(name)
    return profiles


def section_options(check: Check, work: Path, cap: float) -> dict[str, Any]:
    profiles = option_profiles(check)
    steps = "\n".join(
        f"  - {{name: {name}, input: source, model: {name}, seeds: [5]}}" for name in profiles
    )
    rule = (
        'name: options\nmatch: {source: drop, include: ["**/*.png"]}\n'
        f'prompt: "{{stem}}, soft light"\nsteps:\n{steps}\noutput: {{sink: out}}\n'
    )
    config = write_config(
        work, check, {"options": rule}, profiles=profiles, worker={"max_batch": 1}
    )
    # two files: a compiled denoiser's first call compiles, its second shows the steady state
    files = [make_image(work / "inputs" / f"o-{i}.png", 64, (120, 40 * i, 90)) for i in range(2)]
    run = run_process(work, config, files, check.timeout(cap))
    result: dict[str, Any] = {"daemon": run.summary(), "options": {}}
    per_step: dict[str, list[dict[str, Any]]] = {}
    for manifest in run.manifests:
        for step in manifest.get("steps", []):
            per_step.setdefault(step["name"], []).append(step)
    loads = [e for e in run.events if e.get("phase") == "load"]
    runs = [e for e in run.events if e.get("phase") == "run"]
    for name, fields in profiles.items():
        options = fields.get("options", {})
        mine = [  # the load of exactly this profile's dtype and options
            e
            for e in loads
            if e.get("dtype") == _device_dtype(check, fields["dtype"])
            and _placement_options(e) == options
        ]
        steps_done = per_step.get(name, [])
        entry: dict[str, Any] = {
            "status": "ok"
            if steps_done and all(s.get("state") == "done" for s in steps_done)
            else "failed",
            "dtype": fields["dtype"],
            "options": options,
            "seconds": [s.get("seconds") for s in steps_done],
            "errors": [s.get("error") for s in steps_done if s.get("error")],
            "loaded": mine[-1] if mine else None,
        }
        entry["verified"] = _verify_option(check, name, entry["loaded"])
        if entry["status"] == "ok" and entry["verified"] is False:
            entry["status"] = "failed"
            entry["error"] = "the loaded pipeline does not show the option"
        result["options"][name] = entry
    result["run_seconds"] = [
        {k: e.get(k) for k in ("dtype", "options", "seconds", "peak_mib")} for e in runs
    ]
    for name in ("opt-compile", "opt-offload-model", "opt-offload-sequential"):
        if name not in profiles:
            result["options"][name] = {
                "status": "skipped",
                "reason": "dry run on the CPU (nothing to offload; compile too slow)",
            }
    statuses = [o["status"] for o in result["options"].values()]
    result["status"] = "ok" if all(s in ("ok", "skipped") for s in statuses) else "failed"
    return result


def _placement_options(event: dict[str, Any]) -> dict[str, Any]:
    """The options of a load that change the pipeline (max_batch only changes calls)."""
    return {k: v for k, v in event.get("options", {}).items() if k in ("compile", "cpu_offload")}


def _device_dtype(check: Check, dtype: str) -> str:
    return dtype if check.device.startswith("cuda") else "float32"  # the worker's CPU rule


def _verify_option(check: Check, name: str, loaded: dict[str, Any] | None) -> bool | None:
    """Does the loaded pipeline show the option? None: nothing to check on this device."""
    if loaded is None:
        return False
    if name == "opt-compile":
        return bool(loaded.get("compiled"))
    if name.startswith("opt-offload"):
        return bool(loaded.get("offload_hooks")) or loaded.get("denoiser_device") in ("cpu", "meta")
    if check.device.startswith("cuda"):
        want = {"opt-fp16": "torch.float16", "opt-bf16": "torch.bfloat16"}[name]
        return loaded.get("denoiser_dtype") == want
    return None


# == the environment, the runner and the report ==================================================


def environment_child() -> None:
    """``--env DEVICE``: versions and the device, printed as one JSON line (a child process, so the
    parent never holds a CUDA context that the daemon's workers would compete with)."""
    import importlib.metadata as md

    import torch

    device = sys.argv[sys.argv.index("--env") + 1]
    info: dict[str, Any] = {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
    }
    for name in ("diffusers", "transformers", "accelerate", "torchvision", "pillow"):
        try:
            info[name] = md.version(name)
        except md.PackageNotFoundError:
            info[name] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(
            device_name=props.name,
            memory_gib=round(props.total_memory / 1024**3, 1),
            capability=f"{props.major}.{props.minor}",
            bf16=torch.cuda.is_bf16_supported(),
        )
        smi = shutil.which("nvidia-smi")
        if smi:
            q = subprocess.run(
                [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                check=False,
            )
            info["driver"] = q.stdout.strip().splitlines()[0] if q.stdout.strip() else None
    else:
        info["device_name"] = platform.processor() or platform.machine()
    print(json.dumps(info))


def environment(check: Check) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--env", check.device],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        info = {"error": proc.stderr[-2000:]}
    info.update(
        python=platform.python_version(),
        platform=platform.platform(),
        cpus=os.cpu_count(),
        dtypes=check.dtypes,
        **git_state(),
    )
    return info


def git_state() -> dict[str, Any]:
    """The commit measured; the GPU machine's copy of the tree may have no git or no .git."""
    if shutil.which("git") is None:
        return {"git_commit": None, "git_dirty": None}

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return {"git_commit": None, "git_dirty": None}
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": head.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}


Section = Callable[[Check, Path, float], dict[str, Any]]


def run_section(name: str, fn: Section, check: Check, work: Path, cap: float) -> dict[str, Any]:
    """One section inside its time box; any exception becomes its recorded result."""
    started = time.monotonic()
    if check.left() < 5:
        return {"status": "skipped", "reason": "global deadline reached", "seconds": 0.0}
    print(f"[gpu_check] {name}: up to {min(cap, check.left()):.0f} s", flush=True)
    try:
        result = fn(check, work / name, min(cap, check.left()))
    except Exception as exc:  # noqa: BLE001 - one section failing must not stop the others
        result = {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-4000:],
        }
    result["seconds"] = round(time.monotonic() - started, 2)
    print(f"[gpu_check] {name}: {result['status']} in {result['seconds']} s", flush=True)
    return result


def write_report(check: Check, report: dict[str, Any]) -> Path:
    check.out.mkdir(parents=True, exist_ok=True)
    path = check.out / "gpu_check.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, path)
    return path


# Section time boxes (seconds, GPU run); they add up to the default deadline's working part.
CAPS = {"tasks": 110.0, "pool": 190.0, "sharing": 90.0, "options": 70.0}
# The dry run checks that everything works, not how fast: generous boxes for a busy 2-core CI box.
DRY_CAPS = {"tasks": 300.0, "pool": 300.0, "sharing": 360.0, "options": 240.0}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="the CPU, tiny models and sizes")
    parser.add_argument("--device", default=None, help="default cuda:0 (cpu with --dry-run)")
    parser.add_argument("--dtypes", default=None, help="default float16,bfloat16 (float32 dry)")
    parser.add_argument("--sections", default="tasks,pool,sharing,options")
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds for everything (default 470; 1200 with --dry-run)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "gpu")
    parser.add_argument(
        "--cache",
        type=Path,
        default=BENCH / ".cache",
        help="where random models are built (shared with pool_bench)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all; dry: 2)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    return parser.parse_args(argv)


def make_check(args: argparse.Namespace) -> Check:
    dry = args.dry_run
    dtypes = (
        args.dtypes.split(",") if args.dtypes else (["float32"] if dry else ["float16", "bfloat16"])
    )
    deadline = args.deadline if args.deadline is not None else (1200.0 if dry else 470.0)
    return Check(
        dry_run=dry,
        device=args.device or ("cpu" if dry else "cuda:0"),
        dtypes=dtypes,
        cache=args.cache.resolve(),
        out=args.out.resolve(),
        threads=args.threads or (2 if dry else 0),
        deadline=time.monotonic() + deadline,
        keep=args.keep,
    )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    check = make_check(args)
    wanted = [s for s in args.sections.split(",") if s]
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    prebuild = prebuild_models(check) if "pool" in wanted or "sharing" in wanted else None
    caps = DRY_CAPS if check.dry_run else CAPS
    report: dict[str, Any] = {
        "schema": 1,
        "dry_run": check.dry_run,
        "argv": argv,
        "started": _iso(started),
        "deadline_s": round(check.left()),
        "environment": environment(check),
        "sections": {},
    }
    sections: dict[str, Section] = {
        "tasks": section_tasks,
        "pool": lambda c, w, cap: section_pool(c, w, cap, prebuild),
        "sharing": section_sharing,
        "options": section_options,
    }
    for name in sections:
        if name not in wanted:
            report["sections"][name] = {"status": "skipped", "reason": "not in --sections"}
    todo = [(name, fn) for name, fn in sections.items() if name in wanted]
    # On a GPU the sections run one at a time: each one's figures are its own. A dry run only
    # checks that everything works, and its sections (separate work folders and processes)
    # run two at a time on a machine with two cores or more: the CI box's time is the suite's.
    lanes = 2 if check.dry_run and (os.cpu_count() or 1) >= 2 else 1
    written = threading.Lock()

    def one(name: str, fn: Section) -> None:
        result = run_section(name, fn, check, work, caps[name])
        with written:
            report["sections"][name] = result
            write_report(check, report)

    try:
        with ThreadPoolExecutor(lanes, thread_name_prefix="gpu-check") as pool:
            for future in [pool.submit(one, name, fn) for name, fn in todo]:
                future.result()
        report["sections"] = {name: report["sections"][name] for name in sections}
    finally:
        if prebuild is not None and prebuild.poll() is None:
            prebuild.kill()
            prebuild.wait(30)
        report.update(finished=_iso(time.time()), seconds=round(time.time() - started, 1))
        path = write_report(check, report)
        if check.keep:
            print(f"[gpu_check] work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"[gpu_check] wrote {path}")
    for name, section in report["sections"].items():
        print(f"  {name:8s} {section['status']:8s} {section.get('seconds', 0):7.1f} s")
    return 0 if all(s["status"] in ("ok", "skipped") for s in report["sections"].values()) else 1


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--daemon":
        sys.exit(cli_main(sys.argv[2:]))
    if len(sys.argv) > 2 and sys.argv[1] == "--build-qwen":
        build_qwen_child(Path(sys.argv[2]))
        sys.exit(0)
    if "--env" in sys.argv:
        environment_child()
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
