"""Benchmark: Darkroom end to end against the loop a user would write instead.

    .venv/bin/python bench/pool_bench.py [--files 8] [--runs 3] [--size 128] [--device cpu]
                                         [--model random:sd15] [--max-batch 4]
                                         [--dtype float16] [--steps 2] [--guidance 0.0]

On the same N input files and the same model (default ``random:sd15``: the SD 1.5 shapes with
random weights, built once into bench/.cache, ~4 GB) it times:

- (a) ``naive``:    the plain loop, in its own process: load the pipeline once, then for each
                    file open, run, save. The clock covers the loop, not the load.
- (b) ``darkroom``: the daemon in this process with ``max_batch: 1``; the files are copied into
                    its watched folder and the clock stops when the last manifest (the commit
                    marker) is written. The model is preloaded at start, as the daemon does.
- (c) ``batched``:  the same with dynamic batching (``max_batch`` jobs per model call).

Each is run ``--runs`` times (fresh output folders and ledger) and the median reported. Besides
wall time: the busy fraction (seconds inside model calls / wall seconds) and the number of
model loads per worker. Goals (issue): (b)/(a) <= 1.03, (c)/(a) < 1.0 (or an explanation),
busy >= 0.95, 1 load per worker. Prints a table and writes bench/results/pool.json.

On CUDA each run also samples the GPU's own utilization (NVML through ``pynvml`` when it is
installed, else ``nvidia-smi --loop-ms``): ``gpu_busy`` is the mean fraction of time a kernel was
running during the timed window, for every mode alike (the daemon's worker is another
process, so timing model calls from here would not see the GPU idle inside them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

PROMPT = "a product photo on a marble counter"
SEED = 7


def make_inputs(folder: Path, n: int, size: int) -> list[Path]:
    import random

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    files = []
    for i in range(n):
        path = folder / f"in-{i:03d}.png"
        if not path.exists():
            data = bytes(rng.getrandbits(8) for _ in range(size * size * 3))
            Image.frombytes("RGB", (size, size), data).save(path)
        files.append(path)
    return files


# -- GPU busy fraction ------------------------------------------------------------------------


class GpuSampler:
    """Samples one GPU's utilization and memory every ``interval`` s while running.

    NVML's utilization is the share of the last sample period in which a kernel ran, which is
    the busy fraction. A context manager: ``with GpuSampler(0) as g: ...; g.result()``.
    """

    def __init__(self, index: int, interval: float = 0.1):
        self.index, self.interval = index, interval
        self.samples: list[tuple[float, float]] = []  # (utilization 0..1, memory used MiB)
        self.source: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            self.source = "nvml"
            self._thread = threading.Thread(
                target=self._poll_nvml, args=(pynvml, handle), daemon=True
            )
        except Exception:  # noqa: BLE001 - no pynvml or no driver: try nvidia-smi
            smi = shutil.which("nvidia-smi")
            if smi is None:
                return self
            self.source = "nvidia-smi"
            self._proc = subprocess.Popen(
                [
                    smi,
                    f"--id={self.index}",
                    "--query-gpu=utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                    f"--loop-ms={int(self.interval * 1000)}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self._thread = threading.Thread(target=self._read_smi, daemon=True)
        self._thread.start()
        return self

    def _poll_nvml(self, pynvml, handle) -> None:
        while not self._stop.wait(self.interval):
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            self.samples.append((util.gpu / 100, mem.used / 2**20))

    def _read_smi(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                util, mem = (float(x) for x in line.split(","))
            except ValueError:
                continue
            self.samples.append((util / 100, mem))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(5)
        if self._thread is not None:
            self._thread.join(5)

    def result(self) -> dict:
        if not self.samples:
            return {
                "gpu_busy": None,
                "gpu_mem_max_mib": None,
                "gpu_samples": 0,
                "gpu_source": self.source,
            }
        return {
            "gpu_busy": statistics.fmean(u for u, _ in self.samples),
            "gpu_mem_max_mib": max(m for _, m in self.samples),
            "gpu_samples": len(self.samples),
            "gpu_source": self.source,
        }


def gpu_index(device: str) -> int | None:
    """The NVML index of ``cuda:N`` (as CUDA_VISIBLE_DEVICES is unset on a bench machine)."""
    if not device.startswith("cuda"):
        return None
    return int(device.partition(":")[2] or 0)


# -- (a) the loop a user would write -----------------------------------------------------------


def naive_child(args: argparse.Namespace) -> None:
    """Runs in its own process (``--naive-child``): prints one JSON line."""
    import torch
    from diffusers import AutoPipelineForImage2Image
    from PIL import Image

    from backends.random_models import resolve_model_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device if args.device.startswith("cuda") else "cpu"
    dtype = getattr(torch, pick_dtype(args))
    pipe = AutoPipelineForImage2Image.from_pretrained(
        resolve_model_dir(args.model, args.cache), torch_dtype=dtype
    )
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    files = sorted(Path(args.inputs).glob("*.png"))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inside = 0.0
    index = gpu_index(device)
    sampler = GpuSampler(index) if index is not None else None
    if sampler:
        sampler.__enter__()
    started = time.perf_counter()
    for path in files:
        image = Image.open(path).convert("RGB")
        t = time.perf_counter()
        result = pipe(
            prompt=PROMPT,
            image=image,
            strength=args.strength,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            generator=torch.Generator("cpu").manual_seed(SEED),
        ).images[0]
        inside += time.perf_counter() - t
        result.save(out / f"{path.stem}.png")
    wall = time.perf_counter() - started
    gpu = {}
    if sampler:
        sampler.__exit__()
        gpu = sampler.result()
    print(json.dumps({"wall": wall, "busy": inside / wall, "loads": 1, "workers": 1, **gpu}))


def pick_dtype(args: argparse.Namespace) -> str:
    """--dtype, else half precision on a GPU and float32 on the CPU (where half is slow)."""
    return args.dtype or ("float16" if args.device.startswith("cuda") else "float32")


def run_naive(args: argparse.Namespace, inputs: Path, work: Path) -> dict:
    out = work / "naive-out"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        __file__,
        "--naive-child",
        "--inputs",
        str(inputs),
        "--out-dir",
        str(out),
        "--model",
        args.model,
        "--cache",
        str(args.cache),
        "--steps",
        str(args.steps),
        "--strength",
        str(args.strength),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--dtype",
        pick_dtype(args),
        "--guidance",
        str(args.guidance),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"naive loop failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- (b), (c) Darkroom ------------------------------------------------------------------------


RULE = f"""\
name: bench
match: {{source: drop}}
prompt: "{PROMPT}"
steps:
  - {{name: one, model: bench, variants: 1, seed: {SEED}}}
