"""Benchmark: what watching a folder costs per file in a burst, our inotify observer against watchdog's.

    .venv/bin/python bench/watch_bench.py [--files 10000] [--runs 5] [--out FILE]

Each run starts one observer on a fresh folder with 10 subfolders, the way a folder source does
(recursive, the same event filter and a handler that records the path), then a child process
writes N files of 400 bytes into the subfolders as fast as it can. The figure is this process's
CPU time (user + system, every thread; the writing is the child's) from the first write until
the handler has seen every file, per file: what the observer takes from the daemon's one core
of Python while intake decides and writes the same files. The two observers alternate, run by
run, so the host's noise falls on both.

Linux only (inotify). Prints a table (medians) and writes bench/results/watch_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from burst_bench import machine  # noqa: E402
from watchdog.events import FileSystemEvent, FileSystemEventHandler  # noqa: E402
from watchdog.observers.inotify import InotifyObserver as WatchdogObserver  # noqa: E402

from daemon.sources.folder import inotify  # noqa: E402
from daemon.sources.folder.watch import INOTIFY_EVENTS  # noqa: E402

WRITER = """
import sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(f"{root}/d{i % 10}/img{i:05d}.png", "wb") as f:
        f.write(b"x" * 400)
"""


class _Seen(FileSystemEventHandler):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.paths: set[str] = set()

    def dispatch(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            with self.lock:
                self.paths.add(os.fsdecode(event.src_path))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_run(make: Callable[[], Any], files: int, timeout: float) -> dict[str, float]:
    root = tempfile.mkdtemp(prefix="darkroom-watch-")
    for d in range(10):
        os.mkdir(f"{root}/d{d}")
    seen = _Seen()
    observer = make()
    observer.schedule(seen, root, recursive=True, event_filter=INOTIFY_EVENTS)
    observer.start()
    try:
        time.sleep(0.3)  # watchdog adds its watches on its own thread
        cpu, start = _cpu(), time.monotonic()
        subprocess.run([sys.executable, "-c", WRITER, root, str(files)], check=True)
        written = time.monotonic()
        while len(seen.paths) < files:
            if time.monotonic() - written > timeout:
                raise RuntimeError(f"{len(seen.paths)}/{files} files seen after {timeout:.0f} s")
            time.sleep(0.01)
        return {
            "cpu_us_per_file": round((_cpu() - cpu) / files * 1e6, 2),
            "seen_after_last_write_s": round(time.monotonic() - written, 3),
            "write_s": round(written - start, 3),
        }
    finally:
        observer.stop()
        observer.join(10)
        subprocess.run(["rm", "-rf", root], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "watch_bench.json")
    args = parser.parse_args(argv)
    if not inotify.available():
        print("watch_bench: inotify is Linux's; nothing to measure here", file=sys.stderr)
        return 2
    observers: dict[str, Callable[[], Any]] = {
        "darkroom (inotify.py)": inotify.InotifyObserver,
        "watchdog InotifyObserver": WatchdogObserver,
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in observers}
    for r in range(args.runs):
        for name, make in observers.items():
            run = one_run(make, args.files, args.timeout)
            runs[name].append(run)
            print(f"run {r + 1}/{args.runs} {name}: {run['cpu_us_per_file']} us CPU per file")
    medians = {
        name: {key: statistics.median(run[key] for run in results) for key in results[0]}
        for name, results in runs.items()
    }
    ours, theirs = medians.values()
    ratio = round(ours["cpu_us_per_file"] / theirs["cpu_us_per_file"], 3)
    print(f"\n{'observer':26} {'us CPU/file':>12} {'seen after last write s':>24}")
    for name, median in medians.items():
        print(
            f"{name:26} {median['cpu_us_per_file']:>12.1f} "
            f"{median['seen_after_last_write_s']:>24.3f}"
        )
    print(f"ours / watchdog's: {ratio} (medians of {args.runs}, {args.files} files)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "schema": 1,
        "benchmark": "watch",
        "params": {"files": args.files, "runs": args.runs},
        "medians": medians,
        "ratio": ratio,
        "runs": runs,
        "machine": machine(),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
