"""Drop-to-output latency of the real daemon for one small image.

Starts `darkroom run` on a temp config (the tiny random model, CPU), drops one 64 px PNG at
a time (written to a temp name, then renamed into the watched folder: one atomic arrival)
and measures until its manifest — the commit marker — exists. The quiet period is the
floor: a file counts as complete only after its size and mtime stay unchanged that long.

    .venv/bin/python bench/latency_bench.py [--runs 7] [--quiet 0.5]

Prints a table and writes bench/results/latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RULE = """\
name: latency
match: {source: drop}
prompt: "{stem}, watercolor"
steps: [{name: explore, model: tiny, seeds: [1], strength: 0.6, steps: 2}]
output: {sink: out}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--quiet", type=float, default=0.5, help="the folder source's quiet period, seconds"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="darkroom-latency-"))
    (work / "drop").mkdir()
    (work / "rules").mkdir()
    (work / "rules" / "latency.yaml").write_text(RULE)
    cache = Path(
        os.environ.get("DARKROOM_TEST_MODEL_CACHE", REPO / ".pytest_cache" / "darkroom-models")
    )
    config = work / "darkroom.yaml"
    config.write_text(
        f"state_dir: state\nmodel_cache: {cache}\n"
        f"sources: {{drop: {{path: drop, quiet_period: {args.quiet}}}}}\n"
        "sinks: {out: {path: out}}\nworker: {device: cpu, threads: 2}\nlog: {format: json}\n"
    )
    log = open(work / "daemon.log", "wb")  # noqa: SIM115 - held open for the daemon's lifetime
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run", "-c", str(config)],
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        while b"darkroom running" not in (work / "daemon.log").read_bytes():
            if proc.poll() is not None or time.monotonic() - started > 300:
                print((work / "daemon.log").read_text(), file=sys.stderr)
                return 1
            time.sleep(0.05)
        startup = time.monotonic() - started
        latencies = []
        for run in range(args.runs):
            staging = work / f".in-{run}.png"
            Image.new("RGB", (64, 64), (run * 30 % 256, 90, 160)).save(staging)
            manifest = work / "out" / "latency" / f"img{run}" / "manifest.json"
            t0 = time.monotonic()
            os.rename(staging, work / "drop" / f"img{run}.png")
            while not manifest.exists():
                if time.monotonic() - t0 > 120:
                    raise SystemExit(f"run {run}: no manifest after 120 s")
                time.sleep(0.005)
            latencies.append(time.monotonic() - t0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    result = {
        "runs": args.runs,
        "quiet_period_s": args.quiet,
        "startup_s": round(startup, 2),
        "latency_median_s": round(statistics.median(latencies), 3),
        "latency_min_s": round(min(latencies), 3),
        "latency_max_s": round(max(latencies), 3),
        "latency_minus_quiet_median_s": round(statistics.median(latencies) - args.quiet, 3),
        "latencies_s": [round(x, 3) for x in latencies],
        "machine": f"{os.cpu_count()} CPUs, {sys.platform}",
    }
    print(
        f"{'runs':>5} {'quiet s':>8} {'startup s':>10} {'median s':>9} {'min s':>7} {'max s':>7} {'median-quiet':>13}"
    )
    print(
        f"{args.runs:>5} {args.quiet:>8} {result['startup_s']:>10} {result['latency_median_s']:>9} "
        f"{result['latency_min_s']:>7} {result['latency_max_s']:>7} {result['latency_minus_quiet_median_s']:>13}"
    )
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
