"""daemon.globs: example tests plus properties checked with hypothesis."""

from __future__ import annotations

import fnmatch
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from daemon.rules.globs import compile_glob, match_any, selects

SEGMENT = st.text(alphabet="abcXYZ019_-. ", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)
KEY = st.lists(SEGMENT, min_size=1, max_size=5).map("/".join)
PATTERN_SEGMENT = st.text(alphabet="abcXYZ0._*?", min_size=1, max_size=6).filter(
    lambda s: "**" not in s
)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("*.jpg", "a.jpg", True),
        ("*.jpg", "A.JPG", True),
        ("*.jpg", "x/y/a.jpg", True),
        ("*.jpg", "a.jpeg", False),
        ("**/*.jpg", "a.jpg", True),
        ("**/*.jpg", "x/y/a.jpg", True),
        ("shoots/*.jpg", "shoots/a.jpg", True),
        ("shoots/*.jpg", "shoots/may/a.jpg", False),
        ("shoots/*.jpg", "other/shoots/a.jpg", False),
        ("shoots/**/*.jpg", "shoots/a.jpg", True),
        ("shoots/**/*.jpg", "shoots/may/day1/a.jpg", True),
        ("shoots/**", "shoots/may/a.jpg", True),
        ("shoots/**", "shoots", False),
        ("/*.jpg", "a.jpg", True),
        ("/*.jpg", "x/a.jpg", False),
        ("raw/", "raw/a.jpg", True),
        ("raw/", "x/raw/y/a.jpg", True),
        ("raw/", "rawfile.jpg", False),
        ("a?c.png", "abc.png", True),
        ("a?c.png", "a/c.png", False),
        ("img[0-9].png", "IMG7.PNG", True),
        ("img[0-9].png", "imgx.png", False),
        ("img[!0-9].png", "imgx.png", True),
        ("img[!0-9].png", "img7.png", False),
        ("x[]]y", "x]y", True),
        (r"\*.jpg", "*.jpg", True),
        (r"\*.jpg", "a.jpg", False),
        ("a**b.jpg", "aXb.jpg", True),
        ("a**b.jpg", "a/b.jpg", False),
        ("**", "any/thing.jpg", True),
        ("**/brand/refs/*.png", "brand/refs/logo.png", True),
    ],
)
def test_examples(pattern, key, expected):
    assert match_any([pattern], key) is expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty pattern"),
        ("img[0-9.png", "unclosed '\\['"),
        ("a\\", "dangling"),
        ("[z-a].jpg", "bad character range"),
        ("a//b", "empty path segment"),
        ("a[/]b", "unclosed"),  # a class never matches "/"
    ],
)
def test_invalid_patterns(pattern, message):
    with pytest.raises(ValueError, match=message) as info:
        compile_glob(pattern)
    assert repr(pattern) in str(info.value)


def test_compile_is_cached():
    assert compile_glob("**/*.jpg") is compile_glob("**/*.jpg")
    assert isinstance(compile_glob("*.png"), re.Pattern)


def test_match_any_refuses_a_bare_string():
    with pytest.raises(TypeError):
        match_any("*.jpg", "a.jpg")  # type: ignore[arg-type]


def test_selects():
    assert selects("a.jpg", [], [])
    assert selects("a.jpg", ["*.jpg"], [])
    assert not selects("a.png", ["*.jpg"], [])
    assert not selects("raw/a.jpg", ["*.jpg"], ["raw/**"])
    assert selects("cooked/a.jpg", ["*.jpg", "*.png"], ["raw/**"])
    assert not selects("raw/a.jpg", [], ["raw/**"])


@given(dirs=st.lists(SEGMENT, max_size=4), name=SEGMENT)
def test_double_star_literal_name_matches_at_any_depth(dirs, name):
    key = "/".join([*dirs, name])
    literal = "".join(f"[{c}]" if c in "*?[]\\" else c for c in name)
    assert match_any([f"**/{literal}"], key)
    assert match_any([literal], key)  # no "/": the name at any depth
    assert not match_any([f"**/{literal}"], f"{key}/{name}x")


@given(pattern=st.lists(PATTERN_SEGMENT, min_size=2, max_size=4).map("/".join), key=KEY)
def test_single_star_never_crosses_a_slash(pattern, key):
    if match_any([pattern], key):
        assert key.count("/") == pattern.count("/")


@given(segments=st.lists(SEGMENT, min_size=2, max_size=5))
def test_star_segments_match_exactly_that_depth(segments):
    key = "/".join(segments)
    depth = len(segments)
    assert match_any(["/" + "/".join(["*"] * depth)], key)
    assert not match_any(["/" + "/".join(["*"] * (depth - 1))], key)
    assert not match_any(["/" + "/".join(["*"] * (depth + 1))], key)


@given(pattern=PATTERN_SEGMENT, key=KEY)
def test_matching_is_case_insensitive(pattern, key):
    expected = match_any([pattern], key)
    assert match_any([pattern], key.upper()) is expected
    assert match_any([pattern], key.lower()) is expected
    assert match_any([pattern.upper()], key) is expected


@given(pattern=PATTERN_SEGMENT, key=KEY)
def test_pattern_without_slash_is_double_star_prefixed(pattern, key):
    assert match_any([pattern], key) is match_any([f"**/{pattern}"], key)


@given(pattern=PATTERN_SEGMENT, name=SEGMENT)
def test_single_segment_agrees_with_fnmatch(pattern, name):
    assume("[" not in pattern)
    assert match_any([pattern], name) is fnmatch.fnmatchcase(name.lower(), pattern.lower())


@given(
    key=KEY,
    include=st.lists(PATTERN_SEGMENT, max_size=3),
    exclude=st.lists(PATTERN_SEGMENT, max_size=3),
)
def test_selects_is_include_and_not_exclude(key, include, exclude):
    expected = (not include or match_any(include, key)) and not match_any(exclude, key)
    assert selects(key, include, exclude) is expected
