"""Benchmark: what the root index costs each finished plan as the output root grows.

    .venv/bin/python bench/index_bench.py [--sizes 1000,5000,10000] [--updates 7]
    .venv/bin/python bench/index_bench.py --tree /tmp/before   # daemon/ from another checkout

The finalizer of every plan puts the plan's entry into the sink's ``index.json`` and renders
``index.html`` (:func:`daemon.outputs.index.update_index`). For each size, a folder sink gets
an index of that many entries, then ``--updates`` new entries are put in one after another,
as the runner does; the table gives the median seconds per update (the first one, which
reads the index it did not write, apart) and the index's size. A 10,000-file drop pays the
per-update cost 10,000 times, growing with the index: the ``drop total`` column is the sum
over a drop of that size, from a fit of the measured costs (linear in the entries).
Writes bench/results/index_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent


def entry(index_entry: Any, i: int) -> Any:
    name = f"shoot-{i // 250:03d}/IMG_{i:05d}.jpg"
    return index_entry(
        manifest=f"r/{name}/manifest.json",
        page=f"r/{name}/index.html",
        sheet=f"r/{name}/sheet.png",
        rule="r",
        key=name,
        source_sha256=f"{i:064x}",
        status="done",
        created_at=f"2026-11-{1 + i // 1000:02d}T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
        version=1,
        models=["sd-turbo", "flux-schnell"],
        variants=4,
        thumbs=[f"r/{name}/explore-{k}.png" for k in range(4)],
        updated_at="2026-11-28T00:00:00Z",
    )


def measure(size: int, updates: int) -> dict[str, Any]:
    from daemon.outputs.index import INDEX_JSON, IndexEntry, update_index
    from daemon.sinks.folder import FolderSink

    root = Path(tempfile.mkdtemp(prefix="darkroom-index-"))
    sink = FolderSink("out", root)
    entries = [entry(IndexEntry, i).model_dump() for i in range(size)]
    sink.write(INDEX_JSON, json.dumps({"version": 1, "entries": entries}).encode())
    times = []
    for k in range(updates + 1):
        started = time.perf_counter()
        update_index(sink, entry(IndexEntry, size + k))
        times.append(time.perf_counter() - started)
    return {
        "entries": size,
        "first_s": times[0],
        "update_s": statistics.median(times[1:]),
        "runs_s": times[1:],
        "index_mb": (root / INDEX_JSON).stat().st_size / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--updates", type=int, default=7)
    parser.add_argument("--tree", type=Path, default=None, help="daemon/ from this checkout")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "index_bench.json")
    args = parser.parse_args(argv)
    sys.path.insert(0, str((args.tree or ROOT.parent).resolve()))
    rows = [measure(int(n), args.updates) for n in args.sizes.split(",")]
    # Cost per update ~ a + b * entries; a drop of N files pays it for 0..N-1 entries.
    first, last = rows[0], rows[-1]
    slope = (last["update_s"] - first["update_s"]) / max(1, last["entries"] - first["entries"])
    base = first["update_s"] - slope * first["entries"]
    print(f"{'entries':>8} {'first s':>8} {'update s':>9} {'index MB':>9} {'drop total s':>13}")
    for row in rows:
        n = row["entries"]
        row["drop_total_s"] = max(0.0, base * n + slope * n * (n - 1) / 2)
        print(
            f"{n:>8} {row['first_s']:>8.3f} {row['update_s']:>9.4f} {row['index_mb']:>9.2f}"
            f" {row['drop_total_s']:>13.0f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "rows": rows,
                "tree": str(args.tree or ROOT.parent),
                "machine": {
                    "cpus": os.cpu_count(),
                    "load": os.getloadavg(),
                    "python": platform.python_version(),
                },
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
