"""Benchmark: N small files dropped at once into the real daemon's watched folder.

    .venv/bin/python bench/burst_bench.py [--files 10000] [--runs 3] [--profile stub]
                                          [--drop write|move] [--quiet 0.5] [--rescan 2]
                                          [--format png,jpeg]
                                          [--py-spy FILE] [--keep] [--out FILE]

Each run starts ``darkroom run --config CFG`` (a subprocess, fresh temp folder: one folder
source, one folder sink, one rule on the ``stub`` profile, which runs no model) and, once the
daemon says "darkroom running", writes N distinct PNG/JPEG files of a few hundred bytes
(generated in this process before the clock starts) into 10 subfolders of the watched
folder as fast as it can (``--drop move``: writes them beside the folder first, outside
the clock, then renames them in, as ``mv``, rsync and rclone land files). It then reads the
ledger (``state/ledger.sqlite``, opened read-only) until N plans exist and reports:

- ``write_s``:   first file written -> last file written (this process, not the daemon);
- ``planned_s``: last file written -> N plans in the ledger (the figure the issue's goal is
                 about: <= 5 s for 10,000 files), and ``per_file_ms`` = planned_s / N;
- ``cpu_ms_per_file``: the daemon's CPU time (user + system, all threads, its child
                processes included: the second intake process a burst starts) from the
                first write until all are planned, per file: steadier than wall time on a
                shared machine (the stub jobs the runner finishes meanwhile are in it);
                ``main_cpu_ms_per_file``: the main process's share;
- ``rss_mib``:   the daemon's main-process peak RSS (``VmHWM`` from /proc; goal <= 300 MB);
                ``children_rss_mib``: its child processes' peak RSS, summed;
- exactly-once: after a settle period (a rescan and a quiet period more) N plans, N distinct
                keys, N ``seen`` rows and N ``queued`` log lines for N distinct keys.

The quiet period is part of ``planned_s``: a file counts as complete only once unchanged
that long. The daemon keeps running stub jobs meanwhile (``jobs_done``), as it would.

``--py-spy FILE`` attaches ``py-spy record`` to the daemon's main process for the burst of
the first run (from the first write to the last plan) and writes FILE (speedscope JSON, or
``raw`` collapsed stacks when FILE ends in .txt); py-spy is not a dependency:
``.venv/bin/pip install py-spy``.

Prints a table (medians over ``--runs``) and writes bench/results/burst_bench.json with each
run, the medians, the goals and the machine (CPUs, load average, Python, git HEAD).
start_bench.py reuses the daemon helpers below.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GOAL_PLANNED_S = 5.0  # 10,000 files (issue 16)
GOAL_RSS_MIB = 300.0

RULE = """\
name: burst
match: {{source: drop}}
prompt: "{{stem}}"
steps: [{{name: one, model: {profile}, seeds: [1]{params}}}]
output: {{sink: out}}
"""


# -- the daemon as a subprocess (shared with start_bench.py) ---------------------------------


def model_cache() -> Path:
    """The tests' cache of built random models: $DARKROOM_TEST_MODEL_CACHE or .pytest_cache."""
    env = os.environ.get("DARKROOM_TEST_MODEL_CACHE")
    return Path(env) if env else REPO / ".pytest_cache" / "darkroom-models"


def tree_env(tree: Path | None) -> dict[str, str]:
    """Run the daemon from another source tree (``--tree``: e.g. ``git archive HEAD`` unpacked,
    to compare a commit with the working tree): its folder goes first on PYTHONPATH, ahead of
    the editable install's finder."""
    if tree is None:
        return {}
    return {"PYTHONPATH": os.pathsep.join([str(tree.resolve()), os.environ.get("PYTHONPATH", "")])}


def darkroom_command() -> list[str]:
    """``darkroom`` as installed next to this interpreter, else ``python -m daemon.cli``."""
    script = Path(sys.executable).parent / "darkroom"
    return [str(script)] if script.exists() else [sys.executable, "-m", "daemon.cli"]


