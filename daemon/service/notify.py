"""Talking to systemd: ``sd_notify`` without libsystemd, a health-gated watchdog.

The protocol is one datagram of ``KEY=VALUE`` lines to the unix socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means Linux's abstract namespace). Outside systemd
the variable is unset and every call here is a no-op; no call ever raises: a daemon
must not die because its supervisor went away (the first failure is logged, later
ones only at debug level).

    notifier = Notifier.from_env()
    notifier.ready()                      # Type=notify: the unit is "active" from now on
    notifier.status("3 queued, 1 running")
    notifier.reloading(); ...; notifier.ready()   # around a SIGHUP reload
    notifier.stopping()                   # at the start of a graceful stop

:class:`Watchdog` sends ``WATCHDOG=1`` every half ``WatchdogSec=`` **only while**
``is_healthy()`` says so: a process whose worker sits on a poisoned CUDA context is alive
but useless, and the watchdog is how systemd finds out and restarts it.
:class:`Heartbeats` is a small way to build that ``is_healthy``: named beats, each with
the age past which it counts as stale.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

log = structlog.get_logger("darkroom.notify")

__all__ = ["Heartbeats", "Notifier", "Watchdog"]


class Notifier:
    """One service's channel to systemd. Build it with :meth:`from_env`."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None):
        self.address = address
        # WATCHDOG_USEC as systemd passed it (None: no WatchdogSec=, or meant for another pid).
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, unset: bool = False) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``.

        ``unset=True`` removes them from ``os.environ`` so that child processes (the
        spawned GPU workers) do not believe they are the service; with
        ``NotifyAccess=main`` systemd would ignore them anyway.
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            # vsock: (systemd 254+ in VMs) and anything else we do not speak.
            log.warning(
                "NOTIFY_SOCKET is not a unix socket path; systemd notifications are off",
                notify_socket=address,
            )
            address = None
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if raw:
            try:
                usec = int(raw)
            except ValueError:
                log.warning("WATCHDOG_USEC is not a number; the watchdog is off", value=raw)
            else:
                if usec <= 0:
                    usec = None
            if pid and pid.strip() != str(os.getpid()):
                usec = None  # the watchdog is meant for another process (we are a child)
        if unset and environ is None:
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(name, None)
        return cls(address, usec)

    # -- state -----------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether we run under systemd with a notification socket."""
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """``WatchdogSec=`` in seconds, or None when systemd expects no pings from us."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 1_000_000

    # -- messages --------------------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status`` (newlines are flattened)."""
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def reloading(self, status: str | None = None) -> bool:
        """A reload has begun; send :meth:`ready` when it is done. ``MONOTONIC_USEC``
        is what ``Type=notify-reload`` (systemd 253+) needs; older systemd ignores it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(
            "RELOADING=1", f"MONOTONIC_USEC={usec}", *([f"STATUS={status}"] if status else [])
        )

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more from now for the current start, stop or reload
        (``EXTEND_TIMEOUT_USEC``): for model preloads and draining a long job."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def errno(self, n: int) -> bool:
        """The errno-style reason for a failure (shown by ``systemctl status``)."""
        return self.notify(f"ERRNO={int(n)}")

    def notify(self, *lines: str) -> bool:
        """Send the lines as one datagram. True if it was sent; never raises."""
        if self.address is None:
            return False
        payload = "\n".join(lines).encode()
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with self._lock:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._sock.sendto(payload, target)
            return True
        except Exception as exc:  # noqa: BLE001 -- OSError mostly; nothing may escape
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot notify systemd (later failures are logged at debug level)",
                    notify_socket=self.address,
                    reason=str(exc),
                )
            else:
                log.debug("cannot notify systemd", reason=str(exc))
            return False

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class Heartbeats:
    """Named beats with a maximum age each: the daemon's answer to "is work progressing?".

        beats = Heartbeats()
        beats.expect("loop", 30)        # the runner loop turns at least every second
        beats.expect("worker", 900)     # the worker answered a call (or a ping)
        beats.beat("loop")
        ok, details = beats.check()

    A name that was expected but never beat counts from the moment it was expected.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._max_age: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def expect(self, name: str, max_age: float) -> None:
        with self._lock:
            self._max_age[name] = max_age
            self._last.setdefault(name, self._clock())

    def forget(self, name: str) -> None:
        with self._lock:
            self._max_age.pop(name, None)
            self._last.pop(name, None)

    def beat(self, name: str) -> None:
        with self._lock:
            self._last[name] = self._clock()

    def age(self, name: str) -> float | None:
        """Seconds since ``name`` last beat, or None if it never did."""
        with self._lock:
            last = self._last.get(name)
            return None if last is None else self._clock() - last

    def check(self) -> tuple[bool, dict[str, Any]]:
        """(all fresh, {name: {"age": s, "max_age": s, "ok": bool}})."""
        now = self._clock()
        with self._lock:
            details = {
                name: {
                    "age": round(now - self._last[name], 3),
                    "max_age": limit,
                    "ok": now - self._last[name] <= limit,
                }
                for name, limit in self._max_age.items()
            }
        return all(d["ok"] for d in details.values()), details

    def healthy(self) -> bool:
        return self.check()[0]


class Watchdog:
    """Sends ``WATCHDOG=1`` every ``interval / 2`` seconds while ``is_healthy()``.

    ``interval`` is ``notifier.watchdog_interval`` (``WatchdogSec=``); None means systemd
    expects no pings and :meth:`start` does nothing. ``is_healthy`` may return a bool or
    ``(bool, details)`` (like :meth:`Heartbeats.check`); if it raises, that counts as
    unhealthy. Pings stop while unhealthy, so systemd kills and restarts the service
    ``WatchdogSec=`` after the last one; they resume if health comes back first.

    systemd arms its watchdog from READY=1 and keeps it through reloads (keep ticking while
    reloading rules); it disarms it once the unit is stopping (after STOPPING=1 or
    ``systemctl stop``), so a long drain is not cut short by it. Send STOPPING=1 first,
    then :meth:`stop` this whenever convenient.
    """

    def __init__(
        self,
        notifier: Notifier,
        interval: float | None,
        is_healthy: Callable[[], bool | tuple[bool, Any]],
    ):
        self.notifier = notifier
        self.interval = interval
        self.is_healthy = is_healthy
        self.pings = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._was_healthy = True

    @property
    def active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.interval is None or not self.notifier.enabled or self.active:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="darkroom-watchdog", daemon=True)
        self._thread.start()
        log.info("systemd watchdog on", interval=self.interval, ping_every=self.interval / 2)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def tick(self) -> bool:
        """Check health once and ping if healthy; returns whether it pinged."""
        try:
            result = self.is_healthy()
            healthy, details = (
                (result[0], result[1]) if isinstance(result, tuple) else (bool(result), None)
            )
        except Exception as exc:  # noqa: BLE001
            healthy, details = False, {"error": f"{type(exc).__name__}: {exc}"}
        if healthy != self._was_healthy:
            self._was_healthy = healthy
            if healthy:
                log.info("healthy again; watchdog pings resume")
            else:
                log.error(
                    "unhealthy; watchdog pings paused, systemd restarts the service if this lasts",
                    watchdog_sec=self.interval,
                    details=details,
                )
        if healthy and self.notifier.watchdog():
            self.pings += 1
            return True
        return False

    def _run(self) -> None:
        assert self.interval is not None  # start() runs this thread only with an interval
        period = self.interval / 2
        while True:
            self.tick()
            if self._stop.wait(period):
                return
