"""Scenario 10: hostile names are processed or rejected cleanly, and outputs never leave
the sink root."""

from __future__ import annotations

import os
import unicodedata

from tests.conftest import make_image
from tests.reliability.conftest import tree

RULE = """\
name: r
match: {source: drop}
prompt: "{stem}"
steps:
  - {name: one, model: stub, seeds: [1]}
output:
  sink: out
  path: "{rule}/{dir}/{stem}/{step}-{variant}.{ext}"
  manifest: "{rule}/{dir}/{stem}/manifest.json"
  sheet: "{rule}/{dir}/{stem}/sheet.png"
"""

NAMES = [
    unicodedata.normalize("NFC", "café.png"),
    "sub/" + unicodedata.normalize("NFD", "café.png"),
    "with  spaces and (parens) & 'quotes'.png",
    "new\nline.png",
    "tab\there.png",
    "x" * 240 + ".png",
    "a..b.png",
    "dots../in..folder/f.png",
    "émoji 📷.png",
    "back\\slash.png",
]


def test_hostile_names_processed_or_rejected_cleanly_inside_the_sink(harness, tmp_path):
    harness.rule(RULE)
    harness.start(max_attempts=2)
    for i, name in enumerate(NAMES):
        make_image(harness.drop / name, color=(i * 20, 40, 90))
    keys = [os.fsdecode(os.fsencode(n)) for n in NAMES]
    harness.wait(
        lambda: all(harness.settled(k) for k in keys),
        30,
        "every name to end: " + str({k: harness.outcome(k) for k in keys}),
    )
    outcomes = {k: harness.outcome(k) for k in keys}
    for key, outcome in outcomes.items():
        assert outcome in ("done", "failed"), (key, outcome)
        if outcome == "failed":
            [row] = [r for r in harness.ledger.quarantine() if r["key"] == key]
            assert row["reason"], key
    # Names with nothing odd but their characters are processed, not refused.
    for key in NAMES[:3] + [NAMES[5], NAMES[6], NAMES[8]]:
        assert outcomes[key] == "done", (key, outcomes[key])
    # Nothing was written outside the sink root (or next to it).
    real_out = os.path.realpath(harness.out)
    for path in tree(harness.out):
        assert os.path.realpath(harness.out / path).startswith(real_out + os.sep), path
    allowed = {"drop", "out", "rules", "state", "quarantine", "darkroom.yaml"}
    assert {p.name for p in tmp_path.iterdir()} <= allowed, sorted(
        p.name for p in tmp_path.iterdir()
    )
    assert not harness.app.runner.stopping.is_set()
    print(outcomes)
