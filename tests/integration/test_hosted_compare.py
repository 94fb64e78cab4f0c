"""A compare step mixing a tiny local model and two hosted ones (fake providers on
127.0.0.1): one manifest and one sheet with all of them and their costs; budgets."""

from __future__ import annotations

from PIL import Image

from tests.conftest import make_image
from tests.hosted.fakes import FakeArk, FakeGemini


def profiles(gemini: FakeGemini, ark: FakeArk) -> str:
    fast = "timeout: 5, retries: 1, backoff: 0.01, max_wait: 2"
    return f"""\
profiles:
  nano-banana: {{options: {{base_url: "{gemini.url}/v1beta", {fast}, price_by_size: {{}}}}, price_per_image: 0.039}}
  seedream-4: {{options: {{base_url: "{ark.url}/api/v3", {fast}}}, price_per_image: 0.05}}
"""


def test_local_and_hosted_side_by_side_with_costs(harness, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", FakeGemini.key)
    monkeypatch.setenv("ARK_API_KEY", FakeArk.key)
    with FakeGemini() as gemini, FakeArk() as ark:
        harness.rule(
            "r.yaml",
            """\
            name: r
            match: {source: drop}
            prompt: "{stem} as a watercolor"
            steps:
              - {name: explore, models: [tiny, nano-banana, seedream-4], variants: 2, seed: 3}
            output: {sink: out}
            """,
        )
        harness.start(profiles(gemini, ark))
        make_image(harness.drop / "cup.png")
        m = harness.manifest("r", "cup", timeout=60)
    assert m["status"] == "done", [(s["model"], s["error"]) for s in m["steps"]]
    assert [s["model"] for s in m["steps"]] == ["tiny", "nano-banana", "seedream-4"]
    tiny, nano, seed = (s["outputs"] for s in m["steps"])
    assert len(tiny) == len(nano) == len(seed) == 2
    assert all("cost" not in o for o in tiny)
    assert [o["cost"] for o in nano] == [0.039, 0.039]
    assert [o["cost"] for o in seed] == [0.05, 0.05]
    assert all(o["provider"] == "gemini" and o["request_id"] for o in nano), nano
    sheet = Image.open(harness.out / m["sheet"])
    assert sheet.height > 3 * 200  # three model rows
    page = (harness.out / m["page"]).read_text()
    assert "$0.039" in page and "$0.050" in page or "$0.05" in page


def test_a_daily_budget_stops_hosted_calls_not_local_ones(harness, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", FakeGemini.key)
    monkeypatch.setenv("ARK_API_KEY", FakeArk.key)
    with FakeGemini() as gemini, FakeArk() as ark:
        harness.rule(
            "r.yaml",
            """\
            name: r
            daily_budget: 0.05
            match: {source: drop}
            prompt: "{stem} at dusk"
            steps:
              - {name: local, model: stub, seeds: [1]}
              - {name: hosted, input: source, model: nano-banana, seeds: [1]}
            output: {sink: out}
            """,
        )
        app = harness.start(profiles(gemini, ark))
        make_image(harness.drop / "a.png")
        first = harness.manifest("r", "a", timeout=60)
        assert first["status"] == "done"  # $0.039 fits in $0.05
        make_image(harness.drop / "b.png", color=(1, 2, 3))
        harness.wait(
            lambda: any("daily budget" in (j.error or "") for j in app.ledger.jobs(state="queued")),
            timeout=30,
            what="the hosted job to be deferred",
        )

        def b_jobs():
            return {
                j.unit_id: j for j in app.ledger.jobs() if app.ledger.plan(j.plan_id).key == "b.png"
            }

        # The pool runs the two steps side by side: the local one may still be finishing.
        harness.wait(
            lambda: b_jobs()["local"].state.value != "running", timeout=30, what="the local step"
        )
        jobs = b_jobs()
    assert jobs["local"].state.value == "done"  # local models are never budgeted
    assert jobs["hosted"].state.value == "queued" and jobs["hosted"].attempts == 0
    assert "$0.05 of rule 'r' reached ($0.04 spent today" in jobs["hosted"].error
    assert list(app.ledger.spend().values()) == [0.039]


def test_a_refused_output_is_a_failed_variant_on_the_sheet(harness, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", FakeGemini.key)
    monkeypatch.setenv("ARK_API_KEY", FakeArk.key)
    with FakeGemini() as gemini, FakeArk() as ark:
        gemini.script(
            "generate",
            200,
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": "I can't."}]},
                        "finishReason": "IMAGE_SAFETY",
                        "index": 0,
                    }
                ],
                "responseId": "resp-refused",
            },
        )
        harness.rule(
            "r.yaml",
            """\
            name: r
            match: {source: drop}
            prompt: "{stem} on a beach"
            steps: [{name: edit, model: nano-banana, seeds: [1, 2]}]
            output: {sink: out}
            """,
        )
        harness.start(profiles(gemini, ark))
        make_image(harness.drop / "hat.png")
        m = harness.manifest("r", "hat", timeout=60)
    outputs = m["steps"][0]["outputs"]
    refused = [o for o in outputs if o.get("error")]
    assert m["steps"][0]["state"] == "done" and len(outputs) == 2 and len(refused) == 1
    assert refused[0]["path"] is None and "IMAGE_SAFETY" in refused[0]["error"]
    kept = [o for o in outputs if not o.get("error")][0]
    assert (harness.out / kept["path"]).exists() and kept["cost"] == 0.039
    assert (harness.out / m["sheet"]).exists()
