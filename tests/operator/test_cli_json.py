"""Issue 20, scripting: ``--json`` on the commands that print tables or reports, no silent
truncation, and ``process`` keeping results on stdout and everything else on stderr.

Each test runs the real ``darkroom`` CLI as a subprocess, the way a script would."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import make_image
from tests.operator.conftest import darkroom

pytestmark = pytest.mark.slow

RULE = """\
name: look
match: {source: drop, include: ["**/*.png"]}
prompt: "{stem} in the rain"
steps:
  - {name: explore, model: stub, variants: 2, seed: 5}
output: {sink: out}
"""


@pytest.fixture
def workdir(cli_workdir: Callable[..., Path]) -> Path:
    return cli_workdir("look", RULE, "log: {level: debug}\n")


def test_check_json_lists_every_problem_with_file_line_column_and_hint(workdir: Path) -> None:
    ok = darkroom("check", "--json", cwd=workdir)
    assert ok.returncode == 0, ok.stderr
    assert [p for p in json.loads(ok.stdout) if p["severity"] == "error"] == []

    bad = workdir / "rules" / "bad.yaml"
    bad.write_text(
        textwrap.dedent("""\
        name: bad
        match: {source: dorp}
        prompt: "{stem!r}"
        steps:
          - {name: one, model: stub, variants: 0}
        output: {sink: out}
        """)
    )
    result = darkroom("check", "--json", cwd=workdir)
    assert result.returncode == 1
    problems = json.loads(result.stdout)  # stdout is the JSON document and nothing else
    assert problems and all(p["severity"] == "error" for p in problems)
    for problem in problems:
        assert set(problem) >= {"file", "line", "column", "message", "hint"}
    by_line = {(p["file"], p["line"]): p for p in problems if p["line"] is not None}
    prompt = by_line[(str(bad), 3)]
    assert prompt["column"] == 9 and "{stem!r}" in prompt["message"]
    assert by_line[(str(bad), 5)]["column"] == 40  # steps.0.variants


def test_match_json_is_the_report_as_one_object(workdir: Path) -> None:
    make_image(workdir / "drop" / "shoots" / "cat.png")
    result = darkroom("match", "--json", "drop/shoots/cat.png", cwd=workdir)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["source"] == "drop" and report["key"] == "shoots/cat.png"
    assert report["image"]["width"] == 64
    (look,) = report["rules"]
    assert look["rule"] == "look" and look["matches"] is True
    (step,) = look["steps"]
    assert step["step"] == "explore" and step["prompt"] == "cat in the rain"
    assert len(step["outputs"]) == 2 and step["seeds_random"] is False

    (workdir / "drop" / "cat.jpg").write_bytes(
        (workdir / "drop" / "shoots" / "cat.png").read_bytes()
    )
    miss = darkroom("match", "--json", "drop/cat.jpg", cwd=workdir)
    assert miss.returncode == 1
    (look,) = json.loads(miss.stdout)["rules"]
    assert look["matches"] is False and look["reasons"]


def test_jobs_ls_json_and_a_cut_list_says_so(workdir: Path) -> None:
    photos = [make_image(workdir / "elsewhere" / f"p{i}.png") for i in range(3)]
    processed = darkroom("process", *map(str, photos), "--rule", "look", cwd=workdir)
    assert processed.returncode == 0, processed.stderr

    everything = darkroom("jobs", "ls", "--json", cwd=workdir)
    assert everything.returncode == 0, everything.stderr
    jobs = json.loads(everything.stdout)
    assert len(jobs) == 3 and "showing" not in everything.stderr
    job = jobs[0]
    assert job["state"] == "done" and job["rule"] == "look" and job["step"] == "explore"
    assert len(job["id"]) > 12  # whole ids in JSON
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", job["updated_at"])

    cut = darkroom("jobs", "ls", "--json", "--limit", "2", cwd=workdir)
    assert len(json.loads(cut.stdout)) == 2
    assert "showing 2 of 3 jobs (use --limit)" in cut.stderr

    table = darkroom("jobs", "ls", "--limit", "1", cwd=workdir)
    assert len(table.stdout.strip().splitlines()) == 2  # the header and one job
    assert "showing 1 of 3 jobs (use --limit)" in table.stderr


def test_process_results_on_stdout_progress_and_logs_on_stderr(workdir: Path) -> None:
    photos = [make_image(workdir / "elsewhere" / f"q{i}.png") for i in range(2)]
    result = darkroom("process", *map(str, photos), cwd=workdir)
    assert result.returncode == 0, result.stderr
    results = result.stdout.splitlines()
    # Only results: one line per file and rule, nothing else (no JSON log lines).
    assert len(results) == 2
    assert all(re.match(r"^done\s+q\d\.png \[look\] -> ", line) for line in results), results
    # Not a terminal: plain progress lines (no carriage returns), and the logs, on stderr.
    assert "\r" not in result.stderr
    assert "progress: 2/2 jobs" in result.stderr.splitlines()
    logs = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert logs and all("level" in event for event in logs)


def test_models_json_is_a_list_of_profiles(workdir: Path) -> None:
    result = darkroom("models", "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and all("profile" in row for row in rows)
