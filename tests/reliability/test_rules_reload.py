"""Scenario 8: a rule file broken by an edit: the previous rules keep running, the error
names the file and line, and fixing the file restores normal work."""

from __future__ import annotations

import json

from tests.conftest import make_image

RULE = """\
name: r
match: {source: drop}
prompt: "PROMPT {stem}"
steps:
  - {name: one, model: stub, seeds: [1]}
output: {sink: out}
"""


def prompt_of(harness, stem: str) -> str:
    path = harness.wait(
        lambda: (p := harness.out / "r" / f"{stem}.png" / "manifest.json").exists() and p, 20, stem
    )
    return json.loads(path.read_text())["steps"][0]["prompt"]


def test_broken_rule_edit_keeps_the_previous_rules_until_fixed(harness):
    rule_file = harness.rule(RULE.replace("PROMPT", "v1"))
    harness.start()
    make_image(harness.drop / "a.png", color=(1, 1, 1))
    assert prompt_of(harness, "a") == "v1 a"

    # An edit that breaks the YAML on line 3 (text after a closed quote).
    rule_file.write_text(RULE.replace('"PROMPT {stem}"', '"v2 {stem}" oops'))
    error = harness.wait(lambda: harness.app.rules_error, 10, "the reload to fail")
    assert f"{rule_file}:3:" in error, error
    make_image(harness.drop / "b.png", color=(2, 2, 2))
    assert prompt_of(harness, "b") == "v1 b", "the previous rules must keep running"

    # A schema error (not YAML syntax) names its line too.
    rule_file.write_text(
        RULE.replace("PROMPT", "v2").replace("seeds: [1]", "seeds: [1], variants: lots")
    )
    harness.wait(
        lambda: harness.app.rules_error and "variants" in harness.app.rules_error,
        10,
        "the schema error",
    )
    assert f"{rule_file}:5" in harness.app.rules_error, harness.app.rules_error

    rule_file.write_text(RULE.replace("PROMPT", "v2"))
    harness.wait(lambda: harness.app.rules_error is None, 10, "the fixed rules to load")
    make_image(harness.drop / "c.png", color=(3, 3, 3))
    assert prompt_of(harness, "c") == "v2 c"
    assert harness.app.runner.stopping.is_set() is False
