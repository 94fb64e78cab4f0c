"""Property tests: random manifests never produce overlapping boxes or stray text."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import layout_of

# Printable text with the awkward bits captions meet: long unbroken runs, separators, accents,
# CJK and emoji (rendered as boxes by the bundled font, but still measured), newlines, tabs.
text = st.text(
    alphabet=st.one_of(
        st.sampled_from(
            list(
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                " -_/.:,·…()[]{}|'\"\n\t"
            )
        ),
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
    ),
    max_size=120,
)
short = st.text(alphabet="abcxyz-", min_size=1, max_size=12)


@st.composite
def manifests(draw):
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.one_of(st.sampled_from(["explore", "refine"]), text))
        model = draw(st.one_of(short, text))
        state = draw(st.sampled_from(["done", "done", "failed", "queued"]))
        outputs = []
        for v in range(draw(st.integers(1, 6)) if state != "queued" else 0):
            if draw(st.integers(0, 5)) == 0:
                # a refused variant, as the runner records it
                outputs.append(
                    {
                        "path": None,
                        "step": name,
                        "model": model,
                        "variant": v,
                        "seed": v,
                        "error": draw(text),
                    }
                )
            else:
                outputs.append(
                    {
                        "path": f"out/{v}.png",
                        "step": name,
                        "model": model,
                        "variant": v,
                        "seed": draw(st.integers(0, 2**63)),
                        "seconds": draw(st.floats(0, 1e6, allow_nan=False)),
                    }
                )
        if state == "failed" and draw(st.booleans()):
            outputs = []
        steps.append(
            {
                "name": name,
                "model": model,
                "prompt": draw(st.one_of(st.none(), text)),
                "state": state,
                "error": draw(text) if state == "failed" else None,
                "outputs": outputs,
            }
        )
    return {
        "source": {
            "key": draw(text),
            "width": draw(st.integers(1, 10**5)),
            "height": draw(st.integers(1, 10**5)),
        },
        "rule": {
            "name": draw(text),
            "prompt": draw(st.text(max_size=3000)),
            "negative_prompt": draw(st.one_of(st.none(), text)),
        },
        "status": draw(st.sampled_from(["done", "partial", "failed"])),
        "steps": steps,
    }


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(manifest=manifests(), tile=st.sampled_from([48, 64, 128, 256, 384]))
def test_random_manifests_lay_out_cleanly(manifest, tile, assert_layout_sound):
    layout = layout_of(manifest, tile=tile)
    assert_layout_sound(layout)
    steps = manifest["steps"]
    assert layout.rows == len(steps)
    widest = max(max(1, len(s["outputs"])) for s in steps)
    assert widest <= layout.columns <= widest + 1  # + a failure tile after a failed step's outputs
    for row, step in enumerate(steps):
        kinds = [t.kind for t in layout.tiles if t.row == row]
        assert kinds[: len(step["outputs"])] == [
            "output" if o.get("path") else "failed" for o in step["outputs"]
        ]
    assert sum(t.kind == "source" for t in layout.tiles) == 1
