"""Benchmark: ``darkroom run`` spawn -> ready, and spawn -> first model loaded.

    .venv/bin/python bench/start_bench.py [--runs 3] [--profile tiny] [--timeout 300]
                                          [--py-spy FILE] [--tree DIR] [--out FILE]

Each run starts the real daemon (``darkroom run --config CFG`` as a subprocess, a fresh temp
folder: one folder source, one folder sink, one rule on ``--profile``; default ``tiny``, the
tiny random SD model the tests build into .pytest_cache/darkroom-models) with
``NOTIFY_SOCKET`` pointing at a unix datagram socket this script owns, as systemd would, and
times from the spawn to:

- ``notify_ready_s``: the READY=1 datagram (what ``Type=notify`` waits for);
- ``log_ready_s``:    the "darkroom running" JSON log line (seen by polling the log);
- ``worker_s``:       the "worker started" log line;
- ``model_s``:        the first model loaded: ``darkroom_model_loads_total`` > 0 on the
                      metrics endpoint (enabled on a free port), or a log event that names a
                      loaded model, whichever is seen first (polled every 0.1 s: the
                      endpoint costs the daemon CPU while it starts).

Today the models are loaded before READY (so ``model_s`` < ``notify_ready_s``); issue 16's
goal is READY in <= 3 s with the models loading after it. The STATUS= lines the daemon sends
meanwhile are kept in the JSON (``statuses``: seconds and text), to show what a systemd user
sees during start.

``--py-spy FILE`` adds one run under ``py-spy record --subprocesses`` (raw collapsed stacks
when FILE ends in .txt, else speedscope JSON), flagged ``profiled`` and left out of the
medians. ``--tree DIR`` runs daemon/ and backends/ from another source tree.

Prints a table (medians over ``--runs``) and writes bench/results/start_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from burst_bench import (  # noqa: E402  (a sibling script, not a package)
    REPO,
    Daemon,
    darkroom_command,
    machine,
    median,
    tree_env,
    write_config,
)

GOAL_READY_S = 3.0
LOADED = re.compile(r"model.*loaded|loaded.*model", re.IGNORECASE)
METRIC = re.compile(r"^darkroom_model_loads_total\{[^}]*\}\s+([0-9.e+]+)", re.MULTILINE)


class NotifyListener:
    """A unix datagram socket standing in for systemd's: every datagram, timestamped."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.monotonic()
            fields = dict(
                line.split("=", 1)
                for line in data.decode(errors="replace").splitlines()
                if "=" in line
            )
            self.messages.append((at, fields))

    def first(self, key: str, value: str | None = None) -> float | None:
        for at, fields in list(self.messages):
            if key in fields and (value is None or fields[key] == value):
                return at
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def metrics_loads(url: str) -> float:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return sum(float(m) for m in METRIC.findall(text))


