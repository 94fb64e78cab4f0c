"""Issue 15, bounded inputs: a sidecar is untrusted text. YAML anchors and aliases are refused
(an alias bomb fails at once, in little memory), and bytes, values, depth and prompt length
are capped; each cap exceeded is an input fault whose reason names the file, the cap and the
setting that raises it, and the image stays in place."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from daemon.errors import InputError
from daemon.rules.sidecars import Sidecar
from tests.conftest import make_image
from tests.reliability.conftest import harness  # noqa: F401 - the in-process App fixture

# The classic "billion laughs" in YAML: 9 levels of 9 aliases each, ~400 bytes, which expand
# to 9**9 (387 million) strings when aliases are followed (yaml.safe_load does follow them).
ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(
        f"{name}: &{name} [{','.join(['*' + prev] * 9)}]\n"
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
).encode()

# A few-level bomb: cheap even where aliases are expanded, refused here for its aliases.
SMALL_BOMB = b"""\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
"""


def test_the_alias_bomb_is_refused_in_little_memory():
    """In a child process with 2 GiB of address space: where aliases are expanded the parse
    runs out of memory (or takes minutes); here it is refused for its aliases."""
    assert len(ALIAS_BOMB) < 500
    script = textwrap.dedent(f"""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from daemon.errors import InputError
        from daemon.rules.sidecars import Sidecar
        try:
            Sidecar.parse("photo.yaml", {ALIAS_BOMB!r})
            outcome = "accepted"
        except InputError as exc:
            outcome = str(exc)
        # This process's own high-water mark (ru_maxrss would keep the forking pytest's,
        # which is large late in a full run: Linux carries it across exec).
        status = open("/proc/self/status").read().split("VmHWM:")[1]
        peak_kib = int(status.split()[0])
        print(json.dumps({{"outcome": outcome, "peak_kib": peak_kib}}))
    """)
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert "photo.yaml" in result["outcome"]
    assert "aliases" in result["outcome"], result["outcome"]
    assert result["peak_kib"] < 300 * 1024, f"parse peaked at {result['peak_kib'] // 1024} MiB"


@pytest.mark.parametrize(
    ("key", "data", "expected"),
    [
        ("p.txt", b"x" * 70_000, ["70000 bytes", "65536-byte limit", "limits.max_sidecar_bytes"]),
        ("p.yaml", b"prompt: " + b"y" * 70_000, ["65536-byte limit"]),
        ("p.txt", b"z" * 4001, ["4001 characters", "4000-character", "limits.max_prompt_chars"]),
        (
            "p.json",
            json.dumps({"negative_prompt": "n" * 5000}).encode(),
            ["negative_prompt", "4000-character", "limits.max_prompt_chars"],
        ),
        ("p.yaml", b"vars: {place: " + b"v" * 4500 + b"}", ["vars.place", "4000-character"]),
        ("p.json", b"[" * 40 + b"]" * 40, ["nested deeper than 8"]),
        ("p.yaml", b"vars: [" + b"1," * 3000 + b"]", ["more than 2000 values"]),
        ("p.yaml", b"prompt: &p hello\nnegative_prompt: *p\n", ["aliases"]),
    ],
)
def test_each_cap_exceeded_is_an_input_fault_naming_the_cap(key, data, expected):
    with pytest.raises(InputError) as caught:
        Sidecar.parse(key, data)
    message = str(caught.value)
    assert message.startswith(key)
    for text in expected:
        assert text in message, message


def test_the_caps_come_from_the_limits():
    from daemon.rules.sidecars import SidecarLimits

    generous = SidecarLimits(max_bytes=200_000, max_prompt_chars=100_000)
    assert Sidecar.parse("p.txt", b"x" * 70_000, generous).prompt == "x" * 70_000
    strict = SidecarLimits(max_bytes=100, max_prompt_chars=10)
    with pytest.raises(InputError, match="100-byte limit"):
        Sidecar.parse("p.txt", b"x" * 101, strict)
    with pytest.raises(InputError, match="10-character limit"):
        Sidecar.parse("p.yaml", b"prompt: eleven chars", strict)
    # Within the limits, sidecars read as they always did.
    sidecar = Sidecar.parse(
        "p.yaml", b"prompt: a red chair\nseed: 7\nvars: {room: kitchen, n: 2}\n", generous
    )
    assert (sidecar.prompt, sidecar.seed, sidecar.vars) == (
        "a red chair",
        7,
        {"room": "kitchen", "n": 2},
    )


def test_refused_sidecars_are_recorded_and_the_images_stay(harness):  # noqa: F811
    """In the daemon: each refused sidecar's image has a visible record whose reason names
    the cap, the image stays where it is (fixing the sidecar runs it), and an image without
    a sidecar is processed meanwhile."""
    harness.rule()
    for stem in ("bomb", "long", "wordy", "plain"):
        make_image(harness.drop / f"{stem}.png")
    (harness.drop / "bomb.yaml").write_bytes(SMALL_BOMB)
    (harness.drop / "long.txt").write_bytes(b"x" * 70_000)
    (harness.drop / "wordy.json").write_text(json.dumps({"prompt": "w" * 5000}))
    harness.start()
    harness.wait(
        lambda: all(harness.settled(f"{s}.png") for s in ("bomb", "long", "wordy", "plain")),
        60,
        "every image to settle",
    )
    harness.wait(lambda: len(harness.ledger.quarantine()) >= 3, 30, "the three records")
    reasons = {row["key"]: row["reason"] for row in harness.ledger.quarantine()}
    assert "aliases" in reasons.get("bomb.png", ""), reasons
    assert "limits.max_sidecar_bytes" in reasons.get("long.png", ""), reasons
    assert "limits.max_prompt_chars" in reasons.get("wordy.png", ""), reasons
    assert harness.settled("plain.png") == "done"
    for stem in ("bomb", "long", "wordy"):
        assert (harness.drop / f"{stem}.png").exists(), f"{stem}.png was moved"
