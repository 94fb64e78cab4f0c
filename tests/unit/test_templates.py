import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.errors import OutputError
from daemon.rules.templates import TemplateError, check, render, safe_relpath


def test_render_plain_names():
    assert (
        render("{rule}/{stem}-{variant}.png", {"rule": "r", "stem": "a b", "variant": 3})
        == "r/a b-3.png"
    )
    assert render("{{literal}} {x}", {"x": 1}) == "{literal} 1"


@pytest.mark.parametrize(
    "template", ["{x.__class__}", "{x[0]}", "{x!r}", "{x:>999}", "{0}", "{}", "{x.y.z}"]
)
def test_no_attribute_index_conversion_or_spec(template):
    with pytest.raises(TemplateError):
        render(template, {"x": "value"})


def test_unknown_variable_is_named():
    with pytest.raises(TemplateError, match=r"unknown variable \{colour\}"):
        check("{colour}", ["stem"])


@pytest.mark.parametrize(
    "path",
    [
        "../x.png",
        "a/../../x.png",
        "/etc/passwd",
        "a/\x00.png",
        "a/\n.png",
        "",
        "./.",
        "x" * 300 + ".png",
        "a\u202egnp.exe",
        "\uff0e\uff0e\uff0fx.png",
        "a/\u200b/../../x",
    ],
)
def test_paths_that_would_leave_the_sink_are_refused(path):
    with pytest.raises(OutputError):
        safe_relpath(path)


def test_paths_are_normalised():
    assert safe_relpath("a//b/./c.png") == "a/b/c.png"
    assert safe_relpath("a\\b.png") == "a/b.png"
    assert safe_relpath("cafe\u0301.png") == "caf\u00e9.png"  # NFD -> NFC


@given(st.text())
def test_safe_relpath_never_escapes(text):
    try:
        out = safe_relpath(text)
    except OutputError:
        return
    assert not out.startswith("/")
    assert ".." not in out.split("/")
    assert "\x00" not in out


@given(
    st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), st.text(max_size=20), min_size=1
    )
)
def test_render_substitutes_values_verbatim(values):
    template = "|".join(f"{{{k}}}" for k in values)
    assert render(template, values) == "|".join(values.values())
