"""Honest labels through the real pipeline (issue 19): what each step's outputs declare.

A photo reworked by a model is ``compositeWithTrainedAlgorithmicMedia`` (the stub model here,
the tiny SVD for the clip); a rendition (no model) of the photo claims nothing, a rendition of
a model's output keeps its label; the clip made from the model's output carries the record in
its mp4 container (and its poster strip in XMP), read by ``darkroom inspect``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from daemon.outputs import provenance

COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
RULE = """\
name: r
match: {source: drop}
prompt: "{stem}"
steps:
  - {name: one, model: stub, seeds: [1]}
  - {name: sized, input: source, model: square-1080, seeds: [1]}
  - {name: sized-edit, input: one, model: square-1080, seeds: [1]}
  - {name: clip, input: one, model: tiny-svd, seeds: [1]}
output: {sink: out, path: "{rule}/{stem}/{step}-{variant}.jpg"}
"""


@pytest.mark.slow
def test_each_output_declares_how_it_was_made(harness):
    pytest.importorskip("imageio_ffmpeg")
    harness.rule(RULE)
    Image.new("RGB", (64, 48), (200, 120, 40)).save(harness.drop / "photo.jpg")
    harness.start()
    harness.wait(
        lambda: harness.settled("photo.jpg"), 300, "photo.jpg to finish"
    )  # builds tiny SVD
    assert harness.outcome("photo.jpg") == "done"
    folder = harness.out / "r" / "photo"

    edited = provenance.read((folder / "one-0.jpg").read_bytes())
    assert edited is not None and edited["digital_source_type"] == COMPOSITE
    rendition = provenance.read((folder / "sized-0.jpg").read_bytes())
    assert rendition is not None and "digital_source_type" not in rendition
    resized_edit = provenance.read((folder / "sized-edit-0.jpg").read_bytes())
    assert resized_edit is not None and resized_edit["digital_source_type"] == COMPOSITE
    [clip] = sorted(folder.glob("clip-0.mp4"))
    strip = provenance.read(clip.with_suffix(".strip.png").read_bytes())
    assert strip is not None and strip["digital_source_type"] == COMPOSITE

    run = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "inspect", str(clip)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert record["digital_source_type"] == COMPOSITE and record["step"] == "clip"
