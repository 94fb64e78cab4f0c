"""Benchmark: the campaign board's first view with 10,000 sources, in a real browser.

    .venv/bin/python bench/board_bench.py [--sources 10000] [--runs 3] [--regenerate]

Builds (once, under bench/.cache/board/) a folder sink whose rule board holds SOURCES sources
x 2 models, each output with its own 128 px WebP picture, through the same ``build_board``
the daemon's rebuild uses. Serves the sink with the review server on loopback, opens the
board in headless Chromium (cache disabled) and measures, per run:

- ``paint_ms``:   navigation start -> the first rows are on screen (the board's own mark,
                  ``window.darkroomBoardPainted``, set in the frame after they are added);
- ``settled_ms``: until every picture in the first screen has loaded;
- ``bytes``:      everything transferred for that first view (page, scripts, chunk, pictures;
                  the Resource Timing API's transferSize, headers included);
- ``requests``:   how many.

Prints a table of medians and writes bench/results/board.json. Goal (issue 18): with 10,000
sources the first view paints in <= 1 s and transfers <= 2 MB. Needs /usr/bin/chromium and
chromedriver (``.ci/run`` installs them).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from daemon.config.settings import ReviewConfig  # noqa: E402
from daemon.outputs.board import board_dir_for, build_board, thumb_path_for  # noqa: E402
from daemon.review.server import ReviewServer  # noqa: E402
from daemon.sinks.folder import FolderSink  # noqa: E402
from tests.browser import CHROMIUM, chromium  # noqa: E402

RULE = "campaign"
MODELS = ("sd-turbo", "kontext")
GOAL_PAINT_MS = 1000.0
GOAL_BYTES = 2 * 1024 * 1024


def _picture(i: int) -> bytes:
    image = Image.new("RGB", (128, 96), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    for x in range(0, 128, 16):  # some detail, so it is not a one-colour file
        image.paste(((x * 7 + i) % 256, 40, 200 - x), (x, 0, x + 8, 96))
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=70, method=2)
    return buffer.getvalue()


def build(sink_root: Path, sources: int) -> None:
    sink = FolderSink("out", sink_root)
    board_dir = board_dir_for(RULE)
    rows = []
    for i in range(sources):
        folder = f"shoot-{i // 250:03d}"
        key = f"{folder}/IMG_{i:05d}.jpg"
        base = f"{RULE}/{key}"
        cells = []
        for m, model in enumerate(MODELS):
            out = f"{base}/explore-{model}-0.png"
            thumb = thumb_path_for(out)
            target = sink_root / thumb
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_picture(i * len(MODELS) + m))
            code = "a" if i % 17 == 0 else "r" if i % 23 == 0 else ""
            cells.append(
                [model, [[os.path.relpath(thumb, board_dir), out.rsplit("/", 1)[1], code]]]
            )
        rows.append(
            {
                "m": f"{base}/manifest.json",
                "p": os.path.relpath(f"{base}/index.html", board_dir),
                "k": key,
                "d": folder,
                "s": "done",
                "t": f"2026-11-{1 + i // 1000:02d}T00:00:{i % 60:02d}Z",
                "c": cells,
            }
        )
    build_board(sink, RULE, rows)


FIRST_SCREEN = """const done = arguments[arguments.length - 1];
const start = Date.now();
(function wait(){
  const painted = window.darkroomBoardPainted;
  const imgs = Array.from(document.images).filter(i => {
    const r = i.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; });
  if (painted && imgs.length && imgs.every(i => i.complete)) {
    const entries = performance.getEntriesByType('navigation').concat(
      performance.getEntriesByType('resource'));
    done({paint_ms: painted, settled_ms: performance.now(), images: imgs.length,
          bytes: entries.reduce((n, e) => n + (e.transferSize || 0), 0),
          requests: entries.length, rows: document.querySelectorAll('#rows tr').length});
  } else if (Date.now() - start > 60000) { done(null); } else { setTimeout(wait, 20); }
})();"""


def measure(url: str, runs: int, profile: Path) -> list[dict[str, Any]]:
    results = []
    driver_iter = chromium(profile)
    driver = next(driver_iter)
    try:
        driver.set_script_timeout(90)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        for _ in range(runs):
            driver.get("about:blank")
            driver.get(url)
            result = driver.execute_async_script(FIRST_SCREEN)
            if result is None:
                raise SystemExit("the board did not paint within 60 s")
            results.append(result)
    finally:
        driver.quit()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--regenerate", action="store_true")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is missing: apt-get install chromium chromium-driver", file=sys.stderr)
        return 2
    cache = ROOT / ".cache" / "board" / str(args.sources)
    if args.regenerate and cache.exists():
        shutil.rmtree(cache)
    if not (cache / board_dir_for(RULE) / "board.js").exists():
        started = time.perf_counter()
        build(cache, args.sources)
        print(f"built a {args.sources}-source board in {time.perf_counter() - started:.1f} s")
    server = ReviewServer({"out": FolderSink("out", cache)}, ReviewConfig(port=0), print)
    server.start()
    try:
        url = f"{server.url}out/{board_dir_for(RULE)}/index.html"
        profile = ROOT / ".cache" / "board-profile"
        shutil.rmtree(profile, ignore_errors=True)
        runs = measure(url, args.runs, profile)
    finally:
        server.stop()
    medians = {
        k: statistics.median(r[k] for r in runs) for k in ("paint_ms", "settled_ms", "bytes")
    }
    chunk_bytes = sorted((cache / board_dir_for(RULE) / "chunks").glob("*.js"))
    all_data = sum(p.stat().st_size for p in chunk_bytes)
    print(f"\nboard with {args.sources} sources x {len(MODELS)} models, {args.runs} runs (medians)")
    print(f"{'measure':<28}{'median':>12}{'goal':>12}")
    print(f"{'first paint (ms)':<28}{medians['paint_ms']:>12.0f}{GOAL_PAINT_MS:>12.0f}")
    print(f"{'first screen loaded (ms)':<28}{medians['settled_ms']:>12.0f}{'':>12}")
    print(
        f"{'first view transfer (KB)':<28}{medians['bytes'] / 1024:>12.0f}{GOAL_BYTES / 1024:>12.0f}"
    )
    print(f"{'requests':<28}{statistics.median(r['requests'] for r in runs):>12.0f}")
    print(f"{'rows on first view':<28}{runs[0]['rows']:>12}")
    print(f"{'all rows data (KB)':<28}{all_data / 1024:>12.0f}   ({len(chunk_bytes)} chunks)")
    out = ROOT / "results" / "board.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "sources": args.sources,
                "models": len(MODELS),
                "runs": runs,
                "median": medians,
                "goal": {"paint_ms": GOAL_PAINT_MS, "bytes": GOAL_BYTES},
                "all_chunks_bytes": all_data,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(ROOT.parent)}")
    return 0 if medians["paint_ms"] <= GOAL_PAINT_MS and medians["bytes"] <= GOAL_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
