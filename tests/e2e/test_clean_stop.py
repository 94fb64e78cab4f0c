"""A clean ``darkroom run`` + SIGTERM leaves nothing behind for Python to complain about."""

from __future__ import annotations

import pytest

from tests.conftest import make_image
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.slow

RULE = """\
name: explore
match:
  source: drop
  include: ["**/*.png"]
prompt: "{stem}, watercolor illustration"
steps:
  - name: explore
    model: tiny
    variants: 1
    seed: 7
    steps: 2
output:
  sink: out
"""


def test_sigterm_after_one_file_prints_no_leaked_semaphore_warning(tmp_path, daemon_factory):
    """multiprocessing's resource_tracker warns at exit about semaphores nobody released
    (a process pool or queue shut down without waiting for it): an operator reads that as a
    leak in the daemon, and it is one."""
    daemon = daemon_factory(RULE)
    daemon.start()
    make_image(tmp_path / "drop" / "lamp.png")
    wait_for(
        lambda: (tmp_path / "out/explore/lamp.png/manifest.json").is_file(),
        180,
        "the file's manifest",
    )
    assert daemon.stop() == 0, daemon.text()[-4000:]
    text = daemon.text()
    assert "leaked semaphore" not in text, text[-4000:]
    assert "resource_tracker" not in text, text[-4000:]
    # Nothing was left running (a thread, the decoder's or the worker's process), so the
    # daemon did not have to exit around it.
    assert "still running after stop" not in text, text[-4000:]
