"""The scripted trust run of issue 14's "Done when", against the real daemon (a subprocess).

    python bench/trust_run.py                      # the issue's counts
    python bench/trust_run.py --stems 2 --slow 2 --reexports 1 --hosted 1   # a quick one

Workload (stub model, so the figures measure the daemon, not a model):

- ``--files`` files sharing ``--stems`` stems across 3 folders and 3 extensions (png/jpg/tif);
- ``--slow`` slow uploads: written in 4 blocks with ``--pause`` s between blocks, at
  ``quiet_period`` ``--quiet`` (a writer pausing longer than the quiet period);
- ``--reexports`` files rewritten with new bytes while their first version is queued (the
  stub sleeps ``--job-seconds`` per job, so the queue is not empty);
- ``--hosted`` files for a rule whose hosted model (a fake Gemini on 127.0.0.1) has no API
  key; once their jobs are held, the key file is written and the daemon gets SIGHUP.

Reported: outputs overwritten by another input (want 0), inputs quarantined although every
input is a good image (want 0), inputs without a visible record (want 0), and how long the
held jobs took to finish after the fix. A table is printed; JSON goes to ``--json``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FOLDERS = ("campaign-a", "campaign-b", "campaign-c/retouched")
EXTENSIONS = ("png", "jpg", "tif")
STEMS = ("hero", "detail", "pack", "lifestyle", "flat", "side", "top")
FORMATS = {"png": "PNG", "jpg": "JPEG", "tif": "TIFF"}


def image(ext: str, seed: int, size: tuple[int, int] = (96, 72)) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    for _ in range(40):
        img.putpixel((rng.randrange(size[0]), rng.randrange(size[1])), (255, 255, 255))
    buffer = io.BytesIO()
    img.save(buffer, FORMATS[ext])
    return buffer.getvalue()


def big_image(ext: str, seed: int) -> bytes:
    """Noise that does not compress: a file big enough to upload in visible blocks."""
    rng = random.Random(seed)
    img = Image.frombytes("RGB", (256, 256), rng.randbytes(256 * 256 * 3))
    buffer = io.BytesIO()
    img.save(buffer, FORMATS[ext], **({"quality": 95} if ext == "jpg" else {}))
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the daemon ----------------------------------------------------------------------------


def write_config(root: Path, args: argparse.Namespace, gemini_url: str, key_file: Path) -> Path:
    (root / "drop").mkdir(parents=True, exist_ok=True)
    (root / "rules").mkdir(exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    include = '["**/*.png", "**/*.jpg", "**/*.tif"]'
    (root / "rules" / "local.yaml").write_text(
        textwrap.dedent(f"""\
        name: local
        match: {{source: drop, include: {include}, exclude: ["hosted/**"]}}
        prompt: "{{stem}}, studio light"
        steps:
          - {{name: one, model: stub, variants: 1, seed: 1, params: {{stub_sleep: {args.job_seconds}}}}}
        output: {{sink: out}}
        """)
    )
    (root / "rules" / "hosted.yaml").write_text(
        textwrap.dedent("""\
        name: hosted
        match: {source: drop, include: ["hosted/**"]}
        prompt: "{stem} as a watercolor"
        steps:
          - {name: one, model: nano-banana, variants: 1, seed: 1}
        output: {sink: out}
        """)
    )
    fast = "timeout: 5, retries: 1, backoff: 0.01, max_wait: 2"
    config = root / "darkroom.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        state_dir: state
        rules_dir: rules
        model_cache: models
        sources:
          drop: {{type: folder, path: drop, quiet_period: {args.quiet}, rescan_interval: 2}}
        sinks:
          out: {{type: folder, path: out}}
        profiles:
          nano-banana: {{options: {{base_url: "{gemini_url}/v1beta", {fast}, api_key_file: "{key_file}", price_by_size: {{}}}}, price_per_image: 0.039}}
        worker: {{device: cpu, threads: 1, stop_timeout: 10}}
        jobs: {{max_attempts: 3, retry_backoff: 0.5}}
        digest: {{enabled: false}}
        log: {{format: json}}
        """)
    )
    return config


