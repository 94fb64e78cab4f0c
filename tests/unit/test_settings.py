from pathlib import Path

import pytest

from daemon.config.settings import load_settings
from daemon.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "darkroom.yaml"
    path.write_text(text)
    return path


def test_yaml_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    cfg = write(tmp_path, "sources:\n  drop: {path: in}\nsinks:\n  out: {path: out}\n")
    s = load_settings(cfg)
    assert s.sources["drop"].path == tmp_path / "in"
    assert s.sinks["out"].path == tmp_path / "out"
    assert s.state_dir == tmp_path / ".darkroom"
    assert s.rules_dir == tmp_path / "rules"


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    cfg = write(
        tmp_path,
        "sources:\n  drop: {path: in, quiet_period: 2}\nworker: {device: cpu, threads: 2}\n",
    )
    monkeypatch.setenv("DARKROOM_WORKER__DEVICE", "cuda:1")
    monkeypatch.setenv("DARKROOM_SOURCES__DROP__QUIET_PERIOD", "5")
    s = load_settings(cfg)
    assert s.worker.device == "cuda:1"
    assert s.worker.threads == 2  # untouched keys keep the file's value
    assert s.sources["drop"].quiet_period == 5.0
    assert s.sources["drop"].path == tmp_path / "in"


def test_defaults_without_a_file(monkeypatch):
    s = load_settings(None)
    assert s.worker.device == "auto"
    assert s.jobs.max_attempts == 3


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    cfg = write(tmp_path, "sources:\n  drop:\n    path: in\n    quiet_perod: 2\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    text = str(err.value)
    assert f"{cfg}:4:5" in text
    assert "sources.drop.quiet_perod" in text
    assert "did you mean 'quiet_period'" in text


def test_every_error_at_once(tmp_path):
    cfg = write(tmp_path, "worker:\n  device: gpu\n  threads: -1\nlog: {level: loud}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert len(err.value.problems) == 3
    assert any("worker.device" in str(p) and ":2:" in p.where for p in err.value.problems)


def test_invalid_env_value_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("DARKROOM_WORKER__DEVICE", "gpu")
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "{}\n"))
    assert "DARKROOM_WORKER__DEVICE" in str(err.value)


def test_yaml_syntax_error_is_located(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "sources:\n  drop: [unclosed\n"))
    assert str(err.value).startswith(f"{tmp_path / 'darkroom.yaml'}:")
    assert "invalid YAML" in str(err.value)
