"""Dynamic batching: which jobs share a call, and that every output maps back to its job,
input and seed exactly as a single run gives it."""

from __future__ import annotations

import json

from PIL import Image

from backends.base import ModelSpec, Request, Result
from backends.stub import seed_colour
from daemon.execution import batching
from daemon.types import JobState
from tests.pool.conftest import png, rule

SPEC = ModelSpec("stub", "stub")


def req(color, seeds=(1, 2), prompt="p", size=(8, 8), **params) -> Request:
    return Request([Image.new("RGB", size, color)], prompt, list(seeds), params=params)


def test_only_requests_that_agree_share_a_batch():
    a, b = req((1, 0, 0)), req((2, 0, 0))
    assert batching.batch_key(SPEC, a) == batching.batch_key(SPEC, b)
    for other in (
        req((1, 0, 0), prompt="q"),
        req((1, 0, 0), seeds=(1, 3)),
        req((1, 0, 0), size=(16, 8)),
        req((1, 0, 0), strength=0.7),
    ):
        assert batching.batch_key(SPEC, other) != batching.batch_key(SPEC, a)
    masked = req((1, 0, 0))
    masked.mask = Image.new("L", (8, 8))
    assert batching.batch_key(SPEC, masked) is None
    off = ModelSpec("stub", "stub", options=ModelSpec.freeze_options({"batch": False}))
    assert batching.batch_key(off, a) is None


def test_group_keeps_order_and_caps_the_size():
    items = ["a1", "b1", "a2", "a3", "b2", "x", "a4"]
    key = lambda s: None if s == "x" else s[0]  # noqa: E731
    assert batching.group(items, key, 3) == [["a1", "a2", "a3"], ["b1", "b2"], ["x"], ["a4"]]
    assert batching.group(items, key, 1) == [[i] for i in items]


def test_merged_outputs_map_back_to_their_request_and_seed():
    requests = [req((i * 30, 0, 0), seeds=(5, 6)) for i in range(3)]
    merged = batching.merge(requests)

    def run(spec, request, **_):
        # input-major, like every backend: (image, seed) per output
        return Result(
            [
                Image.new("RGB", (1, 1), (im.getpixel((0, 0))[0], s, 0))
                for im in request.images
                for s in request.seeds
            ],
            3.0,
        )

    parts = batching.split(run(SPEC, merged), requests)
    for i, part in enumerate(parts):
        assert [im.getpixel((0, 0)) for im in part.images] == [(i * 30, 5, 0), (i * 30, 6, 0)]
        assert part.seconds == 1.0 and part.info["batch_jobs"] == 3


def test_a_batched_run_gives_the_same_images_as_single_runs(harness):
    rules = [rule("r", prompt="a photo", variants=2, seed=11)]
    batched, single = harness(rules, max_batch=4), None
    colors = [(200, 10, 10), (10, 200, 10), (10, 10, 200), (90, 90, 90)]
    for i, c in enumerate(colors):
        batched.put(f"r/{i}.png", png(c))
    assert batched.drain() == 1  # one batch for the four jobs
    assert batched.runner.pool.calls == 1
    single = harness(rules, pool=batched.runner.pool, max_batch=1)
    for i, c in enumerate(colors):
        single.put(f"r/{i}.png", png(c))
    assert single.drain() == 4
    for i, c in enumerate(colors):
        for v, seed in enumerate((11, 12)):
            path = f"r/r/{i}.png/one-{v}.png"
            assert batched.sink.objects[path] == single.sink.objects[path]
            pixel = Image.open(__import__("io").BytesIO(batched.sink.objects[path])).getpixel(
                (0, 0)
            )
            want = tuple((a + b) // 2 for a, b in zip(c, seed_colour(seed), strict=True))
            assert all(abs(p - w) <= 1 for p, w in zip(pixel, want, strict=True))
        manifest = json.loads(batched.sink.objects[f"r/r/{i}.png/manifest.json"])
        assert [o["seed"] for o in manifest["steps"][0]["outputs"]] == [11, 12]
        assert manifest["status"] == "done"


def test_a_profile_can_turn_batching_off(harness):
    h = harness([rule("r", model="solo")], max_batch=4)
    for i in range(3):
        h.put(f"r/{i}.png", png((i, i, i)))
    assert h.drain() == 3
    assert h.runner.pool.calls == 3
    assert all(j.state is JobState.DONE for j in h.ledger.jobs())


def test_prompts_that_name_the_file_are_not_merged(harness):
    h = harness([rule("r", prompt="{stem}")], max_batch=4)
    for i in range(3):
        h.put(f"r/{i}.png", png((i, i, i)))
    assert h.drain() == 1  # claimed together ...
    assert h.runner.pool.calls == 3  # ... but each ran alone: one prompt per call


def test_max_wait_collects_companions_that_arrive_late(harness):
    import threading

    h = harness([rule("r", prompt="p")], max_batch=3, max_wait_ms=1500)
    h.put("r/0.png", png((1, 1, 1)))
    timer = threading.Timer(0.3, lambda: [h.put(f"r/{i}.png", png((i, 2, 2))) for i in (1, 2)])
    timer.start()
    assert h.drain() == 1
    timer.join()
    assert h.runner.pool.calls == 1
    assert all(j.state is JobState.DONE for j in h.ledger.jobs())
