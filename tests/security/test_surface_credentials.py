"""Issue 15 (quiet surface): secrets reach the daemon as systemd credentials, not variables.

``LoadCredential=NAME:/path`` puts a file NAME in ``$CREDENTIALS_DIRECTORY``; the daemon
reads a ``DARKROOM_*`` setting from a credential of the same name (the environment still
wins), and the unit file shows the lines, which systemd accepts.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemon.config.settings import load_settings
from daemon.errors import ConfigError
from tests.service.conftest import SYSTEMD_ANALYZE, UNIT
from tests.service.test_unit_file import analyze, verifiable_copy

SECRET = "whsec_" + "c2VjcmV0LWZyb20tY3JlZGVudGlhbA=="  # base64 of "secret-from-credential"


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "credentials"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    monkeypatch.delenv("DARKROOM_WEBHOOKS__SECRET", raising=False)
    return directory


def test_the_webhook_secret_comes_from_a_credential(credentials: Path, tmp_path: Path) -> None:
    (credentials / "DARKROOM_WEBHOOKS__SECRET").write_text(SECRET + "\n")
    config = tmp_path / "darkroom.yaml"
    config.write_text("webhooks:\n  urls: [https://hooks.example/x]\n")
    settings = load_settings(config)
    assert settings.webhooks.secret is not None
    assert settings.webhooks.secret.get_secret_value() == SECRET  # the newline is not part of it
    assert settings.webhooks.urls == ["https://hooks.example/x"]  # the YAML file still counts


def test_the_environment_wins_over_a_credential(
    credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (credentials / "DARKROOM_WEBHOOKS__SECRET").write_text(SECRET)
    monkeypatch.setenv("DARKROOM_WEBHOOKS__SECRET", "from-the-environment")
    secret = load_settings(None).webhooks.secret
    assert secret is not None and secret.get_secret_value() == "from-the-environment"


def test_a_bad_credential_names_the_file_not_the_defaults(credentials: Path) -> None:
    (credentials / "DARKROOM_WEBHOOKS__SECRET").write_text("whsec_not*base64")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    text = str(caught.value)
    assert f"credential {credentials / 'DARKROOM_WEBHOOKS__SECRET'}" in text
    assert "not base64" in text and "not*base64" not in text  # the value itself is not echoed


def test_other_credentials_are_not_settings(credentials: Path) -> None:
    (credentials / "GEMINI_API_KEY").write_text("hosted-key")  # read by backends.hosted
    (credentials / "aws").write_text("[default]\n")
    assert load_settings(None).webhooks.secret is None


def test_the_unit_shows_every_secret_as_a_credential() -> None:
    text = UNIT.read_text()
    shown = re.findall(r"^#?LoadCredential=([A-Za-z_]+):/etc/darkroom/credentials/", text, re.M)
    assert {"DARKROOM_WEBHOOKS__SECRET", "GEMINI_API_KEY", "ARK_API_KEY", "BFL_API_KEY"} <= set(
        shown
    )
    assert "AWS_SHARED_CREDENTIALS_FILE=%d/aws" in text


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is missing")
def test_systemd_accepts_the_credential_lines_once_enabled(tmp_path: Path) -> None:
    enabled = re.sub(
        r"^#((?:LoadCredential|Environment)=.*(?:credentials/|%d/).*)$",
        r"\1",
        UNIT.read_text(),
        flags=re.M,
    )
    assert enabled.count("\nLoadCredential=") >= 5
    result = analyze("verify", str(verifiable_copy(tmp_path, enabled)))
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""
