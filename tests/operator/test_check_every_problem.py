"""Issue 20: ``darkroom check`` reports every problem of every rule file and of the config in
one run, each at its own line with the key path and a fix; exit 1 on any error, warnings
apart. Runs the real CLI as a subprocess."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.operator.conftest import darkroom

pytestmark = pytest.mark.slow


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))


CONFIG = """\
state_dir: state
sources: {drop: {path: drop}}
sinks: {out: {path: out}}
webhooks: {urls: ["file:///etc/passwd"]}
"""

BROKEN = {
    # a wrong step input (line 6) and an unknown model on the same line
    "rules/a.yaml": """\
        name: a
        match: {source: drop}
        prompt: "{stem}"
        steps:
          - {name: one, model: stub, variants: 2}
          - {name: two, model: stubb, input: three}
          - {name: three, model: stub}
        output: {sink: out}
        """,
    # schema errors, and in the same file an unknown source and a folder leaving the source
    "rules/b.yaml": """\
        name: b
        match: {source: dorp, min_width: -1}
        prompt: "{stem}"
        steps:
          - {name: one, model: stub, variants: 0}
        output: {sink: out, processed_dir: ../elsewhere, on_success: move}
        """,
    # valid schema; pick past the outputs, and a mask that is not there
    "rules/c.yaml": """\
        name: c
        match: {source: drop}
        steps:
          - {name: one, model: stub, variants: 2}
          - {name: two, model: stub, pick: [0, 3]}
          - {name: three, model: stub, mask: masks/missing.png}
        output: {sink: out}
        """,
}


def located(stderr: str) -> dict[tuple[str, int], str]:
    """{(file name, line): message line} of every ``file:line:col: ...`` line."""
    found = {}
    for line in stderr.splitlines():
        where, _, rest = line.partition(": ")
        parts = where.rsplit(":", 2)
        if len(parts) == 3 and parts[1].isdigit():
            found[(Path(parts[0]).name, int(parts[1]))] = rest
    return found


def test_every_problem_of_every_file_and_the_config_in_one_run(tmp_path: Path) -> None:
    write(tmp_path, {"darkroom.yaml": CONFIG, **BROKEN})
    (tmp_path / "drop").mkdir()
    result = darkroom("check", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = located(result.stderr)
    # the config: its own problem does not stop the rules from being checked
    assert "webhooks.urls.0" in lines[("darkroom.yaml", 4)]
    assert "file://" in lines[("darkroom.yaml", 4)]
    # a.yaml: the wrong input at its own line (not line 1), the unknown model beside it
    a6 = [v for (f, n), v in lines.items() if f == "a.yaml" and n == 6]
    text = "\n".join(line for line in result.stderr.splitlines() if "a.yaml:6:" in line)
    assert "takes input from 'three', which is a later step" in text
    assert "unknown model profile 'stubb'" in text and "did you mean 'stub'" in text
    assert a6 and not any(k == ("a.yaml", 1) for k in lines)
    # b.yaml: schema errors AND the cross-checks, in the same run
    b = "\n".join(line for line in result.stderr.splitlines() if "b.yaml:" in line)
    assert "b.yaml:2:" in b and "match.min_width" in b
    assert "unknown source 'dorp'" in b and "did you mean 'drop'" in b
    assert "b.yaml:5:" in b and "steps.0.variants" in b
    assert "b.yaml:6:" in b and "output.processed_dir '../elsewhere'" in b
    # c.yaml: valid schema, but pick and mask cannot work
    assert "makes 2" in lines[("c.yaml", 5)] and "[3]" in lines[("c.yaml", 5)]
    assert "masks/missing.png" in lines[("c.yaml", 6)]
    # every error has a hint (the fix) except pydantic's plain range messages
    assert result.stderr.count("(hint: ") >= 6
    assert result.stderr.rstrip().endswith("problems found")


def test_check_json_keeps_errors_and_warnings_apart(tmp_path: Path) -> None:
    write(tmp_path, {"darkroom.yaml": CONFIG.replace("file:///etc/passwd", "https://x.test/h")})
    write(tmp_path, {"rules/c.yaml": BROKEN["rules/c.yaml"]})
    # drop/ is missing: a warning (the daemon waits for it), not an error
    result = darkroom("check", "--json", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    records = json.loads(result.stdout)
    errors = [r for r in records if r["severity"] == "error"]
    warnings = [r for r in records if r["severity"] == "warning"]
    assert {(Path(r["file"]).name, r["line"]) for r in errors} == {("c.yaml", 5), ("c.yaml", 6)}
    assert all(r["hint"] for r in errors)
    (missing,) = warnings
    assert Path(missing["file"]).name == "darkroom.yaml" and missing["line"] == 2
    assert "does not exist" in missing["message"]


def test_warnings_alone_exit_zero(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "darkroom.yaml": CONFIG.replace("file:///etc/passwd", "https://x.test/h"),
            "rules/ok.yaml": """\
                name: ok
                match: {source: drop}
                steps: [{name: one, model: stub}]
                output: {sink: out}
                """,
        },
    )
    result = darkroom("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: " in result.stderr and "does not exist" in result.stderr
    assert result.stdout.startswith("ok: 1 rule(s)") and "1 warning(s)" in result.stdout
