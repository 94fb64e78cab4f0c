import hashlib
import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import RuleError
from daemon.rules.load import load_rules
from daemon.rules.plan import output_path, plan_for
from daemon.types import Arrival

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
    assert plan.units[0].prompt == "b as a watercolor"
    assert plan.units[0].seeds == [7, 8]
    assert plan.units[1].input == "explore"  # default: the previous step
    assert plan.units[1].seeds == [1]
    assert output_path(plan, plan.units[0], 1, 8) == "explore/shoot/b.jpg/explore-1.png"
    assert plan.manifest == "explore/shoot/b.jpg/manifest.json"


def test_random_seeds_are_drawn_once_and_recorded(tmp_path):
    text = GOOD.replace("    seed: 7\n", "")
    rule = load_rules(rules_dir(tmp_path, **{"r.yaml": text})).get("explore")
    seeds = plan_for(rule, arrival("b.jpg"), "00" * 32).units[0].seeds
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


COMPARE = """\
name: compare
match:
  source: drop
prompt: "{stem} in {room}"
vars: {room: a loft}
steps:
  - name: explore
    models: [tiny, other]
    variants: 2
    seed: 3
  - name: refine
    model: tiny
    mask: sidecar
    references: ["refs/*.png"]
output:
  sink: out
"""


def test_a_plan_is_typed_and_keeps_the_stored_json_shape(tmp_path):
    from daemon.rules.references import reference_files
    from daemon.rules.sidecars import Sidecar
    from daemon.types import Plan, ReferenceFile, SidecarRef

    d = rules_dir(tmp_path, **{"c.yaml": COMPARE})
    (d / "refs").mkdir()
    (d / "refs" / "a.png").write_bytes(b"ref")
    rule = load_rules(d).get("compare")
    sidecar = Sidecar.parse("shoot/b.json", b'{"seed": 40, "vars": {"room": "a barn"}}')
    references = reference_files(rule, d, {})
    plan = plan_for(rule, arrival("shoot/b.jpg"), "ab" * 32, sidecar=sidecar, references=references)
    assert isinstance(plan, Plan)
    assert [u.id for u in plan.units] == ["explore:tiny", "explore:other", "refine"]
    assert plan.units[0].seeds == [40, 41]  # the sidecar's seed wins over the step's
    assert plan.units[0].prompt == "b in a barn"
    assert plan.sidecar == SidecarRef(key="shoot/b.json", sha256=sidecar.sha256)
    assert plan.units[2].references == [
        ReferenceFile(path=str(d / "refs" / "a.png"), sha256=hashlib.sha256(b"ref").hexdigest())
    ]
    assert plan.content != plan.sha256  # the sidecar is part of what makes the work new
    assert output_path(plan, plan.units[1], 0, 40) == "compare/shoot/b.jpg/explore-other-0.png"
    # The ledger stores this JSON; these keys (and the unit keys) are what older rows hold.
    stored = json.loads(plan.model_dump_json())
    assert list(stored) == [
        "rule", "digest", "sha256", "content", "sidecar", "arrival", "vars", "prompt",
        "negative_prompt", "sink", "path", "format", "quality", "keep_icc", "on_success",
        "quarantine", "daily_budget", "animated", "processed_dir", "manifest", "sheet",
        "units", "error", "placed",
    ]  # fmt: skip
    assert list(stored["units"][2]) == [
        "id", "name", "model", "input", "pick", "prompt", "negative_prompt", "seeds", "params",
        "size", "max_side", "references", "mask", "video_format",
    ]  # fmt: skip
    older = {("steps" if key == "units" else key): value for key, value in stored.items()}
    assert Plan.model_validate(older) == plan  # rows written before units were named units


def test_an_unknown_variable_or_a_broken_sidecar_becomes_the_plans_error(tmp_path):
    text = COMPARE.replace("{stem} in {room}", "{stem} by {author}").replace(
        "match:\n", "match:\n  sidecar: required\n"
    )
    rule = load_rules(rules_dir(tmp_path, **{"c.yaml": text})).get("compare")
    plan = plan_for(rule, arrival("b.jpg"), "00" * 32)
    assert plan.error is not None
    assert plan.error.startswith("step 'explore' prompt: unknown variable {author}")
    # Said once per place, though both compared models' units fail the same way.
    assert plan.error.count("step 'explore' prompt:") == 1
    assert "step 'refine' prompt:" in plan.error and "; prompt: " in plan.error
    assert plan.units[0].prompt == "{stem} by {author}"  # left unrendered
    broken = plan_for(rule, arrival("b.jpg"), "00" * 32, error="b.json: sidecar is not UTF-8")
    assert broken.error == "b.json: sidecar is not UTF-8"


def test_sidecar_names_point_both_ways():
    from daemon.rules.sidecars import image_keys, is_sidecar, mask_key, sidecar_keys

    assert sidecar_keys("a/b.jpg") == ["a/b.txt", "a/b.json", "a/b.yaml", "a/b.yml"]
    assert mask_key("a/b.jpg") == "a/b.mask.png"
    assert is_sidecar("a/b.TXT") and is_sidecar("a/b.mask.png") and not is_sidecar("a/b.png")
    assert image_keys("a/b.json")[:3] == ["a/b.jpg", "a/b.jpeg", "a/b.png"]
    assert image_keys("a/b.mask.png")[0] == "a/b.jpg"


_NAME = st.text(st.sampled_from("ab.-_ é"), min_size=1, max_size=8).filter(
    lambda n: n not in (".", "..")
)


@settings(max_examples=300, deadline=None)
@given(folders=st.lists(_NAME, max_size=3), name=_NAME)
def test_sidecar_names_of_any_key_strip_the_suffix_as_pathlib_does(folders, name):
    """The string operation behind sidecar and mask names agrees with PurePosixPath on
    every normalized key (``.hidden``, ``a.b.``, ``a..png``), and an image's sidecar names
    lead back to it."""
    from pathlib import PurePosixPath

    from daemon.rules.sidecars import image_keys, sidecar_keys, without_suffix

    key = "/".join([*folders, name])
    assert without_suffix(key) == str(PurePosixPath(key).with_suffix(""))
    image = key + ".jpg"
    assert all(image in image_keys(sidecar) for sidecar in sidecar_keys(image))


def test_sidecar_names_keep_an_object_keys_own_slashes():
    """S3 keys are names, not paths: ``a//b.png``'s sidecar is ``a//b.txt``, not ``a/b.txt``."""
    from daemon.rules.sidecars import mask_key, sidecar_keys

    assert sidecar_keys("a//b.png")[0] == "a//b.txt"
    assert mask_key("./b.png") == "./b.mask.png"
