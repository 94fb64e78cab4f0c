"""The daemon's scheduler: APScheduler 3 with jobs on daemon threads.

APScheduler's default executor runs jobs on a ``concurrent.futures`` thread pool. Those
threads are not daemon threads: the interpreter joins them at exit, and
``shutdown(wait=False)`` does not change that. A periodic S3 listing stuck on an
unresponsive endpoint (botocore: read timeout x retries, minutes) would then hold the
process long after SIGTERM. Here each run gets its own daemon thread instead: a stuck job
never delays the exit, and ``max_instances`` still keeps a second run of it from starting.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.schedulers.background import BackgroundScheduler

__all__ = ["DaemonThreadExecutor", "build_scheduler"]


class DaemonThreadExecutor(BaseExecutor):
    """Runs every job on a fresh daemon thread (periodic jobs here run every few seconds at
    most, so a thread per run costs nothing worth pooling)."""

    def _do_submit_job(self, job: Any, run_times: list[Any]) -> None:
        def run() -> None:
            try:
                events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException:
                _, exc, tb = sys.exc_info()
                self._run_job_error(job.id, exc, tb)
            else:
                self._run_job_success(job.id, events)

        threading.Thread(target=run, name=f"darkroom-job:{job.id}", daemon=True).start()

    def shutdown(self, wait: bool = True) -> None:
        """Nothing to wait for: running jobs end with the process."""


def build_scheduler() -> Any:
    """A background scheduler whose jobs never delay the process's exit."""
    return BackgroundScheduler(daemon=True, executors={"default": DaemonThreadExecutor()})
