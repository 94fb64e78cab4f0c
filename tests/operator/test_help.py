"""Issue 20: every subcommand's ``--help`` has a description and an example."""

from __future__ import annotations

from daemon.cli.help import subcommands
from daemon.cli.main import build_parser


def test_every_subcommand_has_a_description_and_an_example() -> None:
    parser = build_parser()
    found = subcommands(parser)
    names = {path for path, _ in found}
    assert {"run", "check", "process", "models", "jobs ls", "match", "inspect"} <= names
    for path, sub in found:
        text = sub.format_help()
        assert sub.description, f"darkroom {path} --help has no description"
        assert "example:" in text and f"darkroom {path}" in text.split("example:", 1)[1], (
            f"darkroom {path} --help has no example of itself"
        )
