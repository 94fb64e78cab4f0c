import textwrap
from pathlib import Path

import pytest

from daemon.errors import RuleError
from daemon.types import Arrival
from daemon.rules import load_rules, output_path, plan_for

GOOD = """\
name: explore
match:
  source: drop
  include: ["**/*.jpg"]
  exclude: ["**/skip/**"]
prompt: "{stem} as a watercolor"
steps:
  - name: explore
    model: tiny
    variants: 2
    seed: 7
    strength: 0.5
  - name: refine
    model: tiny
    seeds: [1]
output:
  sink: out
"""


def rules_dir(tmp_path: Path, **files: str) -> Path:
    d = tmp_path / "rules"
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(textwrap.dedent(text))
    return d


def arrival(key: str, source: str = "drop") -> Arrival:
    return Arrival(source, key, f"/x/{key}", 10, 1)


def test_a_good_rule_loads_and_plans(tmp_path):
    rules = load_rules(rules_dir(tmp_path, **{"explore.yaml": GOOD}))
    rule = rules.get("explore")
    assert [r.name for r in rules.matching(arrival("a/b.JPG"))] == ["explore"]
    assert rules.matching(arrival("a/skip/b.jpg")) == []
    assert rules.matching(arrival("b.jpg", source="other")) == []
    plan = plan_for(rule, arrival("shoot/b.jpg"), "ab" * 32)
    assert plan["steps"][0]["prompt"] == "b as a watercolor"
    assert plan["steps"][0]["seeds"] == [7, 8]
    assert plan["steps"][1]["input"] == "explore"  # default: the previous step
    assert plan["steps"][1]["seeds"] == [1]
    assert output_path(plan, plan["steps"][0], 1, 8) == "explore/b/explore-1.png"
    assert plan["manifest"] == "explore/b/manifest.json"


def test_random_seeds_are_drawn_once_and_recorded(tmp_path):
    text = GOOD.replace("    seed: 7\n", "")
    rule = load_rules(rules_dir(tmp_path, **{"r.yaml": text})).get("explore")
    seeds = plan_for(rule, arrival("b.jpg"), "00" * 32)["steps"][0]["seeds"]
    assert len(seeds) == 2 and seeds[1] == seeds[0] + 1


def test_digest_ignores_comments_and_whitespace_but_not_meaning(tmp_path):
    a = load_rules(rules_dir(tmp_path / "a", **{"r.yaml": GOOD})).get("explore").digest()
    b = (
        load_rules(
            rules_dir(
                tmp_path / "b",
                **{
                    "r.yaml": "# a comment\n" + GOOD.replace("variants: 2", "variants:    2  # two")
                },
            )
        )
        .get("explore")
        .digest()
    )
    c = (
        load_rules(
            rules_dir(tmp_path / "c", **{"r.yaml": GOOD.replace("variants: 2", "variants: 3")})
        )
        .get("explore")
        .digest()
    )
    assert a == b != c


def test_errors_name_file_line_and_column_all_at_once(tmp_path):
    bad_key = GOOD.replace("    variants: 2", "    varients: 2")
    bad_template = GOOD.replace("{stem} as", "{stem.__class__} as")
    d = rules_dir(
        tmp_path,
        **{
            "a.yaml": bad_key,
            "b.yaml": bad_template.replace("name: explore", "name: other"),
            "c.yaml": "name: [broken\n",
        },
    )
    with pytest.raises(RuleError) as err:
        load_rules(d)
    text = str(err.value)
    assert f"{d / 'a.yaml'}:10:5: unknown key 'steps.0.varients'" in text
    assert "did you mean 'variants'" in text
    assert f"{d / 'b.yaml'}:6:9" in text and "not allowed" in text
    assert f"{d / 'c.yaml'}:2:1: invalid YAML" in text
    assert len(err.value.problems) == 3


def test_step_input_must_name_an_earlier_step(tmp_path):
    text = GOOD.replace("    seeds: [1]", "    seeds: [1]\n    input: later")
    with pytest.raises(RuleError, match="not an earlier step"):
        load_rules(rules_dir(tmp_path, **{"r.yaml": text}))


def test_path_template_must_have_an_image_extension_and_known_variables(tmp_path):
    with pytest.raises(RuleError, match=r"must end in \.\{ext\}, \.png"):
        load_rules(rules_dir(tmp_path / "a", **{"r.yaml": GOOD + '  path: "{rule}/{stem}.gif"\n'}))
    with pytest.raises(RuleError, match=r"unknown variable \{colour\}"):
        load_rules(
            rules_dir(tmp_path / "b", **{"r.yaml": GOOD + '  path: "{colour}/{stem}.png"\n'})
        )


def test_duplicate_rule_names_are_refused(tmp_path):
    with pytest.raises(RuleError, match="already used"):
        load_rules(rules_dir(tmp_path, **{"a.yaml": GOOD, "b.yaml": GOOD}))
