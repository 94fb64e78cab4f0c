"""A config whose outputs would land where it reads is refused at start, with the reason."""

from __future__ import annotations

import textwrap

import pytest

from daemon.config.profiles import resolve_profiles
from daemon.config.settings import load_settings
from daemon.rules.match import RuleSet
from daemon.service.app import config_problems


@pytest.mark.parametrize(
    ("sink", "overlaps"),
    [
        ("{type: s3, bucket: media, prefix: inbox/out}", True),  # inside the watched prefix
        ("{type: s3, bucket: media, prefix: ''}", True),  # the whole bucket contains the inbox
        (
            "{type: s3, bucket: media, prefix: inbo}",
            False,
        ),  # prefixes are folders: inbo/ is not inbox/
        ("{type: s3, bucket: media, prefix: outbox}", False),
        ("{type: s3, bucket: renders, prefix: inbox}", False),  # another bucket
    ],
)
def test_s3_output_overlapping_an_s3_input_is_refused(tmp_path, sink, overlaps):
    config = tmp_path / "darkroom.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        sources:
          in: {{type: s3, bucket: media, prefix: inbox, mode: poll}}
        sinks:
          out: {sink}
        """)
    )
    settings = load_settings(config)
    problems = [
        str(p)
        for p in config_problems(settings, RuleSet([]), resolve_profiles(settings))
        if "overlaps" in str(p)
    ]
    if overlaps:
        assert (
            problems
            and "s3://media/inbox/" in problems[0]
            and "write them somewhere else" in problems[0]
        )
    else:
        assert not problems
