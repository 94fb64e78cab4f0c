"""S3 ``mode: poll``: the prefix is listed at start and every ``poll_interval`` seconds.

Listing is all there is: a version is emitted when a listing finds it and ``known()`` does not
confirm it (daemon.sources.s3.common). Nothing needs acknowledging, so settling a version only
lets the next listing skip it.
"""

from __future__ import annotations

import structlog

from daemon.sources.s3.common import PrefixObjects, Version

log = structlog.get_logger("darkroom.sources")

__all__ = ["PollMode"]


class PollMode:
    """Lists on the app's scheduler; the startup listing runs on the source's thread."""

    name = "poll"
    task = "s3-poll"  # the scheduler job: "s3-poll:<source>", every ``interval`` seconds
    listing_grace: float | None = None  # every object listed is offered

    def __init__(self, objects: PrefixObjects, interval: float) -> None:
        self.objects = objects
        self.interval = float(interval)
        self.thread_name = f"darkroom-s3-scan:{objects.source}"

    def run(self) -> None:
        """The startup listing (on a short-lived thread, so ``start()`` does not block)."""
        try:
            self.objects.scan()
        except Exception:
            log.exception("startup listing failed", source=self.objects.source)

    def stop(self) -> None:
        """Nothing held: the thread ends with its listing."""

    def settle(self, version: Version, outcome: str) -> None:
        self.objects.settled(version, outcome)

    def read_failed(self, version: Version, superseded: bool) -> None:
        # Forgotten either way: the next listing offers the object as it is then.
        self.objects.settled(version, "superseded" if superseded else "unreadable")
