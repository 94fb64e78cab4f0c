"""The contract every model backend fulfils.

A backend turns one :class:`Request` (input images, a prompt, one seed per variant and
task parameters) into one :class:`Result` (one image per seed). It is created once per
:class:`ModelSpec` inside a worker process, loaded once, and then reused for every job
that names the same spec: loading is the expensive part, never done per job.

This module imports neither torch nor diffusers, so the daemon can build requests and
validate parameters without paying for them.

Exceptions::

    BackendError                 anything a backend reports (plain: transient, retry later)
    ├── InvalidRequest           parameters that can never work: fix the rule or profile
    │   └── Refused              a hosted provider refused the content (safety, moderation)
    ├── ModelUnavailable         weights not found locally / cannot be built
    │   └── ConfigurationFault   key, model id, quota or credits of a hosted account: hold
    ├── OutcomeUnknown           a paid request may have run; it was not resent: no retry
    ├── BackendMissing           an optional dependency of a task is not installed
    └── DeviceError              the device failed (OOM, a poisoned CUDA context)

A worker reports an error to the daemon by class name; ``DISPOSITIONS`` says what each
name means for the job (``disposition(name)``), so the daemon never has to import a class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from PIL.Image import Image


class BackendError(Exception):
    """Base of every error a backend raises; the message is shown to the user."""


class InvalidRequest(BackendError):
    """The request can never succeed as written; retrying will not help."""


class ModelUnavailable(BackendError):
    """The model's weights are not available on this machine."""


class Refused(InvalidRequest):
    """The provider refused this content (safety filter, moderation); the message carries its
    reason. Retrying the same input and prompt is refused again (and may be charged again)."""


class ConfigurationFault(ModelUnavailable):
    """The account, not the input, is wrong: key refused, model id unknown or retired for this
    key, quota used up for the day, no credits left. Hold the job (keep the input, do not
    quarantine, do not retry on a timer) until an operator fixes the configuration."""


class OutcomeUnknown(BackendError):
    """A request that may have started paid work got no usable answer (read timeout, 5xx, a task
    still running past its deadline). It is never resent automatically: that could pay twice.
    ``request_id`` is the provider's id for the operator's enquiry, when there was one."""

    def __init__(self, message: str, *, request_id: str | None = None):
        super().__init__(message)
        self.request_id = request_id


class BackendMissing(BackendError):
    """A Python package the task needs is not installed."""


class DeviceError(BackendError):
    """The device failed; ``sticky`` means the worker process must be replaced."""

    def __init__(self, message: str, *, sticky: bool = False, out_of_memory: bool = False):
        super().__init__(message)
        self.sticky = sticky
        self.out_of_memory = out_of_memory


# What the daemon should do with a job whose backend raised the class of this name:
# "retry" later with backoff, "fail" for good (an operator may retry by hand), "hold" until the
# configuration is fixed. Names, not classes: a worker sends only the name across the pipe.
DISPOSITIONS: dict[str, str] = {
    "BackendError": "retry",
    "DeviceError": "retry",
    "InvalidRequest": "fail",
    "Refused": "fail",
    "OutcomeUnknown": "fail",
    "BackendMissing": "fail",
    "ModelUnavailable": "fail",
    "ConfigurationFault": "hold",
}


def disposition(name: str) -> str:
    """``DISPOSITIONS[name]``; an unknown name is retried (the old default)."""
    return DISPOSITIONS.get(name, "retry")


@dataclass(frozen=True)
class ModelSpec:
    """What to load, and where. Equal specs share one loaded pipeline in a worker.

    ``model`` is a Hugging Face repo id (``stabilityai/sd-turbo``), a local directory, or
    ``random:NAME`` for a random-weight pipeline built from ``backends/random_configs/NAME``.
    """

    task: str
    model: str
    revision: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    # Hashable on purpose: specs are dictionary keys in the worker's pipeline cache.
    # Values are frozen (lists -> tuples, dicts -> sorted item tuples); use option().
    options: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def freeze_options(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted((k, _freeze(v)) for k, v in options.items()))

    def option(self, name: str, default: Any = None) -> Any:
        """An option as plain data again (lists and dicts thawed)."""
        for key, value in self.options:
            if key == name:
                return _thaw(value)
        return default


class _FrozenDict(tuple):
    """A dict frozen into a tuple of pairs, told apart from a frozen list."""


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _FrozenDict(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, _FrozenDict):
        return {k: _thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass
class Request:
    """One call: every image in ``images`` is an input for every seed.

    ``images`` are RGB PIL images already decoded and sized by the caller; the backend
    never touches the filesystem for inputs. ``references`` are extra images that steer
    every output (identity, style: IP-Adapter, multi-image editing). ``mask`` (mode "L",
    the size of the inputs; white = change, black = keep) selects what an edit may touch.
    """

    images: list[Image]
    prompt: str
    seeds: list[int]
    negative_prompt: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    references: list[Image] = field(default_factory=list)
    mask: Image | None = None


@dataclass
class Video:
    """A clip: RGB frames at ``fps``. The caller encodes it (mp4, webp, gif)."""

    frames: list[Image]
    fps: float

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps if self.fps else 0.0


@dataclass
class Result:
    """Outputs input-major: for each input image, one output per seed.

    Image tasks fill ``images``. Video tasks fill ``videos`` too, one per output, and put
    each clip's first frame in ``images`` (the poster), so both lists line up. A hosted
    model may refuse single outputs: their slot is ``None`` and ``info["outputs"][k]``
    carries the provider's ``refusal`` (the others are kept: they were paid for).
    """

    images: list[Image]
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    videos: list[Video] | None = None


class Backend(Protocol):
    """A loaded model for one task. Implementations live one per file in ``backends/``."""

    task: ClassVar[str]

    def __init__(self, spec: ModelSpec, cache_dir: Path) -> None: ...

    def load(self) -> None:
        """Load weights onto the device. Raises ModelUnavailable / BackendMissing."""

    def validate(self, request: Request) -> None:
        """Raise InvalidRequest with a message that says what to change."""

    def run(self, request: Request) -> Result:
        """Run the model. Must be deterministic for a given spec, request and seeds."""

    def unload(self) -> None:
        """Free the device memory held by this backend."""