output: {{sink: out}}
"""


def _main_cpu() -> float:
    """CPU seconds (user + system) of this process, where the daemon runs, and of the
    children it reaped (the decoder processes it recycles)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime


def wait_until_loaded(app, timeout: float = 1800.0) -> None:
    """Until the worker has started and preloaded the rule's model (the daemon's own start)."""
    deadline = time.monotonic() + timeout
    while app.pool.loads < 1 or app.worker_start is None or app.worker_start.step is not None:
        if time.monotonic() > deadline:
            raise SystemExit(f"the daemon's worker did not load the model in {timeout:.0f} s")
        time.sleep(0.05)


def run_darkroom(args: argparse.Namespace, files: list[Path], work: Path, max_batch: int) -> dict:
    import structlog

    from daemon.config.settings import Settings
    from daemon.service.app import App

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    for name in ("drop", "out", "state", "rules"):
        shutil.rmtree(work / name, ignore_errors=True)
        (work / name).mkdir(parents=True)
    (work / "rules" / "bench.yaml").write_text(RULE)
    device = args.device if args.device != "cpu" else "cpu"
    settings = Settings(
        state_dir=work / "state",
        rules_dir=work / "rules",
        model_cache=args.cache,
        rules_reload_interval=0,
        sources={"drop": {"type": "folder", "path": work / "drop", "quiet_period": 0.05}},
        sinks={"out": {"type": "folder", "path": work / "out"}},
        profiles={
            "bench": {
                "task": "img2img",
                "model": args.model,
                "max_side": args.size,
                "dtype": pick_dtype(args),
                "defaults": {
                    "steps": args.steps,
                    "strength": args.strength,
                    "guidance": args.guidance,
                },
                "options": {"max_batch": max(8, max_batch)},
            }
        },
        worker={
            "device": device,
            "threads": args.threads,
            "max_batch": max_batch,
            "max_wait_ms": 0,
            "job_timeout": 1800,
        },
        metrics={"enabled": False},
    )
    app = App(settings)
    app.start()
    # READY comes before the worker has loaded its models (issue 16's fast start); the
    # naive loop's load is not timed either, so the clock starts once the model is loaded.
    wait_until_loaded(app)
    index = gpu_index(device)
    sampler = GpuSampler(index) if index is not None else None
    try:
        busy0, loads0 = app.pool.busy_seconds, app.pool.loads
        if sampler:
            sampler.__enter__()
        cpu_before = _main_cpu()
        started = time.perf_counter()
        for path in files:
            shutil.copy(path, work / "drop" / path.name)
        want = len(files)
        while True:
            done = len(list((work / "out").glob("bench/*/manifest.json")))
            if done >= want:
                break
            # The daemon runs in this process: a busier poll would be CPU the naive loop
            # does not spend (a 50 ms step is 0.2 % of a 25 s run).
            time.sleep(0.05)
        wall = time.perf_counter() - started
        main_cpu = _main_cpu() - cpu_before
        gpu = {}
        if sampler:
            sampler.__exit__()
            gpu = sampler.result()
        states = app.ledger.counts()
        busy = app.pool.busy_seconds - busy0
        return {
            "wall": wall,
            "busy": busy / wall / len(app.pool),
            "loads": app.pool.loads,
            "loads_during_run": app.pool.loads - loads0,
            "workers": len(app.pool),
            "calls": app.pool.calls,
            # CPU the daemon's own process (not the worker) used meanwhile: on a CPU run the
            # model's cores are the same cores, so this is what the model could lose.
            "main_cpu_s": round(main_cpu, 2),
            "states": states,
            **gpu,
        }
    finally:
        if sampler:
            sampler.__exit__()
        app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="random:sd15")
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--dtype", default=None, help="default float16 on CUDA, float32 on the CPU")
    parser.add_argument("--guidance", type=float, default=0.0)
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "pool.json")
    parser.add_argument("--only", default="naive,darkroom,batched")
    parser.add_argument("--naive-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_child:
        naive_child(args)
        return

    from backends.random_models import resolve_model_dir

    t = time.perf_counter()
    resolve_model_dir(args.model, args.cache)  # build random:NAME once (minutes the first time)
    print(f"model ready in {time.perf_counter() - t:.1f} s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="pool-bench-"))
    inputs = work / "inputs"
    files = make_inputs(inputs, args.files, args.size)
    modes = {
        "naive": lambda: run_naive(args, inputs, work),
        "darkroom": lambda: run_darkroom(args, files, work / "b", 1),
        "batched": lambda: run_darkroom(args, files, work / "c", args.max_batch),
    }
    chosen = [m for m in args.only.split(",") if m in modes]
    runs: dict[str, list[dict]] = {m: [] for m in chosen}
    for i in range(args.runs):
        for mode in chosen:  # interleaved, so drift (thermal, caches) hits every mode alike
            r = modes[mode]()
            runs[mode].append(r)
            gpu = f"  gpu {r['gpu_busy']:.3f}" if r.get("gpu_busy") is not None else ""
            print(
                f"run {i + 1} {mode:9s} wall {r['wall']:7.2f} s  busy {r['busy']:.3f}{gpu}  "
                f"loads {r['loads']}"
                + (f"  main cpu {r['main_cpu_s']:.2f} s" if "main_cpu_s" in r else ""),
                flush=True,
            )
    shutil.rmtree(work, ignore_errors=True)

    summary = {}
    for mode, rs in runs.items():
        summary[mode] = {
            "wall_median": statistics.median(r["wall"] for r in rs),
            "busy_median": statistics.median(r["busy"] for r in rs),
            "loads": max(r["loads"] for r in rs),
            "workers": rs[0]["workers"],
            "walls": [round(r["wall"], 3) for r in rs],
        }
        if all("main_cpu_s" in r for r in rs):
            summary[mode]["main_cpu_s_median"] = statistics.median(r["main_cpu_s"] for r in rs)
        gpu = [r["gpu_busy"] for r in rs if r.get("gpu_busy") is not None]
        if gpu:
            summary[mode]["gpu_busy_median"] = statistics.median(gpu)
            summary[mode]["gpu_mem_max_mib"] = max(r.get("gpu_mem_max_mib") or 0 for r in rs)
    base = summary.get("naive", {}).get("wall_median")
    print(
        f"\n{'mode':10s} {'median wall s':>14s} {'/ naive':>8s} {'busy':>6s} {'gpu':>6s} "
        f"{'loads/worker':>13s}"
    )
    for mode, s in summary.items():
        ratio = s["wall_median"] / base if base else float("nan")
        s["ratio_to_naive"] = ratio
        gpu = s.get("gpu_busy_median")
        print(
            f"{mode:10s} {s['wall_median']:14.2f} {ratio:8.3f} {s['busy_median']:6.3f} "
            f"{gpu if gpu is None else round(gpu, 3)!s:>6s} {s['loads'] / s['workers']:13.1f}"
        )
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "device": args.device,
        },
        "params": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("naive_child", "inputs", "out_dir")
        },
        "summary": summary,
        "runs": runs,
        "goals": {
            "darkroom/naive <= 1.03": summary.get("darkroom", {}).get("ratio_to_naive"),
            "batched/naive < 1.0": summary.get("batched", {}).get("ratio_to_naive"),
            # on CUDA: the GPU's own busy fraction in the saturated (batched) run
            "gpu busy >= 0.95": summary.get("batched", {}).get("gpu_busy_median"),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
