"""Building the runner from the settings: its batching and priority knobs, the C2PA signer
it signs outputs with, and the child-process decoder it reads sources through."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from daemon.config.profiles import Profile
from daemon.config.settings import Settings
from daemon.execution.decoder import ProcessDecoder
from daemon.execution.pool import Pool
from daemon.execution.runner import Runner
from daemon.hooks import Hooks
from daemon.outputs import imaging
from daemon.outputs.c2pa import ContentCredentials
from daemon.queue.ledger import Ledger
from daemon.sinks.base import Sink
from daemon.sources.base import Source

__all__ = ["build_runner", "content_credentials", "start_decoder"]


def content_credentials(settings: Settings) -> ContentCredentials | None:
    """The C2PA signer of ``outputs.c2pa``, proven to sign before READY (a wrong key or
    an expired certificate stops the start with the file and the fix)."""
    c = settings.outputs.c2pa
    if c is None:
        return None
    return ContentCredentials.load(c.cert, c.key, c.alg, c.timestamp_url)


def build_runner(
    settings: Settings,
    ledger: Ledger,
    sources: Mapping[str, Source],
    sinks: Mapping[str, Sink],
    pool: Pool,
    profiles: Mapping[str, Profile],
    *,
    hooks: Hooks,
    tick: Callable[[], None],
    credentials: ContentCredentials | None,
) -> Runner:
    """The runner, with ``worker:``'s device, ping interval, batching and priorities."""
    return Runner(
        ledger,
        sources,
        sinks,
        pool,
        profiles,
        settings.worker.device,
        hooks=hooks,
        tick=tick,
        ping_interval=settings.worker.ping_interval,
        max_batch=settings.worker.max_batch,
        max_wait_ms=settings.worker.max_wait_ms,
        priorities=settings.worker.priorities,
        credentials=credentials,
    )


def start_decoder(settings: Settings, runner: Runner) -> ProcessDecoder:
    """The runner's source decoder, started: sources are decoded in child processes and come
    back reduced to what the plans need, so the main process stays small whatever arrives."""
    # The decode limit is one number in every process that decodes (issue 15).
    imaging.set_max_pixels(settings.limits.max_pixels)
    decoder = ProcessDecoder(settings.limits.max_pixels)
    runner.source_cache.decoder = decoder
    decoder.warm()
    return decoder
