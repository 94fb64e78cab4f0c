"""Progress of a one-shot command (``darkroom process``) on stderr, which log lines don't break.

    progress = Progress(sys.stderr)
    logs.configure(level, fmt, stream=progress.log_stream())   # logs pass through it
    progress.update(done, total)
    progress.close()

On a terminal it draws one bar and redraws it in place; a log line first erases the bar,
is written whole, and the bar is drawn again below it. Elsewhere (a file, a pipe, CI) it
writes a plain line each time the count changes, and never a carriage return. Results go to
stdout, never through here.
"""

from __future__ import annotations

import io
import threading
from typing import TextIO, cast

__all__ = ["Progress"]

_ERASE_LINE = "\r\033[K"


class Progress:
    """A bar (terminal) or plain lines (anything else) counting ``what`` on ``stream``."""

    def __init__(self, stream: TextIO, what: str = "jobs", width: int = 30):
        self.stream = stream
        self.tty = _isatty(stream)
        self.what, self.width = what, width
        self._lock = threading.RLock()
        self._bar = ""  # the bar as drawn now; "" when none is on screen
        self._last: tuple[int, int] | None = None

    def update(self, done: int, total: int) -> None:
        with self._lock:
            if self.tty:
                filled = int(self.width * done / max(total, 1))
                self._bar = (
                    f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {self.what}"
                )
                self.stream.write(_ERASE_LINE + self._bar)
            elif (done, total) != self._last:
                self.stream.write(f"progress: {done}/{total} {self.what}\n")
            self._last = (done, total)
            self.stream.flush()

    def close(self) -> None:
        """Leave the last bar on screen and end its line."""
        with self._lock:
            if self._bar:
                self.stream.write("\n")
                self.stream.flush()
            self._bar = ""

    def log_stream(self) -> TextIO:
        """A stream for the log handler: what it writes goes to ``stream`` around the bar."""
        return cast(TextIO, _AroundTheBar(self))

    def _write_log(self, text: str, mid_line: bool) -> bool:
        """Write ``text`` (from a log handler); returns whether a line is left unfinished."""
        with self._lock:
            if self._bar and not mid_line:
                self.stream.write(_ERASE_LINE)
            self.stream.write(text)
            mid_line = not text.endswith("\n")
            if self._bar and not mid_line:
                self.stream.write(self._bar)
            return mid_line


class _AroundTheBar(io.TextIOBase):
    """The log handler's stream: erases the bar before a line and draws it again after."""

    def __init__(self, progress: Progress):
        super().__init__()
        self._progress = progress
        self._mid_line = False

    def write(self, text: str) -> int:
        self._mid_line = self._progress._write_log(text, self._mid_line)
        return len(text)

    def flush(self) -> None:
        self._progress.stream.flush()

    def isatty(self) -> bool:
        return self._progress.tty

    def fileno(self) -> int:
        return self._progress.stream.fileno()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
