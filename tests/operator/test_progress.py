"""Issue 20: ``darkroom process`` draws a bar that log lines don't break (on a terminal) and
plain lines elsewhere.

The bar and the real logging pipeline write into a fake terminal; a small screen model
(carriage return, erase-to-end-of-line, newline) shows what a person would see."""

from __future__ import annotations

import io
import logging

import pytest
import structlog

from daemon.cli.progress import Progress
from daemon.service import logs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        raise io.UnsupportedOperation("no descriptor")

    def screen(self) -> list[str]:
        """The lines a terminal shows for what was written."""
        lines, line, col = [], "", 0
        text = self.getvalue()
        i = 0
        while i < len(text):
            if text.startswith("\033[K", i):
                line = line[:col]
                i += 3
                continue
            ch = text[i]
            if ch == "\r":
                col = 0
            elif ch == "\n":
                lines.append(line)
                line, col = "", 0
            else:
                line = line[:col] + ch + line[col + 1 :]
                col += 1
            i += 1
        return [*lines, line] if line else lines


def test_log_lines_do_not_break_the_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(logs.WORKER_ENV, "")  # configure() sets it; put it back afterwards
    term = Terminal()
    progress = Progress(term)
    logs.configure("info", "console", stream=progress.log_stream())
    try:
        log = structlog.get_logger("darkroom.test")
        progress.update(0, 4)
        log.info("model loaded", model="stub")
        progress.update(2, 4)
        logging.getLogger("diffusers").warning("a library speaks")
        log.warning("slow step", seconds=3)
        progress.update(4, 4)
        progress.close()
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h.get_name() == "darkroom"]:
            root.removeHandler(handler)
    screen = term.screen()
    bars = [line for line in screen if line.startswith("[")]
    texts = [line for line in screen if not line.startswith("[")]
    # Every log line stands whole on a line of its own, none glued to a bar.
    assert len(texts) == 3, screen
    assert "model loaded" in texts[0] and "a library speaks" in texts[1] and "slow step" in texts[2]
    assert all("jobs" not in line for line in texts)
    # One bar on screen at the end, below the logs, showing the final count.
    assert bars == ["[" + "#" * 30 + "] 4/4 jobs"], screen
    assert screen[-1] == bars[0]


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(out)
    for done in (0, 0, 1, 1, 2):
        progress.update(done, 2)
    progress.close()
    assert out.getvalue() == "progress: 0/2 jobs\nprogress: 1/2 jobs\nprogress: 2/2 jobs\n"
