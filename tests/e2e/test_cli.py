"""The command line as a user meets it: check, process, models."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import make_image

pytestmark = pytest.mark.slow  # every test runs the darkroom CLI as a subprocess

REPO = Path(__file__).resolve().parents[2]


def darkroom(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
        timeout=300,
    )


def setup(tmp_path: Path, rule: str, model_cache: Path | None = None) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(textwrap.dedent(rule))
    config = tmp_path / "darkroom.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        state_dir: state
        model_cache: {model_cache or tmp_path / "models"}
        sources: {{drop: {{path: drop}}}}
        sinks: {{out: {{path: out}}}}
        worker: {{device: cpu, threads: 2}}
        """)
    )
    return config


RULE = """\
name: look
match: {source: drop}
prompt: "{stem} in the rain"
steps:
  - {name: explore, model: stub, variants: 3, seed: 5}
  - {name: again, model: stub, seed: 9}
output: {sink: out}
"""


def test_check_ok_and_every_error_with_file_line(tmp_path):
    config = setup(tmp_path, RULE)
    ok = darkroom("check", "--config", str(config), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "ok: 1 rule(s)" in ok.stdout

    (tmp_path / "rules" / "bad.yaml").write_text(
        textwrap.dedent("""\
        name: bad
        match: {source: dorp}
        prompt: "{stem!r}"
        steps:
          - {name: one, model: tyni, variants: 0}
        output: {sink: out, path: "../{stem}.png"}
        """)
    )
    bad = darkroom("check", "--config", str(config), cwd=tmp_path)
    assert bad.returncode == 1
    err = bad.stderr
    rule_file = tmp_path / "rules" / "bad.yaml"
    assert f"{rule_file}:3:9: prompt: {{stem!r}} is not allowed" in err
    assert f"{rule_file}:5:40: steps.0.variants" in err
    assert f"{rule_file}:6:27: output.path" in err and "leave the sink root" in err
    assert "problems found" in err


def test_check_reports_unknown_source_sink_and_profile_with_hints(tmp_path):
    config = setup(
        tmp_path,
        RULE.replace("source: drop", "source: dorp").replace(
            "model: stub, variants", "model: stbu, variants"
        ),
    )
    bad = darkroom("check", "--config", str(config), cwd=tmp_path)
    assert bad.returncode == 1
    assert "unknown source 'dorp'" in bad.stderr and "did you mean 'drop'" in bad.stderr
    assert "unknown model profile 'stbu'" in bad.stderr and "did you mean 'stub'" in bad.stderr


def test_check_refuses_output_inside_a_watched_folder(tmp_path):
    config = setup(tmp_path, RULE)
    config.write_text(config.read_text().replace("path: out", "path: drop/out"))
    bad = darkroom("check", "--config", str(config), cwd=tmp_path)
    assert bad.returncode == 1
    assert "overlaps the watched location" in bad.stderr


def test_process_runs_a_chain_once_and_is_idempotent(tmp_path):
    config = setup(tmp_path, RULE)
    photo = make_image(tmp_path / "elsewhere" / "cat.png", (64, 64))
    first = darkroom("process", "--config", str(config), str(photo), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "done" in first.stdout and "jobs" in first.stderr  # progress bar
    m = json.loads((tmp_path / "out" / "look" / "cat.png" / "manifest.json").read_text())
    assert [s["name"] for s in m["steps"]] == ["explore", "again"]
    assert len(m["steps"][0]["outputs"]) == 3
    # The second step ran once per output of the first: 3 inputs x 1 variant.
    again = m["steps"][1]["outputs"]
    assert [o["input"] for o in again] == [o["path"] for o in m["steps"][0]["outputs"]]
    assert all(Image.open(tmp_path / "out" / o["path"]).size == (64, 64) for o in again)
    mtime = (tmp_path / "out" / "look" / "cat.png" / "manifest.json").stat().st_mtime_ns
    second = darkroom("process", "--config", str(config), str(photo), cwd=tmp_path)
    assert second.returncode == 0
    assert (tmp_path / "out" / "look" / "cat.png" / "manifest.json").stat().st_mtime_ns == mtime


def test_process_reports_a_bad_file_and_exits_nonzero(tmp_path):
    config = setup(tmp_path, RULE)
    junk = tmp_path / "junk.png"
    junk.write_text("this is not a picture")
    result = darkroom("process", "--config", str(config), str(junk), "--rule", "look", cwd=tmp_path)
    assert result.returncode == 1
    assert "failed" in result.stdout and "not an image" in result.stdout


def test_models_lists_profiles_and_where_their_weights_are(tmp_path, model_cache):
    from backends.random_models import build_random_model

    build_random_model("sd-tiny", model_cache)
    config = setup(tmp_path, RULE, model_cache)
    result = darkroom(
        "models", "--all", "--config", str(config), cwd=tmp_path
    )  # HOME=tmp_path: an empty HF cache; --all: the tiny twins too
    assert result.returncode == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert (
        "stabilityai/sd-turbo" in lines["sd-turbo"]
        and "MISSING: download into HF_HOME" in lines["sd-turbo"]
    )
    assert lines["tiny"].rstrip().endswith("built")
    assert "built on first use" in lines["tiny-svd"] or lines["tiny-svd"].rstrip().endswith("built")
    assert "hosted (GEMINI_API_KEY NOT set)" in lines["nano-banana"]
    assert "no weights needed" in lines["square-1080"]
    assert "flux-1-dev-non-commercial-license" in lines["kontext"] and "yes" in lines["kontext"]
