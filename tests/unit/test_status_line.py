"""systemd's STATUS line (``systemctl status darkroom``) says what an operator must act on."""

from __future__ import annotations

from daemon.service.status import status_line


def test_a_rule_waiting_for_its_reference_folder_is_in_the_status_line() -> None:
    line = status_line(
        {"queued": 2},
        worker_step=None,
        failing=[],
        last_error=None,
        waiting_rules=["looks for brand:faces/*.png"],
    )
    assert line.startswith("queue 2, running 0, failed 0")
    assert "WAITING rules looks for brand:faces/*.png (accepted once they exist)" in line


def test_nothing_waiting_keeps_the_line_short() -> None:
    line = status_line({}, worker_step=None, failing=[], last_error=None)
    assert line == "queue 0, running 0, failed 0"
