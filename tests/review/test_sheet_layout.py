"""Geometry of review sheets, checked on the computed layout (no pixel-peeping)."""

from __future__ import annotations

import itertools

import pytest

from daemon.outputs.sheet_layout import MAX_PROMPT_LINES, SOURCE
from daemon.outputs.text import font

from .conftest import layout_of


def outputs(layout):
    return [t for t in layout.tiles if t.kind != "source"]


def test_tiles_match_manifest_rows_and_columns(make_manifest, assert_layout_sound):
    manifest = make_manifest(
        [("explore", "sd-turbo", 4), ("explore", "sdxl-turbo", 4), ("explore", "flux", 4)]
    )
    layout = layout_of(manifest, tile=256)
    assert_layout_sound(layout)

    assert (layout.rows, layout.columns) == (3, 4)
    assert len(layout.tiles) == 1 + 3 * 4
    source = layout.source
    assert (source.kind, source.path, source.row) == ("source", SOURCE, -1)
    assert source.label == "source · 640x480"

    tiles = outputs(layout)
    step_gap = layout.tile + layout.gap
    for row, model in enumerate(["sd-turbo", "sdxl-turbo", "flux"]):
        in_row = [t for t in tiles if t.row == row]
        assert [t.column for t in in_row] == [0, 1, 2, 3]
        assert {t.model for t in in_row} == {model}
        assert [t.path for t in in_row] == [
            f"product-lifestyle/a/explore-{model}-{v}.png" for v in range(4)
        ]
        assert len({t.cell.y0 for t in in_row}) == 1  # one row, one y
        xs = [t.cell.x0 for t in in_row]
        assert [b - a for a, b in itertools.pairwise(xs)] == [step_gap] * 3
    ys = [next(t.cell.y0 for t in tiles if t.row == r) for r in range(3)]
    assert ys == sorted(ys) and len(set(ys)) == 3
    assert len({t.cell.x0 for t in tiles if t.column == 0}) == 1  # columns line up

    # source at the left, top-aligned with the grid
    assert source.cell.x0 == layout.margin
    assert source.cell.x1 < min(t.cell.x0 for t in tiles)
    assert source.cell.y0 == min(t.cell.y0 for t in tiles)
    assert source.cell.y0 >= layout.header.y1


def test_caption_reads_step_model_seed_time(make_manifest):
    layout = layout_of(make_manifest([("explore", "sd-turbo", 1)]))
    (tile,) = outputs(layout)
    assert tile.label == "explore · sd-turbo · seed 42 · 0.41 s"
    assert " ".join(line.text for line in tile.captions) == tile.label


def test_variant_order_follows_variant_index(make_manifest):
    manifest = make_manifest([("explore", "sd-turbo", 3)])
    manifest["steps"][0]["outputs"].reverse()
    layout = layout_of(manifest)
    assert [t.path[-5] for t in sorted(outputs(layout), key=lambda t: t.column)] == ["0", "1", "2"]


def test_failed_step_and_failed_variant_become_failed_tiles(make_manifest, assert_layout_sound):
    manifest = make_manifest([("explore", "sd-turbo", 3), ("refine", "tiny", 0)])
    oom = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)"
    manifest["steps"][1].update(state="failed", error=oom)
    manifest["steps"][0]["outputs"][1] = {
        "path": None,
        "seed": 43,
        "step": "explore",
        "model": "sd-turbo",
        "variant": 1,
        "error": "NaN in latents\nat step 2",
    }
    layout = layout_of(manifest, tile=256)
    assert_layout_sound(layout)

    failed = [t for t in layout.tiles if t.kind == "failed"]
    assert len(failed) == 2
    variant, step = sorted(failed, key=lambda t: t.row)
    assert (variant.row, variant.column, variant.path) == (0, 1, None)
    assert variant.reason == "NaN in latents at step 2"
    assert "failed" in variant.label and "variant 1" in variant.label
    assert (step.row, step.column, step.path) == (1, 0, None)
    assert step.reason == oom
    assert step.label == "refine · tiny · failed"
    # the reason is shown, wrapped, inside the tile
    assert len(step.reason_lines) > 1
    assert " ".join(line.text for line in step.reason_lines) == oom
    # the neighbours of the failed variant are still outputs
    assert [t.kind for t in outputs(layout) if t.row == 0] == ["output", "failed", "output"]


def test_failed_step_with_outputs_keeps_them_and_adds_a_failure_tile(make_manifest):
    manifest = make_manifest([("explore", "sd-turbo", 2)])
    manifest["steps"][0].update(state="failed", error="worker died")
    layout = layout_of(manifest)
    assert [t.kind for t in outputs(layout)] == ["output", "output", "failed"]


