"""StubBackend: deterministic, instant, and every failure the daemon must survive."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from backends import (
    BackendError,
    DeviceError,
    InvalidRequest,
    ModelSpec,
    Request,
    backend_class,
)
from backends.stub import StubBackend

REPO = Path(__file__).resolve().parents[2]


def stub(model: str = "stub:test") -> StubBackend:
    backend = StubBackend(ModelSpec(task="stub", model=model), Path("unused"))
    backend.load()
    return backend


def request(seeds=(1,), **params) -> Request:
    images = [Image.new("RGB", (32, 24), (10, 20, 30)), Image.new("L", (16, 16), 200)]
    return Request(images=images, prompt="p", seeds=list(seeds), params=params)


def test_registered_for_stub() -> None:
    assert backend_class("stub") is StubBackend


def test_deterministic_per_seed_and_input_major() -> None:
    first = stub().run(request(seeds=[1, 2]))
    again = stub().run(request(seeds=[2]))
    assert [im.size for im in first.images] == [(32, 24), (32, 24), (16, 16), (16, 16)]
    assert all(im.mode == "RGB" for im in first.images)
    assert first.images[3].tobytes() == again.images[1].tobytes()
    assert first.images[0].tobytes() != first.images[1].tobytes()


def test_width_height_params_resize() -> None:
    result = stub().run(request(width=40, height=8))
    assert [im.size for im in result.images] == [(40, 8), (40, 8)]


def test_sleep_hook() -> None:
    started = time.perf_counter()
    stub().run(request(stub_sleep=0.2))
    assert time.perf_counter() - started >= 0.2


def test_slow_load() -> None:
    started = time.perf_counter()
    stub("stub:slow-load")
    assert time.perf_counter() - started >= 1.0


@pytest.mark.parametrize(
    ("mode", "error", "flags"),
    [
        ("invalid", InvalidRequest, None),
        ("error", BackendError, None),
        ("oom", DeviceError, (False, True)),
        ("sticky", DeviceError, (True, False)),
    ],
)
def test_fail_hooks(mode: str, error: type, flags) -> None:
    with pytest.raises(error) as info:
        stub().run(request(stub_fail=mode))
    if flags is not None:
        assert (info.value.sticky, info.value.out_of_memory) == flags
    else:
        assert not isinstance(info.value, DeviceError)


def test_invalid_fail_mode_and_empty_requests() -> None:
    backend = stub()
    empty = Request(images=[], prompt="", seeds=[1])
    for bad in (request(stub_fail="explode"), request(seeds=[]), empty):
        with pytest.raises(InvalidRequest):
            backend.validate(bad)


@pytest.mark.parametrize(("mode", "returncode"), [("crash", 3), ("segfault", -signal.SIGSEGV)])
def test_process_killing_hooks(mode: str, returncode: int) -> None:
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from PIL import Image
        from backends import ModelSpec, Request
        from backends.stub import StubBackend
        backend = StubBackend(ModelSpec(task="stub", model="stub:x"), Path("."))
        backend.run(Request(images=[Image.new("RGB", (8, 8))], prompt="", seeds=[1],
                            params={{"stub_fail": "{mode}"}}))
        print("survived")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == returncode, done.stderr
    assert "survived" not in done.stdout


@pytest.mark.parametrize("mode", ["invalid", "error", "oom"])
def test_fail_once_fails_then_succeeds(tmp_path, mode: str) -> None:
    marker = tmp_path / "once" / "marker"
    backend = stub()
    with pytest.raises(BackendError):
        backend.run(request(stub_fail=mode, stub_fail_once=str(marker)))
    assert marker.exists()
    assert len(backend.run(request(stub_fail=mode, stub_fail_once=str(marker))).images) == 2


def test_crash_once_in_a_subprocess(tmp_path) -> None:
    marker = tmp_path / "marker"
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from PIL import Image
        from backends import ModelSpec, Request
        from backends.stub import StubBackend
        backend = StubBackend(ModelSpec(task="stub", model="stub:x"), Path("."))
        backend.run(Request(images=[Image.new("RGB", (8, 8))], prompt="", seeds=[1],
                            params={{"stub_fail": "crash", "stub_fail_once": {str(marker)!r}}}))
        print("survived")
        """
    )
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert run().returncode == 3
    second = run()
    assert second.returncode == 0 and "survived" in second.stdout, second.stderr
