"""What the hosted backends share: keys, Retry-After, concurrency, registry and profiles."""

from __future__ import annotations

import subprocess
import sys
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from backends import (
    BACKENDS,
    BackendError,
    InvalidRequest,
    ModelSpec,
    ModelUnavailable,
    Request,
    backend_class,
)
from backends.base import DISPOSITIONS, ConfigurationFault, OutcomeUnknown, Refused, disposition
from backends.hosted import api_key, retry_after
from backends.profiles import PROFILES
from tests.hosted.conftest import image, make
from tests.hosted.fakes import FakeGemini

REPO = Path(__file__).resolve().parents[2]
HOSTED = {
    "nano-banana": "gemini-3.1-flash-image",
    "nano-banana-pro": "gemini-3-pro-image",
    "nano-banana-2": "gemini-3.1-flash-image",
    "seedream-4": "seedream-4-0-250828",
    "seedream-4.5": "seedream-4-5-251128",
    "flux-kontext-pro": "flux-kontext-pro",
    "flux-kontext-max": "flux-kontext-max",
}


def spec(**options) -> ModelSpec:
    return ModelSpec(task="gemini-image", model="m", options=ModelSpec.freeze_options(options))


def test_retry_after_seconds_and_http_date() -> None:
    assert retry_after("3") == 3.0 and retry_after("0.5") == 0.5 and retry_after("-1") == 0.0
    now = time.time()
    assert retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert retry_after("soon") is None and retry_after(None) is None


def test_key_from_env_then_credentials_directory_then_file(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("DARKROOM_TEST_KEY", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "DARKROOM_TEST_KEY").write_text("from-credential\n")
    assert api_key(spec(api_key_env="DARKROOM_TEST_KEY"), "gemini", "X") == "from-credential"
    (tmp_path / "gemini.key").write_text("from-named-credential")
    assert (
        api_key(spec(api_key_env="DARKROOM_TEST_KEY", credential="gemini.key"), "gemini", "X")
        == "from-named-credential"
    )
    monkeypatch.setenv("DARKROOM_TEST_KEY", "from-env")
    assert api_key(spec(api_key_env="DARKROOM_TEST_KEY"), "gemini", "X") == "from-env"
    (tmp_path / "explicit").write_text("from-file")
    assert (
        api_key(
            spec(api_key_env="DARKROOM_TEST_KEY", api_key_file=str(tmp_path / "explicit")),
            "gemini",
            "X",
        )
        == "from-file"
    )
    with pytest.raises(ModelUnavailable, match="cannot read the API key file"):
        api_key(spec(api_key_file=str(tmp_path / "absent")), "gemini", "X")


def test_missing_key_message_and_load_makes_no_network_call(monkeypatch) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ModelUnavailable) as caught:
        api_key(spec(api_key_env="NOPE_KEY"), "gemini", "X")
    message = str(caught.value)
    assert (
        "NOPE_KEY" in message
        and "$CREDENTIALS_DIRECTORY/NOPE_KEY" in message
        and "api_key_file" in message
    )
    monkeypatch.setenv("NOPE_KEY", "k")
    make(
        "gemini-image", "m", "http://127.0.0.1:9", api_key_env="NOPE_KEY"
    )  # port 9: nothing listens


def test_concurrency_limit_is_shared_by_every_backend_of_a_model(gemini: FakeGemini) -> None:
    gemini.latency = 0.15
    url = f"{gemini.url}/v1beta"
    one = make("gemini-image", "gemini-3.1-flash-image", url, concurrency=2)
    two = make("gemini-image", "gemini-3.1-flash-image", url, concurrency=2)
    import threading

    thread = threading.Thread(
        target=two.run, args=(Request(images=[image()], prompt="p", seeds=[1, 2]),)
    )
    thread.start()
    result = one.run(Request(images=[image()], prompt="p", seeds=[1, 2, 3, 4]))
    thread.join()
    assert len(result.images) == 4 and gemini.max_in_flight == 2
    assert len(gemini.requests) == 6


def test_info_outputs_line_up_with_images(gemini: FakeGemini) -> None:
    b = make("gemini-image", "gemini-3.1-flash-image", f"{gemini.url}/v1beta")
    result = b.run(Request(images=[image(), image()], prompt="p", seeds=[4, 5, 6]))
    outputs = result.info["outputs"]
    assert len(outputs) == len(result.images) == 6
    assert [(o["input"], o["seed"]) for o in outputs] == [(i, s) for i in (0, 1) for s in (4, 5, 6)]
    required = {
        "provider",
        "model",
        "request_id",
        "seconds",
        "cost",
        "currency",
        "megapixels",
        "seed",
        "seed_sent",
        "seed_honoured",
        "input",
        "attempts",
        "refusal",
        "error",
    }
    assert all(required <= set(o) for o in outputs)
    assert result.info["request_ids"] == [o["request_id"] for o in outputs]
    assert FakeGemini.key not in repr(result.info)


def test_registry_and_profiles() -> None:
    for task in ("gemini-image", "seedream", "bfl-kontext"):
        cls = backend_class(task)
        assert cls.task == task and task in BACKENDS
    for name, model in HOSTED.items():
        profile = PROFILES[name]
        assert profile["model"] == model and profile["vram_gb"] == 0
        assert (
            profile["provider"]
            and profile["price_per_image"] > 0
            and "price_per_megapixel" in profile
        )
        assert profile["options"]["api_key_env"] in ("GEMINI_API_KEY", "ARK_API_KEY", "BFL_API_KEY")
        assert profile["role"] in ("explore", "edit", "reference")


def test_hosted_modules_import_neither_torch_nor_daemon() -> None:
    code = (
        "import backends.hosted.gemini, backends.hosted.seedream, backends.hosted.bfl, sys\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "bad = sorted(loaded & {'torch', 'diffusers', 'transformers', 'daemon'})\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_timeouts_default_to_the_provider_sdks() -> None:
    """Issue 21 (4): Seedream waited 180 s where the Ark SDK waits 600 s (60 s to connect)."""
    expected = {
        "nano-banana": (600, 10),
        "nano-banana-pro": (600, 10),
        "seedream-4": (600, 60),
        "seedream-4.5": (600, 60),
        "flux-kontext-pro": (30, 10),
    }
    for name, (timeout, connect) in expected.items():
        fields = PROFILES[name]
        spec = ModelSpec(
            task=fields["task"],
            model=fields["model"],
            options=ModelSpec.freeze_options(fields["options"]),
        )
        options = backend_class(fields["task"])(spec, Path("/tmp")).options
        assert (options.timeout, options.connect_timeout) == (timeout, connect), name
    bare = ModelSpec(task="seedream", model="m")  # a new profile without options gets them too
    assert backend_class("seedream")(bare, Path("/tmp")).options.timeout == 600


def test_exception_classes_and_their_dispositions() -> None:
    assert issubclass(Refused, InvalidRequest) and issubclass(ConfigurationFault, ModelUnavailable)
    assert issubclass(OutcomeUnknown, BackendError) and not issubclass(
        OutcomeUnknown, InvalidRequest
    )
    assert disposition("ConfigurationFault") == "hold"
    assert disposition("OutcomeUnknown") == "fail" and disposition("Refused") == "fail"
    assert disposition("BackendError") == "retry" and disposition("SomethingNew") == "retry"
    assert set(DISPOSITIONS.values()) == {"retry", "fail", "hold"}


def test_a_model_id_is_a_profile_field_that_config_can_override() -> None:
    for name in HOSTED:
        assert "model" in PROFILES[name] and PROFILES[name]["options"]["timeout"] > 0
