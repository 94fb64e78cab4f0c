"""Decoding a plan's source image, in a small child process, reduced to what the plan needs.

An input near the decode limit (``limits.max_pixels``, 100 MP) costs hundreds of megabytes
while it is decoded and converted: done in the main process, two pipelines at a time, that
took the daemon to 1.7 GB (issue 15). Here the decode runs in a child process
(:class:`ProcessDecoder`: a spawned pool, each child replaced after a few images so that
its memory goes back to the system), and the child returns the source already reduced to
what the plan's units, sheet and page can use (:func:`decode_source`): an 80 MP photo comes
back as ~3 MP. An image no larger than twice the working size comes back untouched, so
ordinary inputs give exactly the pixels they always did.

Failure classes are kept: a decode error is the file's (InputError, raised in the child and
re-raised here); a child that dies (killed, out of memory, a crashing codec) is the
machine's (EnvironmentFault: the job is held and retried, the input is never quarantined).
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context

import structlog
from PIL import Image

from daemon import faults
from daemon.errors import DarkroomError, EnvironmentFault
from daemon.outputs import imaging

__all__ = ["DecodedSource", "ProcessDecoder", "decode_source", "WORKING_SIDE"]

log = structlog.get_logger("darkroom.decoder")

# The longest side the units, sheet and page are given at most (the largest built-in
# profile's max_side); a source more than twice as long is reduced by a whole factor to
# between one and two times this (or what a step's size or max_side asks, if more).
WORKING_SIDE = 2048
# Images a child decodes before it is replaced (its peak memory is returned to the system).
TASKS_PER_CHILD = 8
# Children decoding at once: the pipelines that prepare jobs in parallel.
CHILDREN = 2
# Seconds the daemon's stop waits for a decode in progress before the children are ended.
CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True)
class DecodedSource:
    """A plan's source image. Shared between threads: use it, never modify it in place."""

    image: Image.Image  # the alpha source: RGBA when the input has alpha, else ``rgb`` itself
    rgb: Image.Image  # upright RGB: what models and the sheet see (maybe reduced, see size)
    icc: bytes | None  # the colour profile the outputs carry
    size: tuple[int, int] = (0, 0)  # the upright size as decoded, before any reduction

    @property
    def source_size(self) -> tuple[int, int]:
        """The input's real (upright) size, whatever ``rgb`` was reduced to."""
        return self.size if self.size != (0, 0) else self.rgb.size


def decode_source(
    data: bytes, name: str, *, animated: str = "first_frame", working_side: int = WORKING_SIDE
) -> DecodedSource:
    """Decode ``data`` (InputError when it is not a complete, sane image) and reduce it by a
    whole factor when its longest side is more than twice ``working_side``."""
    stored = _stored_size(data)
    wanted = max(stored) // max(1, working_side) if stored else 1
    image = imaging.decode(data, name, animated=animated, reduce=wanted)
    icc = imaging.output_icc(image, name)
    early = max(image.size) // max(1, working_side)
    if early >= 2 and image.mode in _REDUCIBLE and "transparency" not in image.info:
        # Before the conversions, which then work on the small image: an 84 MP RGBA texture
        # flattened at full size costs the child 2 GB.
        image = image.reduce(early)
    rgb = imaging.to_rgb(image)
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    alpha = image.convert("RGBA") if has_alpha else rgb
    del image
    size = rgb.size
    if stored and max(stored) != max(size):  # a JPEG decoded at a smaller scale
        size = stored if (size[0] >= size[1]) == (stored[0] >= stored[1]) else stored[::-1]
    factor = max(rgb.size) // max(1, working_side)
    if factor >= 2:
        # A box average over whole blocks: fast, no ringing, and what a resize does first.
        rgb = rgb.reduce(factor)
        alpha = alpha.reduce(factor) if has_alpha else rgb
    return DecodedSource(image=alpha, rgb=rgb, icc=icc, size=size)


# Modes reduced as decoded (8 bits per sample); others are converted to RGB first.
_REDUCIBLE = ("RGB", "RGBA", "L", "LA", "CMYK")


