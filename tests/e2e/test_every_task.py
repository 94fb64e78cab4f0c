"""The real daemon runs every model task that tests/e2e/test_rule_gallery.py leaves out,
as the steps of one rule, on the tiny random-weight profiles.

Steps (each ``input: source``, so each stands alone): ``upscale`` (tiny-upscale: the 64 px
source is fitted to its 32 px max_side and comes back 128 px), ``kontext`` then
``kontext-inpaint`` (tiny-kontext + tiny-kontext-inpaint, ``mask: sidecar``), ``fill``
(tiny-fill, ``mask: sidecar``), ``ltx-i2v`` (tiny-ltx, 9 frames, webp) and ``wan-i2v``
(tiny-wan, 5 frames, gif). The source is 64x64: a multiple of 32 (LTX) and of 16 (FLUX, Wan).

Left out: ``multi-edit`` — there is no tiny Qwen-Image-Edit-Plus (``random:qwen-edit-tiny``
has no config: its processor needs torchvision, which this environment lacks). ``svd``,
``img2img``, ``ip-adapter``, ``inpaint`` and ``rendition`` run in the gallery test.

The two Kontext tasks share one loaded transformer in the worker (``from_pipe``). The daemon
records nothing that shows it — the manifest's ``seconds`` are run time, not load time, and the
worker logs at debug level to nowhere — so this test only shows that a ``kontext-inpaint``
built from the loaded ``kontext`` pipeline runs correctly in the daemon; that the modules are
the same objects is asserted in tests/backends/test_sharing.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import make_image
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.slow

RULE = """\
name: every-task
match:
  source: drop
  include: ["**/*.png"]
prompt: "{stem}, golden hour"
steps:
  - {name: upscale, input: source, model: tiny-upscale, seeds: [1]}
  - {name: instruct, input: source, model: tiny-kontext, seeds: [2]}
  - {name: masked-edit, input: source, model: tiny-kontext-inpaint, mask: sidecar, seeds: [3]}
  - {name: fill, input: source, model: tiny-fill, mask: sidecar, seeds: [4]}
  - {name: ltx, input: source, model: tiny-ltx, frames: 9, video_format: webp, seeds: [5]}
  - {name: wan, input: source, model: tiny-wan, frames: 5, video_format: gif, seeds: [6]}
output:
  sink: out
"""

# step -> (model, output size, frames or None for an image, mask)
EXPECTED = {
    "upscale": ("tiny-upscale", (128, 128), None, None),
    "instruct": ("tiny-kontext", (64, 64), None, None),
    "masked-edit": ("tiny-kontext-inpaint", (64, 64), None, "sidecar"),
    "fill": ("tiny-fill", (64, 64), None, "sidecar"),
    "ltx": ("tiny-ltx", (64, 64), 9, None),
    "wan": ("tiny-wan", (64, 64), 5, None),
}


def test_every_task_runs_in_the_daemon(daemon_factory, tmp_path: Path) -> None:
    daemon = daemon_factory(RULE)
    daemon.start()
    drop, out = tmp_path / "drop", tmp_path / "out"
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask.save(drop / "room.mask.png")  # the mask first: the image's arrival plans the job
    make_image(drop / "room.png", color=(90, 140, 200))

    manifest_path = out / "every-task" / "room.png" / "manifest.json"

    def finished() -> dict | None:
        if not manifest_path.exists():
            return None
        manifest = json.loads(manifest_path.read_text())
        return manifest if manifest.get("status") in ("done", "failed") else None

    manifest = wait_for(finished, 240, "the every-task manifest")
    steps = {s["name"]: s for s in manifest["steps"]}
    errors = {name: s.get("error") for name, s in steps.items() if s.get("state") != "done"}
    assert manifest["status"] == "done", errors
    assert list(steps) == list(EXPECTED)

    from backends import video_io

    for name, (model, size, frames, mask_kind) in EXPECTED.items():
        step = steps[name]
        assert step["state"] == "done", (name, step.get("error"))
        assert step["mask"] == mask_kind, name
        assert len(step["outputs"]) == 1, name
        output = step["outputs"][0]
        assert output["model"] == model
        assert (output["width"], output["height"]) == size, name
        data = (out / output["path"]).read_bytes()
        if frames is None:
            assert output.get("kind") != "video"
            with Image.open(out / output["path"]) as image:
                assert image.size == size, name
            continue
        fmt = "webp" if name == "ltx" else "gif"
        assert output["kind"] == "video" and output["path"].endswith(f".{fmt}")
        assert output["frames"] == frames, name
        probe = video_io.probe(data, fmt)
        assert (probe["frames"], probe["width"], probe["height"]) == (frames, *size), name
        assert (out / output["poster"]).exists()

    # The upscaler's input was the 64 px source fitted to its 32 px max_side: 4x is 128.
    assert steps["upscale"]["outputs"][0]["params"]["noise_level"] == 20
    assert daemon.stop() == 0
