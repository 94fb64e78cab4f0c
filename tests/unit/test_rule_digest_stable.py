"""A rule's digest is part of every plan's identity: a daemon upgrade that adds a rule key
must not change the digest of a rule that does not use it, or every input would be
processed again. These are the example rules' digests as the daemon has always computed them."""

from __future__ import annotations

from pathlib import Path

from daemon.rules.load import load_rules

REPO = Path(__file__).resolve().parents[2]

PINNED = {
    "packshot-lifestyle": "96107f51cd35eaf8",
    "brand-identity": "90dd4d82c517a2a7",
    "compare": "589833c585e95475",
    "designer-edit": "1ff038aae6a7716f",
    "solo-explore": "37bec477687ea118",
    "story-animate": "0509592b9ee36b0a",
}


def test_existing_rules_keep_their_digests() -> None:
    rules = load_rules(REPO / "rules" / "examples")
    digests = {r.rule.name: r.rule.digest() for r in rules.rules if r.rule.name in PINNED}
    assert digests == PINNED


def test_the_digest_follows_the_meaning() -> None:
    rules = load_rules(REPO / "rules" / "examples")
    rule = rules.by_name["solo-explore"].rule
    rule.digest()  # computed once and kept: a changed copy must not keep it
    changed = rule.model_copy(update={"prompt": rule.prompt + ", at dusk"})
    assert changed.digest() != rule.digest()
    assert rule.model_copy(update={"description": "notes"}).digest() == rule.digest()
