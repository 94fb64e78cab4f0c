"""Issue 14, re-run paths: `darkroom reprocess --rule R` also tries again the inputs that
failed or were quarantined under R (they are not "seen" any more, or ran with this version)."""

from __future__ import annotations

import textwrap

import pytest

from tests.e2e.test_cli import darkroom, setup

RULE = """\
name: look
match: {source: drop}
prompt: "{stem}, calm mood"
steps:
  - {name: explore, model: stub, variants: 1, seed: 5}
output: {sink: out}
"""


@pytest.mark.slow  # runs the darkroom CLI as a subprocess
def test_reprocess_includes_failed_and_quarantined_inputs(tmp_path):
    config = setup(tmp_path, textwrap.dedent(RULE))
    (tmp_path / "drop").mkdir()
    broken = tmp_path / "drop" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)  # a PNG signature, then nothing
    first = darkroom("process", "--config", str(config), str(broken), cwd=tmp_path)
    assert first.returncode != 0 or "quarantined" in first.stdout + first.stderr
    before = darkroom("status", "--config", str(config), cwd=tmp_path)
    assert "quarantined" in before.stdout

    again = darkroom("reprocess", "--config", str(config), "--rule", "look", cwd=tmp_path)

    assert again.returncode == 0, again.stderr
    assert "1 input(s) re-admitted" in again.stdout
    status = darkroom("status", "--config", str(config), cwd=tmp_path)
    assert "queued 1" in status.stdout, status.stdout