def _stored_size(data: bytes) -> tuple[int, int] | None:
    """The size the header declares (before any EXIF rotation); None when unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a bomb is refused, with its reason, by the decode
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except Exception:  # the decode says what is wrong with it
        return None


def _init_child(max_pixels: int, parent: int) -> None:
    imaging.set_max_pixels(max_pixels)
    # A child waits on its queue forever: if the daemon is killed (kill -9, OOM), it must not
    # linger as an orphan holding memory.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _decode_file(path: str, name: str, animated: str, working_side: int) -> DecodedSource:
    """In the child: the bytes from the temp file ``path``, decoded and reduced."""
    faults.point("in-decoder")  # the reliability suite kills the child here
    with open(path, "rb") as fh:
        data = fh.read()
    return decode_source(data, name, animated=animated, working_side=working_side)


class ProcessDecoder:
    """Decodes in a pool of spawned child processes (CUDA and threads do not survive fork).

    The bytes go to the child through a private temp file (no pickled copy in the main
    process); the reduced image comes back pickled. A pool whose child died is replaced."""

    def __init__(
        self,
        max_pixels: int = imaging.MAX_PIXELS,
        *,
        children: int = CHILDREN,
        tasks_per_child: int = TASKS_PER_CHILD,
        temp_dir: str | None = None,
    ):
        self.max_pixels = max_pixels
        self.children = children
        self.tasks_per_child = tasks_per_child
        self.temp_dir = temp_dir
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise EnvironmentFault("the image decoder is shut down (the daemon is stopping)")
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=self.children,
                    mp_context=get_context("spawn"),
                    initializer=_init_child,
                    initargs=(self.max_pixels, os.getpid()),
                    max_tasks_per_child=self.tasks_per_child,
                )
            return self._executor

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is executor:
                self._executor = None
        executor.shutdown(wait=False, cancel_futures=True)

    def warm(self) -> None:
        """Start the children now (in the background), not on the first image."""
        try:
            self._pool().submit(int)
        except Exception:  # best effort: the first decode starts them anyway
            log.debug("decoder warm-up failed", exc_info=True)

    def pids(self) -> list[int]:
        """The child processes' ids (for operators' tools and tests)."""
        with self._lock:
            executor = self._executor
        processes = getattr(executor, "_processes", None) or {}
        return sorted(processes)

    def decode(
        self,
        data: bytes,
        name: str,
        *,
        animated: str = "first_frame",
        working_side: int = WORKING_SIDE,
    ) -> DecodedSource:
        """:func:`decode_source` in a child: InputError for bad bytes, EnvironmentFault when
        the child died under it."""
        fd, path = tempfile.mkstemp(prefix=".darkroom-decode-", dir=self.temp_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            executor = self._pool()
            try:
                return executor.submit(_decode_file, path, name, animated, working_side).result()
            except DarkroomError as exc:  # the file's fault (or a tool's), told by the child
                raise exc from None  # without the child's traceback text chained to it
            except BrokenProcessPool:
                self._discard(executor)
                log.warning("image decoder process died; the job is held and retried", key=name)
                raise EnvironmentFault(
                    f"{name}: the image decoder process died while decoding (killed, or out of"
                    " memory); the input is kept and the job retried",
                    hint="check the machine's free memory (dmesg shows OOM kills)",
                ) from None
        except OSError as exc:  # the temp file: /tmp full or unwritable
            raise EnvironmentFault(
                f"{name}: cannot hand the image to the decoder ({exc.strerror})",
                hint="free space in the temp folder ($TMPDIR)",
            ) from None
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop the children (at the daemon's stop), waiting at most ``timeout`` seconds for a
        decode in progress before the children are terminated.

        Waiting matters: the pool's call and result queues hold semaphores that are released
        only once its manager thread has ended; a pool merely told to stop left that thread
        running, the daemon then exited without it, and multiprocessing's resource tracker
        warned of "leaked semaphore objects" at every stop."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            _shut_down(executor, timeout)


def _shut_down(executor: ProcessPoolExecutor, timeout: float) -> None:
    """Stop ``executor`` and wait, bounded, for its manager thread to end (which releases the
    pool's queues and their semaphores): children still decoding after ``timeout`` seconds
    are terminated, which ends the thread too."""
    # Taken before shutdown(), which forgets them when not asked to wait.
    manager = getattr(executor, "_executor_manager_thread", None)
    children = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    if manager is None:
        return
    manager.join(timeout)
    if not manager.is_alive():
        return
    for child in children:
        if child.is_alive():
            child.terminate()
    manager.join(timeout)
    if manager.is_alive():
        log.warning("image decoder did not stop in time; left behind", seconds=timeout)
