"""Logging: one pipeline for structlog events, stdlib ``logging`` and ``warnings``, in every process.

Every line Darkroom writes goes through one handler on the root ``logging`` logger, rendered
by structlog's ``ProcessorFormatter``: our own structlog events, stdlib records from the
backends (``darkroom.backends``) and libraries (diffusers, transformers, huggingface_hub,
APScheduler, botocore, Pillow), ``warnings.warn`` and uncaught exceptions in threads. With
``log: {format: json}`` (or ``auto`` when the output is not a terminal) the output is JSON
lines only, each with ``event``, ``level``, ``logger`` and ``timestamp``; on a terminal,
readable lines.

Under systemd (``$JOURNAL_STREAM`` names the stream we write to) every line starts with its
syslog priority, ``<3>`` for errors, ``<4>`` warnings, ``<6>`` info, ``<7>`` debug (the
sd-daemon(3) prefixes): journald strips it and stores it as ``PRIORITY``, so
``journalctl -p err`` and ``-p warning`` work; ``MESSAGE`` stays the JSON event.

Worker processes are *spawned* and inherit nothing configured here. :func:`configure`
therefore leaves the resolved setup in ``$DARKROOM_LOG_SETUP`` and the worker's entry calls
:func:`configure_worker`, which applies the same setup (or nothing, when the worker belongs
to a process that never configured logging, such as the tests' in-process pools).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

WORKER_ENV = "DARKROOM_LOG_SETUP"
"""``level:format:colors:fd`` as resolved in the main process, e.g. ``info:json:0:1`` (fd 1 is
stdout, 2 stderr)."""

JOURNAL_PRIORITIES: dict[int, int] = {
    logging.CRITICAL: 2,  # crit
    logging.ERROR: 3,  # err
    logging.WARNING: 4,  # warning
    logging.INFO: 6,  # info
    logging.DEBUG: 7,  # debug
}
"""syslog priorities (sd-daemon(3) ``<N>`` prefixes) of the stdlib levels."""

_HANDLER_NAME = "darkroom"

# These libraries give their root logger a stderr handler of its own when first imported:
# diffusers and transformers also stop propagation (their lines skip our handler and come out
# as bare text), huggingface_hub keeps propagating (its lines would come out twice).
_SELF_HANDLING_LIBRARIES = ("diffusers", "transformers", "huggingface_hub")

# The most verbose level each chatty library may log at, whatever ``log.level`` says:
# APScheduler logs every run of every periodic job at INFO, httpx every request, botocore where
# it found credentials, Pillow each PNG chunk at DEBUG.
_LIBRARY_FLOORS: dict[str, int] = {
    "apscheduler": logging.WARNING,
    "asyncio": logging.WARNING,
    "boto3": logging.WARNING,
    "botocore": logging.WARNING,
    "filelock": logging.WARNING,
    "httpcore": logging.WARNING,
    "httpx": logging.WARNING,
    "PIL": logging.WARNING,
    "s3transfer": logging.WARNING,
    "urllib3": logging.WARNING,
    "watchdog": logging.WARNING,
}


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route everything this process logs to ``stream`` (stdout) as ``fmt``; remember it for
    the workers this process spawns. Commands whose results go to stdout pass stderr."""
    stream = stream or sys.stdout
    tty = stream.isatty()
    resolved = ("console" if tty else "json") if fmt == "auto" else fmt
    colors = resolved == "console" and tty
    _install(level, resolved, colors, stream)
    fd = 2 if stream is sys.stderr or _fileno(stream) == 2 else 1
    os.environ[WORKER_ENV] = f"{level}:{resolved}:{int(colors)}:{fd}"


def configure_worker() -> None:
    """In a spawned worker: the setup :func:`configure` left in the environment, if any."""
    setup = os.environ.get(WORKER_ENV, "")
    parts = setup.split(":")
    if len(parts) == 3:  # left by an earlier version
        parts.append("1")
    if len(parts) != 4:
        return
    level, fmt, colors, fd = parts
    _install(level, fmt, colors == "1", sys.stderr if fd == "2" else sys.stdout)


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def writes_to_journal(stream: TextIO) -> bool:
    """True when ``stream`` is the journal stream systemd gave this service: ``$JOURNAL_STREAM``
    is ``<device>:<inode>`` of it (sd-daemon(3)); a service whose output systemd sends to a
    file, or a command run by hand from a service's shell, inherits the variable but not the
    stream, so both must match."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no real file behind it (tests, io.StringIO)
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


class JournalFormatter(logging.Formatter):
    """Prefixes every line of ``inner``'s output with the record's syslog priority, so
    journald files it under that priority (a multi-line traceback is several journal
    entries, each with the right one)."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return prefix + self.inner.format(record).replace("\n", "\n" + prefix)


