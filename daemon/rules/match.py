"""Matching: whether a rule takes an arrival, and every reason it does not.

Matching looks only at what is known without decoding pixels: the source, the key (globs),
whether a sidecar exists and the image header (:class:`ImageFacts`). ``darkroom match``
prints the reasons; intake uses the same verdicts to choose the rules to plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from daemon.rules import globs
from daemon.rules.schema import Match, Rule, is_brief
from daemon.types import Arrival

if TYPE_CHECKING:  # load.py builds RuleSets, so it imports this module, not the reverse
    from daemon.rules.load import LoadedRule


@dataclass
class ImageFacts:
    """What matching may look at without decoding pixels: from the image header."""

    type: str | None
    width: int
    height: int

    @property
    def orientation(self) -> str:
        if self.width == self.height:
            return "square"
        return "landscape" if self.width > self.height else "portrait"


@dataclass
class Verdict:
    rule: str
    matched: bool
    reasons: list[str] = field(default_factory=list)  # why not, for `darkroom match`


def judge(
    rule: Rule,
    arrival: Arrival,
    facts: ImageFacts | None,
    has_sidecar: bool,
    *,
    any_source: bool = False,
    shallow: bool = False,
) -> Verdict:
    """Whether ``rule`` takes ``arrival``, with every reason it does not. ``shallow``
    checks only what needs no read: source and globs."""
    m = rule.match
    if arrival.trigger != "arrival" or rule.on != "arrival":
        return _judge_decision(rule, arrival)
    why: list[str] = []
    if not any_source and arrival.source not in m.source_names:
        why.append(f"source {arrival.source!r} is not one of {m.source_names}")
    if m.include and not globs.match_any(m.include, arrival.key):
        why.append(f"{arrival.key} matches none of include {m.include}")
    if m.exclude and globs.match_any(m.exclude, arrival.key):
        why.append(f"{arrival.key} matches exclude {m.exclude}")
    # Briefs (*.brief.yaml/.csv, no photo) go only to rules with match.briefs: true.
    if m.briefs and not is_brief(arrival.key):
        why.append(f"{arrival.key} is not a brief (*.brief.yaml, *.brief.csv); match.briefs")
    elif is_brief(arrival.key) and not m.briefs:
        why.append(f"{arrival.key} is a brief; only rules with match.briefs: true take briefs")
    if shallow:
        return Verdict(rule.name, not why, why)
    if m.sidecar == "required" and not has_sidecar:
        why.append("no sidecar (.txt/.json/.yaml next to the image) and match.sidecar is required")
    if m.needs_image:
        if facts is None:
            why.append("not a readable image, so its size and type are unknown")
        else:
            why += _image_reasons(m, facts)
    return Verdict(rule.name, not why, why)


def _judge_decision(rule: Rule, arrival: Arrival) -> Verdict:
    """A reviewer's decision on an output (:mod:`daemon.review.triggers`): an ``on:
    approved``/``rejected`` rule takes it when it follows the output's rule (``after``); a
    refine round goes to the one rule the trigger names. A file arrival is for ``on:
    arrival`` rules only."""
    context = dict(arrival.context)
    if arrival.trigger == "refine":
        wanted = context.get("refine_rule")
        ok = rule.name == wanted
        return Verdict(rule.name, ok, [] if ok else [f"the refine round is for {wanted!r}"])
    if rule.on != arrival.trigger:
        return Verdict(rule.name, False, [f"runs on {rule.on}, not on {arrival.trigger}"])
    parent = context.get("parent_rule", "")
    if rule.after and parent not in rule.after:
        return Verdict(rule.name, False, [f"follows {rule.after}, not {parent!r}"])
    if parent == rule.name:  # its own outputs would start it again, without end
        return Verdict(rule.name, False, ["does not follow its own outputs"])
    return Verdict(rule.name, True, [])


def _image_reasons(m: Match, facts: ImageFacts) -> list[str]:
    mp = facts.width * facts.height / 1e6
    why = []
    if m.types and facts.type not in m.types:
        why.append(f"type {facts.type} is not one of {m.types}")
    for label, value, low, high in (
        ("width", facts.width, m.min_width, m.max_width),
        ("height", facts.height, m.min_height, m.max_height),
        ("megapixels", round(mp, 2), m.min_megapixels, m.max_megapixels),
    ):
        if low is not None and value < low:
            why.append(f"{label} {value} < min_{label} {low}")
        if high is not None and value > high:
            why.append(f"{label} {value} > max_{label} {high}")
    if m.orientation and facts.orientation != m.orientation:
        why.append(f"orientation {facts.orientation} is not {m.orientation}")
    if m.aspect and not m.aspect.holds(facts.width / facts.height):
        why.append(
            f"aspect {facts.width / facts.height:.3f} is outside {m.aspect.min}..{m.aspect.max}"
        )
    return why


class RuleSet:
    """The loaded rules, highest priority first, then by file name."""

    def __init__(self, rules: list[LoadedRule]):
        self.rules = sorted(rules, key=lambda r: -r.rule.priority)
        self.by_name = {r.rule.name: r for r in rules}

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, name: str) -> Rule:
        return self.by_name[name].rule

    @property
    def needs_image(self) -> bool:
        return any(r.rule.match.needs_image for r in self.rules)

    def verdicts(
        self,
        arrival: Arrival,
        facts: ImageFacts | None = None,
        has_sidecar: bool = False,
        *,
        any_source: bool = False,
        shallow: bool = False,
    ) -> list[Verdict]:
        """One verdict per rule, in order; after a matching ``stop: true`` rule the rest are
        reported as not tried."""
        out, stopped_by = [], None
        for loaded in self.rules:
            if stopped_by:
                out.append(
                    Verdict(
                        loaded.rule.name,
                        False,
                        [f"not tried: {stopped_by!r} matched and has stop: true"],
                    )
                )
                continue
            verdict = judge(
                loaded.rule, arrival, facts, has_sidecar, any_source=any_source, shallow=shallow
            )
            out.append(verdict)
            if verdict.matched and loaded.rule.stop and not shallow:
                stopped_by = loaded.rule.name
        return out

    def matching(
        self,
        arrival: Arrival,
        facts: ImageFacts | None = None,
        has_sidecar: bool = False,
        *,
        any_source: bool = False,
        shallow: bool = False,
    ) -> list[Rule]:
        """Every rule that takes ``arrival`` (all matching rules run unless one says stop)."""
        return self.taking(
            self.verdicts(arrival, facts, has_sidecar, any_source=any_source, shallow=shallow)
        )

    def taking(self, verdicts: list[Verdict]) -> list[Rule]:
        """The rules whose verdict is a match (intake keeps the verdicts: an input no rule
        takes is recorded with each rule's reason)."""
        return [self.get(v.rule) for v in verdicts if v.matched]