def one_run(args: argparse.Namespace, spy: Path | None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="darkroom-start-"))
    config = write_config(work, profile=args.profile, quiet=0.5, rescan=30, metrics=True)
    listener = NotifyListener(work / "notify.sock")
    env = {"NOTIFY_SOCKET": str(listener.path), **tree_env(args.tree)}
    prefix = None
    if spy is not None:
        fmt = "raw" if spy.suffix == ".txt" else "speedscope"
        exe = str(Path(sys.executable).parent / "py-spy")
        prefix = [exe, "record", "--subprocesses", "--rate", "200", "--nonblocking",
                  "--format", fmt, "--output", str(spy), "--"]  # fmt: skip
    daemon = Daemon(work, config, env, prefix)
    times: dict[str, float | None] = dict.fromkeys(
        ("notify_ready_s", "log_ready_s", "worker_s", "model_s")
    )
    metrics_url: str | None = None
    try:
        daemon.spawn()
        t0 = daemon.spawned
        polled = 0.0
        deadline = t0 + args.timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            if times["notify_ready_s"] is None and (at := listener.first("READY", "1")):
                times["notify_ready_s"] = at - t0
            text = daemon.log.read_bytes() if daemon.log.exists() else b""
            if times["log_ready_s"] is None and b'"darkroom running"' in text:
                times["log_ready_s"] = now - t0
            if times["worker_s"] is None and b'"worker started"' in text:
                times["worker_s"] = now - t0
            if metrics_url is None and b'"metrics listening"' in text:
                found = daemon.events("metrics listening")
                if found and found[0].get("url"):
                    metrics_url = str(found[0]["url"]).rstrip("/") + "/metrics"
            if times["model_s"] is None and now - polled >= 0.1:  # each poll costs the daemon
                polled = now
                if (metrics_url and metrics_loads(metrics_url) > 0) or daemon.events(
                    lambda e: bool(LOADED.search(e))
                ):
                    times["model_s"] = time.monotonic() - t0
            if all(v is not None for v in times.values()):
                break
            if not daemon.alive():
                raise RuntimeError(f"the daemon exited during start:\n{daemon.tail()}")
            time.sleep(0.01)
        statuses = [
            (round(at - t0, 3), f["STATUS"]) for at, f in listener.messages if "STATUS" in f
        ]
    finally:
        exit_code = daemon.stop(60)
        listener.close()
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {k: (round(v, 3) if v is not None else None) for k, v in times.items()}
    result.update(statuses=statuses, exit_code=exit_code, profiled=spy is not None)
    if args.keep:
        result["work"] = str(work)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", default="tiny", help="the rule's model profile")
    parser.add_argument("--timeout", type=float, default=300, help="per start, s")
    parser.add_argument("--py-spy", type=Path, default=None, help="one extra, profiled start")
    parser.add_argument("--tree", type=Path, default=None,
                        help="run daemon/ and backends/ from this source tree instead")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temp folders")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "start_bench.json")
    args = parser.parse_args(argv)

    before = machine()
    runs = []
    if args.py_spy is not None:
        runs.append(one_run(args, args.py_spy))
        print(f"profiled start: {runs[-1]}", flush=True)
    for r in range(args.runs):
        run = one_run(args, None)
        runs.append(run)
        print(
            f"run {r + 1}/{args.runs}: READY {run['notify_ready_s']} s, "
            f"log {run['log_ready_s']} s, model {run['model_s']} s",
            flush=True,
        )
    timed = [r for r in runs if not r["profiled"]]
    keys = ("notify_ready_s", "log_ready_s", "worker_s", "model_s")
    summary = {k: median([r[k] for r in timed if r[k] is not None]) for k in keys}
    summary["complete"] = all(all(r[k] is not None for k in keys) for r in timed)
    report = {
        "schema": 1,
        "benchmark": "start",
        "params": {"runs": args.runs, "profile": args.profile, "timeout_s": args.timeout},
        "summary": summary,
        "goals": {
            "ready_goal_s": GOAL_READY_S,
            "ready_ok": summary["notify_ready_s"] is not None
            and summary["notify_ready_s"] <= GOAL_READY_S,
        },
        "runs": runs,
        "machine": before,
        "loadavg_after": list(os.getloadavg()),
        "command": darkroom_command(),
        "tree": str(args.tree) if args.tree else str(REPO),
    }
    print(f"{'runs':>4} {'READY=1 s':>10} {'log ready s':>12} {'worker s':>9} {'model s':>8}")
    print(
        f"{len(timed):>4} {summary['notify_ready_s']!s:>10} {summary['log_ready_s']!s:>12} "
        f"{summary['worker_s']!s:>9} {summary['model_s']!s:>8}"
    )
    print(
        f"goal: READY <= {GOAL_READY_S} s; machine: {before['nproc']} CPUs, "
        f"load {before['loadavg'][0]:.1f}, python {before['python']}, {before['git_head'][:7]}"
        f"{'+dirty' if before['git_dirty'] else ''}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if summary["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