class EventFormatter(logging.Formatter):
    """Renders structlog's events and stdlib records alike, as structlog's
    ``ProcessorFormatter`` does, without the copy of every record it makes first.

    A structlog event reaches the handler as a record whose ``msg`` is the event dict
    (``wrap_for_formatter``): it is rendered from a copy of that dict. Any other record
    (libraries, backends) becomes ``{"event": its message}`` and goes through ``pre_chain``
    (level, logger name, timestamp) first. The record itself is never changed, so another
    handler (pytest's ``caplog``) sees it as logged. Intake logs a line per file; the copy
    was a quarter of a line's cost."""

    def __init__(self, pre_chain: list[Processor], rendering: list[Processor]):
        super().__init__()
        self.pre_chain = pre_chain
        self.rendering = rendering

    def format(self, record: logging.LogRecord) -> str:
        logger = getattr(record, "_logger", None)
        event: Any
        if logger is not None and isinstance(record.msg, dict):
            method = getattr(record, "_name", record.levelname.lower())
            event = dict(record.msg)
        else:
            logger, method = None, record.levelname.lower()
            # add_logger_name reads the name from "_record" (removed before rendering).
            event = {"event": record.getMessage(), "_record": record}
            if record.exc_info:
                event["exc_info"] = record.exc_info
            if record.stack_info:
                event["stack_info"] = record.stack_info
            for processor in self.pre_chain:
                event = processor(logger, method, event)
            event.pop("_record", None)
        for processor in self.rendering:
            event = processor(logger, method, event)
        return event if isinstance(event, str) else str(event)


def journal_priority(levelno: int) -> int:
    """The syslog priority of a stdlib level (custom levels: the next more severe one)."""
    for threshold in sorted(JOURNAL_PRIORITIES):
        if levelno <= threshold:
            return JOURNAL_PRIORITIES[threshold]
    return JOURNAL_PRIORITIES[logging.CRITICAL]


def _install(level: str, fmt: str, colors: bool, stream: TextIO) -> None:
    threshold = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    rendering: list[Processor] = []
    if fmt == "json":
        rendering += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:  # the console renderer lays out tracebacks itself
        rendering.append(structlog.dev.ConsoleRenderer(colors=colors))

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    formatter: logging.Formatter = EventFormatter(shared, rendering)
    if writes_to_journal(stream):
        formatter = JournalFormatter(formatter)
    handler.setFormatter(formatter)
    # No line of ours shows where it was logged from (file, line, function): skip the
    # frame walk every record makes to find out (the logging HOWTO's "Optimization"), a
    # fifth of a line's cost, and intake logs a line per file.
    logging._srcfile = None
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)  # configured again (tests, reload): replace, never duplicate
    root.addHandler(handler)
    root.setLevel(threshold)
    for name, floor in _LIBRARY_FLOORS.items():
        logging.getLogger(name).setLevel(max(floor, threshold))
    for name in _SELF_HANDLING_LIBRARIES:
        _adopt(name)
    warnings.showwarning = _show_warning
    threading.excepthook = _thread_exception


class _AdoptedLibraryLogger(logging.Logger):
    """A library's root logger that ignores the library's own stderr handler and its
    ``propagate = False``, so its records reach the root handler like everyone else's.

    Created before the library is imported; the library then finds it by name."""

    def addHandler(self, hdlr: logging.Handler) -> None:
        if type(hdlr) is logging.StreamHandler:
            return  # the library's default stderr handler
        super().addHandler(hdlr)

    @property
    def propagate(self) -> bool:
        return True

    @propagate.setter
    def propagate(self, value: bool) -> None:
        pass


def _adopt(name: str) -> None:
    manager = logging.Logger.manager
    existing = manager.loggerDict.get(name)
    if isinstance(existing, logging.Logger):
        # Imported before logging was configured: undo what it did to its root logger.
        for handler in [h for h in existing.handlers if type(h) is logging.StreamHandler]:
            existing.removeHandler(handler)
        existing.propagate = True
        return
    saved = manager.loggerClass
    manager.loggerClass = _AdoptedLibraryLogger
    try:
        logging.getLogger(name)
    finally:
        manager.loggerClass = saved


_original_showwarning = warnings.showwarning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    if file is not None:  # a caller that asked for this very file gets it
        _original_showwarning(message, category, filename, lineno, file, line)
        return
    structlog.get_logger("py.warnings").warning(
        str(message), category=category.__name__, location=f"{filename}:{lineno}"
    )


def _thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    thread = args.thread.name if args.thread else None
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    structlog.get_logger("darkroom.threads").error(
        "uncaught exception in thread", thread=thread, exc_info=exc_info
    )
