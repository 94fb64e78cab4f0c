"""Task ``stub``: an instant, deterministic stand-in for a model, for the daemon's own tests.

For each (image, seed), input-major, the output is the input (resized to params ``width`` x
``height`` when given) blended half-and-half with a solid colour derived from the seed: the
same seed gives identical bytes, different seeds visibly different images. No torch. The
first reference image, if any, is blended into the input; a mask limits the change to its
white area — so tests can see that references and masks arrived.

Test hooks, through params:

- ``stub_sleep``: seconds to sleep in each ``run``;
- ``stub_running``: a file path, created when ``run`` begins (before the sleep), so a test
  knows the model call is under way rather than guessing from log timing;
- ``stub_fail``: ``invalid`` -> InvalidRequest (from ``validate``), ``error`` -> BackendError,
  ``oom`` -> DeviceError(out_of_memory=True), ``sticky`` -> DeviceError(sticky=True),
  ``crash`` -> the process exits with status 3, ``segfault`` -> the process gets SIGSEGV;
- ``stub_fail_once``: a file path; ``stub_fail`` then fails only while that file does not
  exist, and creates it just before failing, so a retry (in any process) succeeds;
- ``stub_oom_above``: an integer; a call with more outputs than that (images x seeds) raises
  DeviceError(out_of_memory=True), as a real model does when a batch is too big;
- ``stub_fail_offload``: with ``stub_fail``, fail only while the spec has no ``cpu_offload``
  option (the pool's last resort after out-of-memory errors).

Spec options: ``stub_memory_gb`` is the size the backend reports for itself
(``memory_bytes``), so the worker's memory budget and eviction can be tested without a model.

Model ``stub:slow-load`` takes one second to load; any other model loads instantly.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path
from typing import ClassVar

from backends.base import BackendError, DeviceError, InvalidRequest, ModelSpec, Request, Result

FAIL_MODES = ("invalid", "error", "oom", "sticky", "crash", "segfault")
SLOW_LOAD_MODEL = "stub:slow-load"
SLOW_LOAD_SECONDS = 1.0


def seed_colour(seed: int) -> tuple[int, int, int]:
    """A solid colour for ``seed``: stable across processes and Python versions."""
    digest = hashlib.sha256(str(seed).encode()).digest()
    return digest[0], digest[1], digest[2]


class StubBackend:
    task: ClassVar[str] = "stub"

    def __init__(self, spec: ModelSpec, cache_dir: Path) -> None:
        self.spec = spec
        self.cache_dir = Path(cache_dir)
        self.loaded = False

    @property
    def memory_bytes(self) -> int:
        return int(float(self.spec.option("stub_memory_gb", 0) or 0) * 1024**3)

    def load(self) -> None:
        if not self.loaded and self.spec.model == SLOW_LOAD_MODEL:
            time.sleep(SLOW_LOAD_SECONDS)
        self.loaded = True

    def validate(self, request: Request) -> None:
        fail = request.params.get("stub_fail")
        if fail is not None and fail not in FAIL_MODES:
            raise InvalidRequest(f"stub_fail {fail!r} is not one of {', '.join(FAIL_MODES)}")
        if fail == "invalid" and self._fail_mode(request):
            raise InvalidRequest("stub_fail=invalid: this request can never succeed (test hook)")
        if not request.images:
            raise InvalidRequest("stub needs at least one input image")
        if not request.seeds:
            raise InvalidRequest("stub needs at least one seed (one output per seed)")
        size = self._size(request)
        if size is not None and (size[0] < 1 or size[1] < 1):
            raise InvalidRequest(f"width and height must be positive, not {size[0]}x{size[1]}")

    def run(self, request: Request) -> Result:
        from PIL import Image

        self.validate(request)
        self.load()
        started = time.perf_counter()
        running = request.params.get("stub_running")
        if running:
            Path(str(running)).touch()
        sleep = float(request.params.get("stub_sleep", 0) or 0)
        if sleep > 0:
            time.sleep(sleep)
        limit = request.params.get("stub_oom_above")
        if limit is not None and len(request.images) * len(request.seeds) > int(limit):
            raise DeviceError(
                f"stub_oom_above={limit}: out of memory for "
                f"{len(request.images) * len(request.seeds)} outputs",
                out_of_memory=True,
            )
        if not (request.params.get("stub_fail_offload") and self.spec.option("cpu_offload")):
            self._fail(self._fail_mode(request))
        size = self._size(request)
        outputs = []
        for image in request.images:
            base = image.convert("RGB")
            if size is not None and base.size != size:
                base = base.resize(size, Image.Resampling.BILINEAR)
            if request.references:
                # Visible proof that references reached the backend: the first one shows through.
                reference = request.references[0].convert("RGB").resize(base.size)
                base = Image.blend(base, reference, 0.5)
            for seed in request.seeds:
                solid = Image.new("RGB", base.size, seed_colour(seed))
                out = Image.blend(base, solid, 0.5)
                if request.mask is not None:
                    # Only the masked (white) area changes: the rest stays the input.
                    out = Image.composite(out, base, request.mask.convert("L").resize(base.size))
                outputs.append(out)
        return Result(
            images=outputs,
            seconds=time.perf_counter() - started,
            info={
                "model": self.spec.model,
                "seeds": list(request.seeds),
                "n_outputs": len(outputs),
                "pid": os.getpid(),
            },
        )

    def unload(self) -> None:
        self.loaded = False

    @staticmethod
    def _size(request: Request) -> tuple[int, int] | None:
        width, height = request.params.get("width"), request.params.get("height")
        if width is None and height is None:
            return None
        first = request.images[0].size if request.images else (64, 64)
        try:
            return int(width or first[0]), int(height or first[1])
        except (TypeError, ValueError):
            raise InvalidRequest(
                f"width/height must be integers, not {width!r}x{height!r}"
            ) from None

    @staticmethod
    def _fail_mode(request: Request) -> str | None:
        """``stub_fail``, unless ``stub_fail_once`` names a file that exists (then None).

        Creates the file when it returns a mode: the caller is about to fail.
        """
        mode = request.params.get("stub_fail")
        once = request.params.get("stub_fail_once")
        if mode is None or not once:
            return mode
        marker = Path(once)
        if marker.exists():
            return None
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return mode

    def _fail(self, mode: str | None) -> None:
        if mode == "error":
            raise BackendError("stub_fail=error: the backend failed (test hook)")
        if mode == "oom":
            message = f"stub_fail=oom: out of memory on {self.spec.device}"
            raise DeviceError(message, out_of_memory=True)
        if mode == "sticky":
            message = f"stub_fail=sticky: device {self.spec.device} is unusable"
            raise DeviceError(message, sticky=True)
        if mode == "crash":
            os._exit(3)
        if mode == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
            time.sleep(5)  # the signal is delivered asynchronously on some platforms
