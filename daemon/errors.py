"""Every error Darkroom raises on purpose, in one tree.

Third-party errors (pydantic, yaml, sqlite, watchdog, PIL, backends) are translated into
these at the seam where they are met, so callers catch one family::

    DarkroomError
    ├── ConfigError            the config file or environment is wrong (names key path + file)
    │   └── RuleError          a rule file is wrong (names file:line:col)
    ├── StateLocked            another daemon holds the state directory
    ├── InputError             an input can never be processed as it is (corrupt, unsupported)
    │                          (alias InputFault): the input is quarantined with the reason
    │   └── InputChanged       a newer version replaced the bytes: processed on its own
    ├── UploadInProgress       a decode failure on a file that may still be arriving: wait
    ├── EnvironmentFault       the machine, not the input, is wrong (missing API key, weights or
    │                          tool; sink, bucket, queue or credentials wrong; disk full; provider
    │                          5xx/429 or quota; OOM after the ladder): the job is HELD, the input
    │                          stays, retries back off without consuming attempts
    ├── OutputError            an output could not be written (path escapes the sink, disk full)
    │   └── WriteConflict      a conditional write lost to another writer (re-read, retry)
    │       └── AlreadyCommitted   another daemon already committed this manifest (not a failure)
    └── JobError               a job failed while running
        ├── WorkerDied         the worker process died under the job (or did not answer in time)
        ├── OutOfMemory        the device ran out of memory for this call; a smaller one may fit
        └── BudgetReached      a rule's daily spend on hosted models is used up: the job waits

``retryable`` says whether trying the same job again later can help. Errors a backend raises
inside a worker process (``backends.base``) cross the pipe by class name and are translated
into ``JobError``/``WorkerDied``/``OutOfMemory`` by :mod:`daemon.execution.pool`.
"""

from __future__ import annotations

from dataclasses import dataclass


class DarkroomError(Exception):
    retryable = False


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file, located: ``where`` is ``file:line:col`` or ``file: key.path``."""

    where: str
    message: str
    hint: str | None = None
    # A file the rule names does not exist yet: the user may still add it, so the daemon
    # sets such a rule aside and accepts it once the file is there (daemon/service/reload.py).
    missing_file: bool = False

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


class ConfigError(DarkroomError):
    """Carries every problem found, so a user fixes them all in one go."""

    def __init__(self, problems: list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem("config", problems)]
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class RuleError(ConfigError):
    pass


class StateLocked(DarkroomError):
    """Another daemon holds the state directory's lock."""


class InputError(DarkroomError):
    """Corrupt, unsupported or vanished input: retrying the same bytes cannot help.
    ``gone`` says the object no longer exists (nothing to quarantine or report).
    ``retryable`` marks a doubtful case (a decoder raised something unexpected): it is tried
    again up to the job's attempts, then quarantined like any input fault."""

    def __init__(self, message: str, *, gone: bool = False, retryable: bool = False):
        super().__init__(message)
        self.gone = gone
        self.retryable = retryable


InputFault = InputError
"""The issue's name for :class:`InputError`: the bytes are bad, so the input is quarantined."""


class InputChanged(InputError):
    """The input no longer holds the bytes a plan was made for: a newer version replaced them
    (a re-export, an upload that went on) - or one of its companions changed. That version is
    processed on its own, so these bytes are never quarantined: nothing is moved and no
    quarantine record is written. A job it ends carries SUPERSEDED before its reason."""


# How a job's recorded reason starts when an InputChanged ended it: its plan's input is not
# put aside (the finalizer reads this; the ledger keeps reasons as text).
SUPERSEDED = "superseded: "


class UploadInProgress(DarkroomError):
    """The input failed to decode but may still be arriving (a writer that paused longer than
    the quiet period, rsync ``--partial``): the job waits ``retry_in`` seconds, without
    spending an attempt, and then checks again. Quarantine comes only once the file has stayed
    unchanged long enough (``quiet_period``; ``truncated_grace`` when it looks truncated)."""

    retryable = True

    def __init__(self, message: str, *, retry_in: float):
        super().__init__(message)
        self.retry_in = retry_in


class EnvironmentFault(DarkroomError):
    """Something around the job is wrong, not the input: a missing API key, weights or external
    tool (Ghostscript), a sink/bucket/queue that is unreachable or missing, bad credentials, a
    full disk (ENOSPC/EDQUOT), a hosted provider's 5xx/429 or quota, OOM after the ladder.

    The job is held (``JobState.HELD``) with ``str(error)`` as its reason; its input stays where
    it is (never quarantined, never failed) and it is retried with capped exponential backoff
    without consuming attempts, and at once on a config reload or ``darkroom retry``.
    ``hint`` says how to fix the cause, shown next to the reason."""

    retryable = True

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(f"{message} (hint: {hint})" if hint else message)
        self.hint = hint


class OutputError(DarkroomError):
    retryable = True


class WriteConflict(OutputError):
    """A conditional write found another version than the one it was told to replace
    (another writer got there first): re-read and decide again."""

    retryable = False


class AlreadyCommitted(WriteConflict):
    """The manifest exists already: another daemon sharing the sink finished this source."""

    retryable = False


class JobError(DarkroomError):
    retryable = True

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class WorkerDied(JobError):
    """The worker process died, hung past its time limit or failed its device check; the
    pool replaces it and the job is retried (or put back, when the daemon is stopping)."""


class OutOfMemory(JobError):
    """The device ran out of memory for this call; a smaller one may fit."""


class BudgetReached(JobError):
    """A rule's daily spend on hosted models is used up: the job is deferred to midnight,
    not failed (the runner checks for this class before any other)."""

    def __init__(self, message: str):
        super().__init__(message, retryable=True)