class Ledger:
    """The daemon's ledger, read-only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        if not self.path.exists():
            return []
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            db.close()


def events(log: Path, name: str) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("event") == name:
            out.append(item)
    return out


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


# -- the run -------------------------------------------------------------------------------


def slow_upload(path: Path, data: bytes, pause: float) -> None:
    """Four blocks with ``pause`` s between them, in place (rsync --inplace style)."""
    block = -(-len(data) // 4)
    with open(path, "wb") as fh:
        for start in range(0, len(data), block):
            fh.write(data[start : start + block])
            fh.flush()
            os.fsync(fh.fileno())
            if start + block < len(data):
                time.sleep(pause)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.hosted.fakes import FakeGemini

    root = Path(args.workdir or tempfile.mkdtemp(prefix="darkroom-trust-"))
    drop = root / "drop"
    key_file = root / "keys" / "gemini"
    expected: dict[str, bytes] = {}  # key -> the bytes it ends with
    with FakeGemini() as gemini:
        config = write_config(root, args, gemini.url, key_file)
        log = root / "daemon.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("GEMINI_API_KEY", None)
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
                cwd=root,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            wait(lambda: events(log, "darkroom running") or proc.poll() is not None, 180, "start")
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited at start:\n{log.read_text()[-3000:]}")
            started = time.monotonic()
            # The hosted rule's inputs first: they are held while the key is missing.
            hosted = [f"hosted/{STEMS[i % len(STEMS)]}-{i}.png" for i in range(args.hosted)]
            for i, key in enumerate(hosted):
                data = image("png", 10_000 + i)
                (drop / key).parent.mkdir(parents=True, exist_ok=True)
                (drop / key).write_bytes(data)
                expected[key] = data
            # Same stems across folders and extensions.
            combos = [(f, s, e) for s in STEMS[: args.stems] for f in FOLDERS for e in EXTENSIONS]
            plain = [f"{f}/{s}.{e}" for f, s, e in combos[: args.files]]
            for i, key in enumerate(plain):
                data = image(key.rsplit(".", 1)[1], i)
                (drop / key).parent.mkdir(parents=True, exist_ok=True)
                (drop / key).write_bytes(data)
                expected[key] = data
            # Slow writers, all at once.
            slow = [
                f"slow/{STEMS[i % args.stems]}-{i}.{EXTENSIONS[i % 3]}" for i in range(args.slow)
            ]
            (drop / "slow").mkdir(exist_ok=True)
            writers = []
            for i, key in enumerate(slow):
                data = big_image(key.rsplit(".", 1)[1], 20_000 + i)
                expected[key] = data
                thread = threading.Thread(
                    target=slow_upload, args=(drop / key, data, args.pause), daemon=True
                )
                thread.start()
                writers.append(thread)
            # Re-exports: new bytes under the same name once the first version is queued.
            reexported = plain[: args.reexports]
            for i, key in enumerate(reexported):
                wait(
                    lambda key=key: any(e.get("key") == key for e in events(log, "queued")),
                    60,
                    f"{key} queued",
                )
                data = image(key.rsplit(".", 1)[1], 30_000 + i)
                (drop / key).write_bytes(data)
                expected[key] = data
            for thread in writers:
                thread.join()
            # The key is missing: wait until the hosted jobs are held, then fix and SIGHUP.
            ledger = Ledger(root / "state" / "ledger.sqlite")

            def held_keys() -> set[str]:
                return {
                    r["key"]
                    for r in ledger.rows(
                        "SELECT p.key FROM jobs j JOIN plans p ON p.id=j.plan_id"
                        " WHERE j.state='held'"
                    )
                }

            held_seen: set[str] = set()
            resume_s: float | None = None
            held_error: str | None = None
            if hosted:
                try:
                    held_seen = wait(
                        lambda: held_keys() >= set(hosted) and held_keys(),
                        120,
                        "the hosted rule's jobs to be held",
                    )
                except TimeoutError as exc:
                    held_error = str(exc)
                key_file.parent.mkdir(exist_ok=True)
                key_file.write_text(FakeGemini.key)
                fixed_at = time.monotonic()
                proc.send_signal(signal.SIGHUP)

                def hosted_done() -> bool:
                    done = {
                        r["key"]
                        for r in ledger.rows("SELECT key, sha256 FROM plans WHERE state='done'")
                    }
                    return set(hosted) <= done

                try:
                    wait(hosted_done, args.timeout, "the held jobs to finish after the fix")
                    resume_s = time.monotonic() - fixed_at
                except TimeoutError as exc:
                    held_error = str(exc)
            # Quiescence: nothing active for a few seconds.
            quiet_since = [time.monotonic()]

            def settled() -> bool:
                active = ledger.rows("SELECT 1 FROM plans WHERE state='active'")
                if active:
                    quiet_since[0] = time.monotonic()
                return time.monotonic() - quiet_since[0] > max(3.0, 4 * args.quiet)

            stuck: str | None = None
            try:
                wait(settled, args.timeout, "every plan to end")
            except TimeoutError as exc:
                stuck = str(exc)
            total_s = time.monotonic() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        report = measure(root, expected, Ledger(root / "state" / "ledger.sqlite"))
    report.update(
        files=len(plain),
        stems=args.stems,
        slow_uploads=len(slow),
        reexports=len(reexported),
        hosted_inputs=len(hosted),
        held_before_fix=len(held_seen) if isinstance(held_seen, set) else 0,
        held_resume_s=round(resume_s, 2) if resume_s is not None else None,
        held_problem=held_error,
        stuck=stuck,
        total_s=round(total_s, 1),
        quiet_period=args.quiet,
        pause=args.pause,
        workdir=str(root),
    )
    return report


def measure(root: Path, expected: dict[str, bytes], ledger: Ledger) -> dict[str, Any]:
    """What a user would find: files overwritten, good inputs quarantined, inputs with no
    record of their final bytes."""
    out = root / "out"
    plans = ledger.rows("SELECT * FROM plans")
    by_key: dict[str, list[sqlite3.Row]] = {}
    for row in plans:
        by_key.setdefault(row["key"], []).append(row)
    overwritten: list[str] = []
    folder_owner: dict[str, str] = {}
    shared_folders: list[str] = []
    no_record: list[str] = []
    outcomes: dict[str, str] = {}
    for key, data in sorted(expected.items()):
        final = [p for p in by_key.get(key, []) if p["sha256"] == sha(data)]
        if not final:
            seen = ledger.rows("SELECT outcome FROM seen WHERE key=? AND sha256=?", key, sha(data))
            if seen:
                outcomes[key] = str(seen[0]["outcome"])
            else:
                no_record.append(key)
                outcomes[key] = "no record"
            continue
        plan = final[-1]
        outcomes[key] = plan["state"]
        if plan["state"] == "active":
            held = ledger.rows("SELECT 1 FROM jobs WHERE plan_id=? AND state='held'", plan["id"])
            if not held:
                no_record.append(key)  # neither ended nor visibly held
        jobs = ledger.rows("SELECT outputs FROM jobs WHERE plan_id=?", plan["id"])
        for job in jobs:
            for output in json.loads(job["outputs"] or "[]"):
                path = out / output["path"]
                folder = str(Path(output["path"]).parent)
                owner = folder_owner.setdefault(folder, key)
                if owner != key and folder not in shared_folders:
                    shared_folders.append(folder)
                if plan["state"] == "done" and (
                    not path.is_file() or sha(path.read_bytes()) != output.get("sha256")
                ):
                    overwritten.append(output["path"])
    quarantined = sorted(
        str(p.relative_to(root)) for p in root.rglob(".quarantine/**/*") if p.is_file()
    )
    quarantine_rows = ledger.rows("SELECT * FROM quarantine") if ledger.path.exists() else []
    quarantined_keys = sorted(
        {str(r["key"]) for r in quarantine_rows if "key" in r.keys()}  # noqa: SIM118 (sqlite3.Row)
        | {k for k, v in outcomes.items() if "quarantin" in v or "unreadable" in v}
    )
    states: dict[str, int] = {}
    for value in outcomes.values():
        states[value] = states.get(value, 0) + 1
    return {
        "inputs": len(expected),
        "outputs_overwritten": len(overwritten) + len(shared_folders),
        "overwritten_paths": overwritten[:20],
        "shared_output_folders": shared_folders[:20],
        "inputs_quarantined_wrongly": len(quarantined_keys),
        "quarantined": quarantined_keys[:20],
        "quarantine_files": quarantined[:20],
        "inputs_without_visible_record": len(no_record),
        "without_record": no_record[:20],
        "final_states": states,
    }


def print_table(report: dict[str, Any]) -> None:
    rows = [
        ("inputs (final versions)", report["inputs"], ""),
        ("outputs overwritten by another input", report["outputs_overwritten"], "want 0"),
        ("good inputs quarantined", report["inputs_quarantined_wrongly"], "want 0"),
        ("inputs without a visible record", report["inputs_without_visible_record"], "want 0"),
        ("held jobs before the fix", report["held_before_fix"], f"of {report['hosted_inputs']}"),
        (
            "held -> done after the fix (s)",
            report["held_resume_s"] if report["held_resume_s"] is not None else "never",
            "",
        ),
        ("whole run (s)", report["total_s"], ""),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        print(f"{label:<{width}}  {value!s:>8}  {note}")
    print("final states:", report["final_states"])
    for name in ("held_problem", "stuck"):
        if report.get(name):
            print(f"{name}: {report[name]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--stems", type=int, default=5)
    parser.add_argument("--slow", type=int, default=10)
    parser.add_argument("--pause", type=float, default=1.0)
    parser.add_argument("--quiet", type=float, default=0.5)
    parser.add_argument("--reexports", type=int, default=5)
    parser.add_argument("--hosted", type=int, default=3)
    parser.add_argument("--job-seconds", type=float, default=0.3)
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "trust_run.json"))
    args = parser.parse_args(argv)
    report = run(args)
    print_table(report)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {path}")
    ok = (
        report["outputs_overwritten"] == 0
        and report["inputs_quarantined_wrongly"] == 0
        and report["inputs_without_visible_record"] == 0
        and (report["hosted_inputs"] == 0 or report["held_resume_s"] is not None)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
