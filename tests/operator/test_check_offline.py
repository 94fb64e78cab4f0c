"""Issue 20 (and issue 15's check items): what ``darkroom check`` can know offline — weights
of the profiles rules use, hosted API keys, pick ranges, mask and watermark files, webhook URL
schemes, mode-specific keys, folders. Each is an error at its own line with a fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.operator.test_check_every_problem import darkroom, located, write

pytestmark = pytest.mark.slow

CONFIG = """\
state_dir: state
sources: {drop: {path: drop}}
sinks: {out: {path: out}}
"""


def rule(steps: str, output: str = "{sink: out}") -> str:
    return f"name: r\nmatch: {{source: drop}}\nsteps:\n{steps}output: {output}\n"


def setup(tmp_path: Path, steps: str, config: str = CONFIG, output: str = "{sink: out}") -> Path:
    write(tmp_path, {"darkroom.yaml": config, "rules/r.yaml": rule(steps, output)})
    (tmp_path / "drop").mkdir(exist_ok=True)
    return tmp_path


def fake_hub_snapshot(hf_home: Path, repo: str, components: dict[str, bool]) -> None:
    """A Hugging Face cache entry for ``repo``: model_index.json listing ``components``,
    with a folder for those marked True (as ``hf download`` leaves it)."""
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    index: dict[str, object] = {"_class_name": "StableDiffusionPipeline"}
    index.update({name: ["diffusers", "X"] for name in components})
    (snapshot / "model_index.json").write_text(json.dumps(index))
    for name, present in components.items():
        if present:
            (snapshot / name).mkdir()


def test_missing_weights_are_an_error_offline_and_a_warning_online(tmp_path: Path) -> None:
    setup(tmp_path, "  - {name: one, model: sd-turbo}\n")
    offline = darkroom("check", cwd=tmp_path)
    assert offline.returncode == 1
    message = located(offline.stderr)[("r.yaml", 4)]
    assert "stabilityai/sd-turbo is not in the Hugging Face cache" in message
    assert "models pull sd-turbo" in message

    online = darkroom("check", cwd=tmp_path, env={"HF_HUB_OFFLINE": "0"})
    assert online.returncode == 0, online.stderr
    assert "warning: " in online.stderr and "the first job downloads it" in online.stderr


def test_weights_in_the_cache_pass_and_a_partial_download_does_not(tmp_path: Path) -> None:
    setup(tmp_path, "  - {name: one, model: sd-turbo}\n")
    fake_hub_snapshot(tmp_path / "hf", "stabilityai/sd-turbo", {"unet": True, "vae": False})
    partial = darkroom("check", cwd=tmp_path)
    assert partial.returncode == 1
    assert "only partly in the cache (missing: vae)" in partial.stderr

    (next((tmp_path / "hf").rglob("snapshots")) / ("0" * 40) / "vae").mkdir()
    complete = darkroom("check", cwd=tmp_path)
    assert complete.returncode == 0, complete.stderr


def test_a_hosted_profile_needs_its_api_key(tmp_path: Path) -> None:
    setup(tmp_path, "  - {name: one, model: nano-banana}\n")
    without = darkroom("check", cwd=tmp_path)
    assert without.returncode == 1
    assert "GEMINI_API_KEY" in located(without.stderr)[("r.yaml", 4)]
    with_key = darkroom("check", cwd=tmp_path, env={"GEMINI_API_KEY": "k-test"})
    assert with_key.returncode == 0, with_key.stderr


def test_pick_past_the_outputs_of_the_input_step(tmp_path: Path) -> None:
    setup(
        tmp_path,
        "  - {name: explore, models: [stub, stub2], variants: 2}\n"
        "  - {name: refine, model: stub, pick: [3, 5]}\n",
        config=CONFIG + "profiles: {stub2: {like: stub}}\n",
        output='{sink: out, path: "{rule}/{stem}/{step}-{model}-{variant}.{ext}"}',
    )
    result = darkroom("check", cwd=tmp_path)
    assert result.returncode == 1
    message = located(result.stderr)[("r.yaml", 5)]
    assert "asks for output(s) [5]" in message and "makes 4" in message
    assert "pick from 0 to 3" in message


def test_mask_and_watermark_files_inside_the_rules_folder(tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(b"x")
    setup(
        tmp_path,
        "  - {name: one, model: stub, mask: masks/m.png}\n"
        "  - {name: two, model: square-1080, params: {watermark: brand/logo.png}}\n"
        "  - {name: three, model: square-1080, params: {watermark: /etc/hostname}}\n",
    )
    result = darkroom("check", cwd=tmp_path)
    assert result.returncode == 1
    lines = located(result.stderr)
    assert "no file 'masks/m.png'" in lines[("r.yaml", 4)]
    assert "no file 'brand/logo.png'" in lines[("r.yaml", 5)]
    assert "/etc/hostname" in lines[("r.yaml", 6)]  # refused, whichever check says it

    write(tmp_path, {"rules/masks/m.png": "png", "rules/brand/logo.png": "png"})
    fixed = darkroom("check", cwd=tmp_path)
    assert ("r.yaml", 4) not in located(fixed.stderr)
    assert ("r.yaml", 5) not in located(fixed.stderr)


def test_webhook_urls_must_be_http(tmp_path: Path) -> None:
    setup(
        tmp_path,
        "  - {name: one, model: stub}\n",
        config=CONFIG + 'webhooks:\n  urls:\n    - "https://ok.test/h"\n    - "file:///tmp/x"\n',
    )
    result = darkroom("check", cwd=tmp_path)
    assert result.returncode == 1
    assert "must be http:// or https://" in located(result.stderr)[("darkroom.yaml", 7)]


def test_events_mode_without_a_queue_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    config = CONFIG.replace(
        "sources: {drop: {path: drop}}",
        "sources:\n  drop: {path: drop}\n  inbox: {type: s3, bucket: photos, mode: events}",
    )
    setup(tmp_path, "  - {name: one, model: stub}\n", config=config)
    result = darkroom("check", cwd=tmp_path)
    assert result.returncode == 1
    assert "mode: events needs queue_url" in located(result.stderr)[("darkroom.yaml", 4)]
    run = darkroom("run", cwd=tmp_path)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "needs queue_url" in run.stderr


def test_processed_and_quarantine_folders_stay_in_the_source_and_out_of_sinks(
    tmp_path: Path,
) -> None:
    config = CONFIG.replace("{out: {path: out}}", "{out: {path: drop/.done}}")
    setup(
        tmp_path,
        "  - {name: one, model: stub}\n",
        config=config,
        output="{sink: out, on_success: move, processed_dir: .done/old, quarantine: ../q}",
    )
    result = darkroom("check", cwd=tmp_path)
    assert result.returncode == 1
    text = result.stderr
    assert "output.processed_dir" in text and "overlaps sink 'out'" in text
    assert "output.quarantine '../q' must be a folder inside the source root" in text


def test_folders_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    config = CONFIG.replace("{out: {path: out}}", "{out: {path: afile/out}}")
    setup(tmp_path, "  - {name: one, model: stub}\n", config=config)
    result = darkroom("check", cwd=tmp_path)
    assert result.returncode == 1
    message = located(result.stderr)[("darkroom.yaml", 3)]
    assert "cannot be created" in message and "is a file" in message
