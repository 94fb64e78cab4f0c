"""Every error Darkroom raises on purpose, in one tree.

Third-party errors (pydantic, yaml, sqlite, watchdog, PIL, backends) are translated into
these at the seam where they are met, so callers catch one family::

    DarkroomError
    ├── ConfigError            the config file or environment is wrong (names key path + file)
    │   └── RuleError          a rule file is wrong (names file:line:col)
    ├── StateLocked            another daemon holds the state directory
    ├── InputError             an input can never be processed as it is (corrupt, unsupported)
    ├── OutputError            an output could not be written (path escapes the sink, disk full)
    │   └── AlreadyCommitted   another daemon already committed this manifest (not a failure)
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
    ``gone`` says the object no longer exists (nothing to quarantine or report)."""

    def __init__(self, message: str, *, gone: bool = False):
        super().__init__(message)
        self.gone = gone


class OutputError(DarkroomError):
    retryable = True


class AlreadyCommitted(OutputError):
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