def write_config(
    work: Path,
    *,
    profile: str,
    quiet: float,
    rescan: float,
    threads: int = 1,
    metrics: bool = False,
    job_seconds: float = 0.0,
) -> Path:
    for name in ("drop", "rules", "out"):
        (work / name).mkdir(parents=True, exist_ok=True)
    # The stub's run sleeps this long: the pace of a real model, so the runner finishes
    # (and writes sheets and pages for) jobs at that pace instead of as fast as it can.
    params = f", params: {{stub_sleep: {job_seconds}}}" if job_seconds > 0 else ""
    (work / "rules" / "burst.yaml").write_text(RULE.format(profile=profile, params=params))
    config = work / "darkroom.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        state_dir: state
        rules_dir: rules
        model_cache: {model_cache()}
        sources:
          drop: {{type: folder, path: drop, quiet_period: {quiet}, rescan_interval: {rescan}}}
        sinks:
          out: {{type: folder, path: out}}
        worker: {{device: cpu, threads: {threads}, stop_timeout: 5}}
        digest: {{enabled: false}}
        log: {{format: json}}
        """)
        + ("metrics: {enabled: true, host: 127.0.0.1, port: 0}\n" if metrics else "")
    )
    return config


class Daemon:
    """One ``darkroom run`` subprocess whose JSON log goes to ``work/daemon.log``."""

    def __init__(
        self,
        work: Path,
        config: Path,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
    ):
        self.work, self.config, self.log = work, config, work / "daemon.log"
        self.extra_env = env or {}
        self.prefix = prefix or []  # e.g. a profiler that runs the daemon as its child
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned = 0.0

    def spawn(self) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **self.extra_env}
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "DARKROOM_FAULT"):
            if name not in self.extra_env:
                env.pop(name, None)
        with open(self.log, "ab") as out:
            self.spawned = time.monotonic()
            self.proc = subprocess.Popen(
                [*self.prefix, *darkroom_command(), "run", "--config", str(self.config)],
                cwd=self.work,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    @property
    def pid(self) -> int:
        """The daemon's pid: the subprocess, or its first child when it runs under a prefix."""
        assert self.proc is not None
        if not self.prefix:
            return self.proc.pid
        try:
            path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            return int(path.read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self, name: str | Callable[[str], bool]) -> list[dict[str, Any]]:
        match = name if callable(name) else (lambda event: event == name)
        out = []
        if not self.log.exists():
            return out
        for raw in self.log.read_bytes().decode(errors="replace").splitlines():
            if not raw.startswith("{"):
                continue
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if isinstance(item, dict) and match(str(item.get("event", ""))):
                out.append(item)
        return out

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def wait_ready(self, timeout: float) -> float:
        """Seconds from spawn to the "darkroom running" log line (seen by polling)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b'"darkroom running"' in self.log.read_bytes():
                return time.monotonic() - self.spawned
            if not self.alive():
                raise RuntimeError(f"the daemon exited early:\n{self.tail()}")
            time.sleep(0.02)
        raise RuntimeError(f"the daemon was not running after {timeout:.0f} s:\n{self.tail()}")

    def wait_line(self, events: tuple[bytes, ...], timeout: float) -> None:
        """Until one of ``events`` (quoted event names) is in the log."""
        deadline = time.monotonic() + timeout
        while not any(event in self.log.read_bytes() for event in events):
            if not self.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"none of {events} in the log:\n{self.tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        try:  # under a prefix (a profiler) the daemon is told, and the profiler sees it exit
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in {self.pid, self.proc.pid}:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(10)
            return None


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size (VmHWM) of ``pid`` in KiB, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` (all its threads) has used, 0 once it is gone: on a
    shared machine, the daemon's own work per file is steadier than wall time."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (any of its threads) and that are still running."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found += [int(child) for child in fh.read().split()]
    except OSError:
        pass
    return found


def tree_cpu_seconds(pid: int, since: dict[int, float]) -> float:
    """CPU seconds ``pid`` and its children used since ``since`` (pid -> seconds at the
    start; a child started later counts from 0), and ``since`` updated to now."""
    total = 0.0
    for each in [pid, *children(pid)]:
        now = cpu_seconds(each)
        total += now - since.get(each, 0.0)
        since[each] = now
    return total


def count(ledger: Path, sql: str) -> int:
    """One number from the ledger opened read-only; 0 before the tables exist."""
    if not ledger.exists():
        return 0
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=30)
    try:
        return int(db.execute(sql).fetchone()[0])
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    finally:
        db.close()


def machine() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except OSError:
            return ""

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_count": os.cpu_count(),
        "cpu": cpu,
        "loadavg": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_head": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


# -- the burst --------------------------------------------------------------------------------


def make_payloads(n: int, formats: list[str]) -> list[tuple[str, bytes]]:
    """N distinct tiny images (8x8 px, a few hundred bytes): (extension, bytes)."""
    from PIL import Image

    base = Image.new("RGB", (8, 8), (10, 20, 30))
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        base.putpixel((i % 8, (i // 8) % 8), (i % 256, (i // 256) % 256, 77 + i // 65536))
        base.putpixel(((i // 64) % 8, 7 - i % 8), ((i * 7) % 256, (i // 64) % 256, 200))
        fmt = formats[i % len(formats)]
        buffer = io.BytesIO()
        if fmt == "png":
            base.save(buffer, "PNG", compress_level=0)
        else:  # a comment makes every JPEG distinct even if two quantise alike
            base.save(buffer, "JPEG", quality=90, comment=f"burst {i}".encode())
        out.append(("png" if fmt == "png" else "jpg", buffer.getvalue()))
    return out


def start_py_spy(pid: int, path: Path, mode: str = "all") -> subprocess.Popen[bytes] | None:
    exe = Path(sys.executable).parent / "py-spy"
    if not exe.exists():
        print("--py-spy: py-spy is not installed (.venv/bin/pip install py-spy)", file=sys.stderr)
        return None
    fmt = "raw" if path.suffix == ".txt" else "speedscope"
    path.parent.mkdir(parents=True, exist_ok=True)  # py-spy writes nothing into a missing folder
    proc = subprocess.Popen(
        [str(exe), "record", "--pid", str(pid), "--rate", "200", "--threads",
         *{"all": ["--idle"], "oncpu": [], "gil": ["--gil"]}[mode],
         "--format", fmt, "--output", str(path), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(1.0)  # attach before the clock starts
    return proc


def one_run(args: argparse.Namespace, payloads: list[tuple[str, bytes]], spy: Path | None) -> dict:
    n = len(payloads)
    work = Path(tempfile.mkdtemp(prefix="darkroom-burst-"))
    config = write_config(
        work,
        profile=args.profile,
        quiet=args.quiet,
        rescan=args.rescan,
        job_seconds=args.job_seconds,
    )
    daemon = Daemon(work, config, tree_env(args.tree))
    ledger = work / "state" / "ledger.sqlite"
    result: dict[str, Any] = {"work": str(work)}
    spy_proc = None
    try:
        daemon.spawn()
        result["ready_s"] = round(daemon.wait_ready(args.ready_timeout), 3)
        if args.after_models:
            daemon.wait_line((b'"model loaded"', b'"cannot load model"'), args.ready_timeout)
        rss_idle = vm_hwm_kib(daemon.pid)
        if spy is not None:
            spy_proc = start_py_spy(daemon.pid, spy, mode=args.py_spy_mode)
        drop = work / "drop"
        folders = [drop / f"d{d}" for d in range(args.dirs)]
        for folder in folders:
            folder.mkdir()
        names = [f"d{i % len(folders)}/img{i:05d}.{ext}" for i, (ext, _) in enumerate(payloads)]
        if args.drop == "move":  # written beside the drop first, outside the clock
            staging = work / "staging"
            for folder in folders:
                (staging / folder.name).mkdir(parents=True)
            for name, (_, data) in zip(names, payloads, strict=True):
                (staging / name).write_bytes(data)
        cpu_first = cpu_seconds(daemon.pid)
        tree_cpu = {each: cpu_seconds(each) for each in [daemon.pid, *children(daemon.pid)]}
        cpu_tree = 0.0
        children_peak: dict[int, int] = {}
        first = time.monotonic()
        if args.drop == "move":
            for name in names:
                os.rename(staging / name, drop / name)
        else:
            for name, (_, data) in zip(names, payloads, strict=True):
                (drop / name).write_bytes(data)
        last = time.monotonic()
        peak = rss_idle
        deadline = last + args.timeout
        planned = 0
        while True:
            peak = max(peak, vm_hwm_kib(daemon.pid))
            for child in children(daemon.pid):
                children_peak[child] = max(children_peak.get(child, 0), vm_hwm_kib(child))
            cpu_tree += tree_cpu_seconds(daemon.pid, tree_cpu)  # before a child may exit
            planned = count(ledger, "SELECT COUNT(*) FROM plans")
            if planned >= n:
                break
            if not daemon.alive():
                raise RuntimeError(f"the daemon exited during the burst:\n{daemon.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{planned}/{n} planned after {args.timeout:.0f} s")
            time.sleep(0.05)
        done_at = time.monotonic()
        cpu = cpu_seconds(daemon.pid) - cpu_first
        cpu_tree += tree_cpu_seconds(daemon.pid, tree_cpu)
        if spy_proc is not None:
            spy_proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                spy_proc.wait(60)
            except subprocess.TimeoutExpired:
                spy_proc.kill()
        time.sleep(args.settle if args.settle is not None else args.rescan + args.quiet + 1.0)
        peak = max(peak, vm_hwm_kib(daemon.pid))
        queued = daemon.events("queued")
        checks = {
            "plans": count(ledger, "SELECT COUNT(*) FROM plans"),
            "distinct_keys": count(
                ledger, "SELECT COUNT(DISTINCT source || '/' || key) FROM plans"
            ),
            "seen": count(ledger, "SELECT COUNT(*) FROM seen"),
            "queued_lines": len(queued),
            "queued_distinct_keys": len({(e.get("source"), e.get("key")) for e in queued}),
        }
        result.update(
            files=n,
            write_s=round(last - first, 3),
            planned_s=round(done_at - last, 3),
            planned_from_first_s=round(done_at - first, 3),
            per_file_ms=round((done_at - last) / n * 1000, 3),
            cpu_s=round(cpu_tree, 2),
            cpu_ms_per_file=round(cpu_tree / n * 1000, 3),
            main_cpu_ms_per_file=round(cpu / n * 1000, 3),
            children_rss_mib=round(sum(children_peak.values()) / 1024, 1),
            rss_idle_mib=round(rss_idle / 1024, 1),
            rss_mib=round(peak / 1024, 1),
            jobs_done=count(ledger, "SELECT COUNT(*) FROM jobs WHERE state='done'"),
            checks=checks,
            exactly_once=all(v == n for v in checks.values()),
        )
    finally:
        if spy_proc is not None and spy_proc.poll() is None:
            spy_proc.kill()
        result["exit_code"] = daemon.stop(60)
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        result.pop("work")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000, help="files per burst")
    parser.add_argument("--runs", type=int, default=3, help="bursts (fresh daemon each); medians")
    parser.add_argument("--profile", default="stub", help="the rule's model profile (stub: none)")
    parser.add_argument("--job-seconds", type=float, default=0.0,
                        help="each stub job takes this long (0: at once); e.g. 0.2, a fast GPU "
                             "model's pace, so the runner's sheets and pages of finished jobs "
                             "do not compete with intake more than they would")  # fmt: skip
    parser.add_argument("--drop", choices=("write", "move"), default="write",
                        help="write: each file written into the watched folder (cp); move: "
                             "written beside it first, then renamed in (mv, rsync, rclone), "
                             "so all land within a fraction of a second")  # fmt: skip
    parser.add_argument(
        "--after-models",
        action="store_true",
        help="drop the burst once the worker has loaded the rule's model (a daemon "
        "that has been running), not as soon as it is ready",
    )
    parser.add_argument("--quiet", type=float, default=0.5, help="folder quiet period, s")
    parser.add_argument("--rescan", type=float, default=2.0, help="folder rescan interval, s")
    parser.add_argument("--dirs", type=int, default=10, help="subfolders the files spread over")
    parser.add_argument("--format", default="png,jpeg", help="png, jpeg or png,jpeg (alternate)")
    parser.add_argument("--timeout", type=float, default=600, help="per burst, s")
    parser.add_argument("--ready-timeout", type=float, default=300)
    parser.add_argument("--settle", type=float, default=None,
                        help="wait after the last plan before the exactly-once check "
                             "(default: rescan + quiet + 1 s)")  # fmt: skip
    parser.add_argument("--py-spy", type=Path, default=None, help="profile the first burst here")
    parser.add_argument("--py-spy-mode", choices=("all", "oncpu", "gil"), default="all",
                        help="all: every thread, waits included; oncpu: threads on a CPU; "
                             "gil: only the thread holding the GIL (what one core of Python "
                             "spends, the burst's limit)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temp folders")
    parser.add_argument("--tree", type=Path, default=None,
                        help="run daemon/ and backends/ from this source tree instead")  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "burst_bench.json")
    args = parser.parse_args(argv)
    formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    if not formats or set(formats) - {"png", "jpeg", "jpg"}:
        parser.error("--format: png, jpeg or png,jpeg")

    import hashlib

    payloads = make_payloads(args.files, formats)
    if len({hashlib.sha256(d).digest() for _, d in payloads}) != args.files:
        raise SystemExit("the generated payloads are not all distinct")
    sizes = [len(d) for _, d in payloads]
    before = machine()
    runs = []
    for r in range(args.runs):
        run = one_run(args, payloads, args.py_spy if r == 0 else None)
        runs.append(run)
        print(
            f"run {r + 1}/{args.runs}: planned {run['planned_s']:.2f} s after the last write, "
            f"rss {run['rss_mib']:.0f} MiB, exactly once: {run['exactly_once']}",
            flush=True,
        )
    summary = {
        key: median([run[key] for run in runs])
        for key in ("write_s", "planned_s", "planned_from_first_s", "per_file_ms", "cpu_ms_per_file",
                    "main_cpu_ms_per_file", "rss_mib", "children_rss_mib",
                    "rss_idle_mib", "ready_s")
    }  # fmt: skip
    summary["exactly_once"] = all(run["exactly_once"] for run in runs)
    scaled = summary["planned_s"] * 10_000 / args.files if summary["planned_s"] else None
    goals = {
        "planned_s_per_10000": round(scaled, 3) if scaled is not None else None,
        "planned_goal_s_per_10000": GOAL_PLANNED_S,
        "planned_ok": scaled is not None and scaled <= GOAL_PLANNED_S,
        "rss_goal_mib": GOAL_RSS_MIB,
        "rss_ok": summary["rss_mib"] is not None and summary["rss_mib"] <= GOAL_RSS_MIB,
        "exactly_once_ok": summary["exactly_once"],
    }
    report = {
        "schema": 1,
        "benchmark": "burst",
        "params": {
            "files": args.files,
            "runs": args.runs,
            "profile": args.profile,
            "job_seconds": args.job_seconds,
            "quiet_s": args.quiet,
            "drop": args.drop,
            "after_models": args.after_models,
            "rescan_s": args.rescan,
            "dirs": args.dirs,
            "formats": formats,
            "bytes_min": min(sizes),
            "bytes_median": statistics.median(sizes),
            "bytes_max": max(sizes),
            "py_spy": str(args.py_spy) if args.py_spy else None,
        },
        "summary": summary,
        "goals": goals,
        "runs": runs,
        "machine": before,
        "loadavg_after": list(os.getloadavg()),
        "command": darkroom_command(),
        "tree": str(args.tree) if args.tree else str(REPO),
    }
    header = f"{'files':>6} {'runs':>4} {'write s':>8} {'planned s':>10} {'ms/file':>8} " \
             f"{'cpu ms/file':>11} {'main cpu':>9} {'rss MiB':>8} {'child MiB':>9} {'idle MiB':>9} " \
             f"{'ready s':>8} {'once':>5}"  # fmt: skip
    print(header)
    print(
        f"{args.files:>6} {args.runs:>4} {summary['write_s']:>8} {summary['planned_s']:>10} "
        f"{summary['per_file_ms']:>8} {summary['cpu_ms_per_file']:>11} {summary['main_cpu_ms_per_file']:>9} "
        f"{summary['rss_mib']:>8} {summary['children_rss_mib']:>9} {summary['rss_idle_mib']:>9} "
        f"{summary['ready_s']:>8} {str(summary['exactly_once']):>5}"
    )  # fmt: skip
    print(
        f"goals: planned <= {GOAL_PLANNED_S} s per 10,000 files (now {goals['planned_s_per_10000']}), "
        f"rss <= {GOAL_RSS_MIB:.0f} MiB; machine: {before['nproc']} CPUs, "
        f"load {before['loadavg'][0]:.1f}, python {before['python']}, {before['git_head'][:7]}"
        f"{'+dirty' if before['git_dirty'] else ''}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if summary["exactly_once"] else 1


if __name__ == "__main__":
    sys.exit(main())
