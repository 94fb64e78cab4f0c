"""Main-process memory while near-limit images stream through the real daemon (issue 15).

Starts `darkroom run` on a temp config (the tiny random model, CPU), drops near-limit inputs
one after another -- an 80 MP JPEG, an 80 MP PNG, an 84 MP DDS (DXT1) and an 84 MP BLP, the
shapes of the fuzz files that once took the main process to 1.7 GB -- and samples the main
process's resident memory (/proc/PID/status) until each manifest is written. Goal: peak RSS
of the main process <= 300 MB.

    .venv/bin/python bench/decode_bench.py [--rounds 2] [--kinds jpeg,png,dds,blp]
    .venv/bin/python bench/decode_bench.py --repo /tmp/darkroom-before   # another checkout

Generated inputs are cached under bench/.cache/decode/. Prints a table (peak RSS of the main
process, per-image time from drop to manifest) and writes bench/results/decode.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / ".cache" / "decode"
RULE = """\
name: decode
match: {source: drop, include: ["**/*"]}
prompt: "{stem}, watercolor"
steps: [{name: explore, model: tiny, seeds: [1], strength: 0.6, steps: 2}]
output: {sink: out}
"""
# (width, height, Pillow format, save options) per kind: 80 MP photos, 84 MP textures.
KINDS: dict[str, tuple[int, int, str, dict[str, object]]] = {
    "jpeg": (10328, 7746, "JPEG", {"quality": 90}),
    "png": (10328, 7746, "PNG", {"compress_level": 1}),
    "dds": (10584, 7936, "DDS", {"pixel_format": "DXT1"}),
    "blp": (10584, 7936, "BLP", {}),  # BLP1 with a JPEG stream, written by blp1_jpeg
}
SUFFIX = {"jpeg": "jpg", "png": "png", "dds": "dds", "blp": "blp"}


def pattern(width: int, height: int) -> Image.Image:
    """A photo-sized image that compresses like one (smooth gradients, some texture)."""
    x = np.arange(width, dtype=np.uint32)[None, :]
    y = np.arange(height, dtype=np.uint32)[:, None]
    r = (x * 255 // width).astype(np.uint8).repeat(height, 0)
    g = (y * 255 // height).astype(np.uint8).repeat(width, 1)
    b = (((x // 7) ^ (y // 5)) & 0xFF).astype(np.uint8)
    pixels = np.dstack([r, g, b])
    # Sensor-like grain, so the files are photo-sized rather than a few MB.
    grain = np.random.default_rng(0).integers(0, 6, size=pixels.shape, dtype=np.uint8)
    return Image.fromarray(pixels | grain, "RGB")


def blp1_jpeg(image: Image.Image) -> bytes:
    """A BLP1 texture holding one JPEG stream (Pillow decodes it whole, then converts: the
    shape of the fuzz files; Pillow's own BLP writer takes minutes at this size)."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    stream = buffer.getvalue()
    header = b"BLP1" + struct.pack("<iIIIii", 0, 0, image.width, image.height, 5, 0)
    offset = len(header) + 2 * 16 * 4 + 4
    return (
        header
        + struct.pack("<16I", offset, *([0] * 15))
        + struct.pack("<16I", len(stream), *([0] * 15))
        + struct.pack("<I", 0)  # no shared JPEG header
        + stream
    )


def make_input(kind: str) -> Path:
    width, height, fmt, options = KINDS[kind]
    path = CACHE / f"near-limit-{width}x{height}.{SUFFIX[kind]}"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    image = pattern(width, height)
    tmp = path.with_suffix(".tmp")
    if kind == "blp":
        tmp.write_bytes(blp1_jpeg(image))
    else:
        image.save(tmp, fmt, **options)
    tmp.rename(path)
    return path


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB; (0, 0) once it is gone."""
    values = {"VmRSS:": 0, "VmHWM:": 0}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                name = line.split(maxsplit=1)[0] if line.strip() else ""
                if name in values:
                    values[name] = int(line.split()[1])
    except OSError:
        pass
    return values["VmRSS:"], values["VmHWM:"]


class Sampler(threading.Thread):
    """Samples the main process's RSS every 20 ms (VmHWM catches what falls between)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(0.02):
            rss, hwm = rss_kib(self.pid)
            self.peak_kib = max(self.peak_kib, rss, hwm)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="times each kind is dropped")
    parser.add_argument("--kinds", default="jpeg,png,dds,blp")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout to run")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per image")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    inputs = {kind: make_input(kind) for kind in kinds}

    work = Path(tempfile.mkdtemp(prefix="darkroom-decode-"))
    for d in ("drop", "rules", "out"):
        (work / d).mkdir()
    (work / "rules" / "decode.yaml").write_text(RULE)
    cache = Path(
        os.environ.get("DARKROOM_TEST_MODEL_CACHE", REPO / ".pytest_cache" / "darkroom-models")
    )
    config = work / "darkroom.yaml"
    config.write_text(
        f"state_dir: state\nmodel_cache: {cache}\n"
        "sources: {drop: {path: drop, quiet_period: 0.3}}\n"
        "sinks: {out: {path: out}}\nworker: {device: cpu, threads: 2}\n"
        "digest: {enabled: false}\nlog: {format: json}\n"
    )
    log_path = work / "daemon.log"
    log = open(log_path, "wb")  # noqa: SIM115 - held open for the daemon's lifetime
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(args.repo.resolve())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run", "-c", str(config)],
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    sampler = Sampler(proc.pid)
    rows: list[dict[str, object]] = []
    try:
        started = time.monotonic()
        while b"darkroom running" not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() - started > 300:
                print(log_path.read_text(), file=sys.stderr)
                return 1
            time.sleep(0.05)
        time.sleep(2)  # let the worker and the decoder children start
        idle_kib = rss_kib(proc.pid)[0]
        sampler.start()
        for round_ in range(args.rounds):
            for kind, path in inputs.items():
                stem = f"{kind}-{round_}"
                staging = work / f".{stem}.{SUFFIX[kind]}"
                shutil.copyfile(path, staging)  # then renamed in: one complete arrival
                manifest = work / "out" / "decode" / f"{stem}.{SUFFIX[kind]}" / "manifest.json"
                before = sampler.peak_kib
                t0 = time.monotonic()
                os.rename(staging, work / "drop" / f"{stem}.{SUFFIX[kind]}")
                while not manifest.exists():
                    if proc.poll() is not None or time.monotonic() - t0 > args.timeout:
                        print(log_path.read_text()[-4000:], file=sys.stderr)
                        raise SystemExit(f"{stem}: no manifest (daemon exit {proc.poll()})")
                    time.sleep(0.02)
                status = str(json.loads(manifest.read_text()).get("status"))
                name, size = f"{stem}.{SUFFIX[kind]}", path.stat().st_size
                seconds = round(time.monotonic() - t0, 2)
                peak_so_far = round(max(before, sampler.peak_kib) / 1024, 1)
                rows.append(
                    {
                        "input": name,
                        "bytes": size,
                        "megapixels": round(KINDS[kind][0] * KINDS[kind][1] / 1e6, 1),
                        "seconds": seconds,
                        "status": status,
                        "peak_rss_mb_so_far": peak_so_far,
                    }
                )
                print(
                    f"{name:>16} {size / 1e6:>8.1f} MB {seconds:>7} s  {status:<8}"
                    f" peak {peak_so_far} MB",
                    flush=True,
                )
    finally:
        sampler.stop_event.set()
        final_hwm = rss_kib(proc.pid)[1]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    peak_mb = round(max(sampler.peak_kib, final_hwm) / 1024, 1)
    times = [float(str(r["seconds"])) for r in rows]
    result = {
        "repo": str(args.repo.resolve()),
        "kinds": kinds,
        "rounds": args.rounds,
        "idle_rss_mb": round(idle_kib / 1024, 1),
        "peak_rss_main_mb": peak_mb,
        "goal_peak_rss_main_mb": 300,
        "per_image_median_s": round(statistics.median(times), 2) if times else None,
        "rows": rows,
        "machine": f"{os.cpu_count()} CPUs, {sys.platform}",
    }
    print(
        f"\n{'images':>7} {'idle RSS MB':>12} {'peak RSS main MB':>17} {'median s/image':>15} {'goal':>6}"
    )
    print(
        f"{len(rows):>7} {result['idle_rss_mb']:>12} {peak_mb:>17}"
        f" {result['per_image_median_s']:>15} {'ok' if peak_mb <= 300 else 'MISS':>6}"
    )
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