def test_step_without_outputs_that_has_not_failed_is_pending(make_manifest):
    manifest = make_manifest([("explore", "sd-turbo", 2), ("animate", "svd", 0)])
    manifest["steps"][1]["state"] = "queued"
    layout = layout_of(manifest)
    pending = [t for t in layout.tiles if t.kind == "pending"]
    assert [(p.reason, p.label) for p in pending] == [("queued", "animate · svd · queued")]


def test_very_long_reason_is_truncated_inside_the_tile(make_manifest, assert_layout_sound):
    manifest = make_manifest([("refine", "tiny", 0)])
    manifest["steps"][0].update(state="failed", error="Traceback: boom " * 500)
    layout = layout_of(manifest, tile=128)
    assert_layout_sound(layout)
    (tile,) = outputs(layout)
    assert tile.reason_lines[-1].text.endswith("…")


def test_long_prompt_wraps_inside_the_header(make_manifest, assert_layout_sound):
    short = layout_of(make_manifest([("explore", "sd-turbo", 2)]))
    words = "a sunlit marble kitchen counter, editorial product photo, 85mm, f/1.8"
    manifest = make_manifest([("explore", "sd-turbo", 2)], rule_prompt=(words + " ") * 60)
    layout = layout_of(manifest)
    assert_layout_sound(layout)

    (prompt,) = [b for b in layout.blocks if b.role == "prompt"]
    assert 1 < len(prompt.lines) <= MAX_PROMPT_LINES
    assert prompt.lines[-1].text.endswith("…")
    for line in prompt.lines:
        assert layout.header.contains(line.box)
        assert line.box.x1 <= layout.size[0] - layout.margin
    assert layout.size[0] == short.size[0]  # the prompt never widens the sheet
    # a prompt without spaces is broken between characters, still inside
    manifest = make_manifest([("explore", "sd-turbo", 1)], rule_prompt="x" * 5000)
    assert_layout_sound(layout_of(manifest))


def test_compare_group_shows_its_prompt_once(make_manifest, assert_layout_sound):
    rows = [("explore", "sd-turbo", 2), ("explore", "sdxl-turbo", 2), ("refine", "tiny", 1)]
    same = layout_of(make_manifest(rows))
    assert [b for b in same.blocks if b.role == "group-prompt"] == []

    manifest = make_manifest(rows, step_prompt="a lemon on marble, morning light")
    layout = layout_of(manifest)
    assert_layout_sound(layout)
    groups = [b for b in layout.blocks if b.role == "group-prompt"]
    assert [b.text for b in groups] == [
        "explore: a lemon on marble, morning light",
        "refine: a lemon on marble, morning light",
    ]
    explore_rows = [t for t in layout.tiles if t.step == "explore"]
    assert groups[0].box.y1 <= min(t.cell.y0 for t in explore_rows)


@pytest.mark.parametrize(
    ("rows", "tile", "expected_width", "grid_rows"),
    [
        ([("explore", "sd-turbo", 2)], 256, 16 + 256 + 25 + 2 * 256 + 1 * 8 + 16, 1),
        (
            [("explore", "sd-turbo", 4), ("explore", "sdxl-turbo", 4), ("explore", "flux", 4)],
            256,
            16 + 256 + 25 + 4 * 256 + 3 * 8 + 16,
            3,
        ),
    ],
    ids=["1x2", "3x4"],
)
def test_sheet_dimensions(make_manifest, rows, tile, expected_width, grid_rows):
    layout = layout_of(make_manifest(rows), tile=tile)
    width, height = layout.size
    assert width == expected_width
    cell_w, cell_h = layout.cell_size
    assert cell_w == tile
    assert layout.caption_height < tile // 2
    grid_h = grid_rows * cell_h + (grid_rows - 1) * layout.gap
    assert height == layout.header.y1 + layout.margin + grid_h + layout.margin


def test_fonts_scale_with_tile(make_manifest):
    manifest = make_manifest([("explore", "sd-turbo", 2)])
    small, large = layout_of(manifest, tile=128), layout_of(manifest, tile=512)
    size = lambda layout: outputs(layout)[0].captions[0].size  # noqa: E731
    assert size(large) > size(small) >= 10
    assert font(size(large)).getbbox("Ag")[3] > font(size(small)).getbbox("Ag")[3]


def test_too_small_tile_is_refused(make_manifest):
    with pytest.raises(ValueError, match="tile"):
        layout_of(make_manifest([("explore", "sd-turbo", 1)]), tile=16)


def test_empty_or_sparse_manifest_still_lays_out(assert_layout_sound):
    layout = layout_of({"source": {"key": "a.jpg"}, "steps": []})
    assert_layout_sound(layout)
    assert [t.kind for t in layout.tiles] == ["source"]
    assert layout.source.label == "source"
