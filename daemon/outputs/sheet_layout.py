"""Where everything on a review sheet goes: tiles, captions and text blocks (no pixels drawn).

    layout_sheet(manifest, tile) -> SheetLayout

Pure arithmetic and font metrics, so a sheet's geometry can be tested without looking at pixels;
:mod:`daemon.outputs.sheet` draws the result. One row per manifest step record (a compare step
is several adjacent records with the same name, one per model: they form a group whose prompt
is shown once above it), one column per variant, the source's tile on the left.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, Literal

from daemon.outputs.captions import (
    clip_text,
    compute_seconds,
    cost_text,
    hide_paths,
    is_video,
    seconds_text,
    source_name,
)
from daemon.outputs.manifest import Manifest, ManifestSource, StepRecord
from daemon.outputs.text import Box, TextLine, clean_text, font, line_height, place_lines, wrap_text
from daemon.types import OutputRecord

__all__ = [
    "MIN_TILE",
    "Metrics",
    "SOURCE",
    "PlacedTile",
    "SheetLayout",
    "TextBlock",
    "TileKind",
    "layout_sheet",
    "reason_lines",
]

SOURCE = "source"  # the path open_image() receives for the source image
SEP = " · "
MIN_TILE = 48
MAX_CAPTION_LINES = 3
MAX_PROMPT_LINES = 4
MAX_NEGATIVE_LINES = 2
MAX_GROUP_PROMPT_LINES = 2

# "reference": a step's reference image, stacked under the source tile.
TileKind = Literal["source", "output", "video", "failed", "pending", "reference"]


@dataclass(frozen=True)
class TextBlock:
    """Header and group-prompt text: ``box`` is the band reserved for it; lines lie inside."""

    role: Literal["title", "key", "made-from", "prompt", "negative", "group-prompt"]
    box: Box
    lines: tuple[TextLine, ...]
    text: str  # the full text before wrapping/truncation


@dataclass(frozen=True)
class PlacedTile:
    kind: TileKind
    cell: Box  # image square + caption area; tiles never overlap each other
    image: Box  # the tilextile square the picture is letterboxed into
    label: str  # the full caption text before wrapping
    captions: tuple[TextLine, ...]  # caption lines, under the image, inside ``cell``
    path: str | None = None  # what open_image() receives; None for failed/pending tiles
    reason: str | None = None  # failure/pending text shown inside the image square
    reason_lines: tuple[TextLine, ...] = ()
    row: int = -1  # -1 for the source tile
    column: int = 0
    step: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class SheetLayout:
    size: tuple[int, int]
    tile: int
    margin: int
    gap: int
    caption_height: int  # height of the caption area under every image square
    header: Box
    blocks: tuple[TextBlock, ...]
    tiles: tuple[PlacedTile, ...]
    rows: int
    columns: int

    @property
    def cell_size(self) -> tuple[int, int]:
        return (self.tile, self.tile + self.caption_height)

    @property
    def source(self) -> PlacedTile:
        return next(t for t in self.tiles if t.kind == "source")

    def boxes(self) -> list[Box]:
        """Every top-level box: the header band, group-prompt bands and tile cells."""
        return (
            [self.header]
            + [b.box for b in self.blocks if b.role == "group-prompt"]
            + [t.cell for t in self.tiles]
        )


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Metrics:
    """Margins, gaps and font sizes, all derived from the tile size."""

    tile: int
    margin: int
    gap: int
    source_gap: int
    pad: int
    caption_size: int
    title_size: int
    prompt_size: int

    @classmethod
    def for_tile(cls, tile: int) -> Metrics:
        caption = max(10, round(tile / 18))
        return cls(
            tile=tile,
            margin=max(8, tile // 16),
            gap=max(4, tile // 32),
            source_gap=max(12, tile // 10),
            pad=max(3, caption // 3),
            caption_size=caption,
            title_size=round(caption * 1.5),
            prompt_size=caption + max(1, caption // 7),
        )


@dataclass(frozen=True)
class _Entry:
    kind: TileKind
    label: str
    path: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class _Row:
    name: str
    model: str
    prompt: str
    entries: tuple[_Entry, ...]
    variation: str = ""  # a prompt variation's id: then the row shows its own prompt


def _variant_key(indexed: tuple[int, OutputRecord]) -> tuple[float, int]:
    i, out = indexed
    return (float(out.variant), i)


def _output_entry(out: OutputRecord, name: str, model: str) -> _Entry:
    o_step = clean_text(out.step) or name
    o_model = clean_text(out.model) or model
    if out.error or not out.path:
        label = SEP.join([o_step, o_model, f"variant {out.variant}", "failed"])
        reason = clean_text(hide_paths(out.error or "")) or "no output file recorded"
        return _Entry("failed", label, reason=reason)
    fields = [o_step, o_model, f"seed {out.seed}"]
    if is_video(out):
        fields.append(clip_text(out))
    elif (secs := seconds_text(out.seconds)) is not None:
        fields.append(secs)
    if (cost := cost_text(out.cost)) is not None:
        fields.append(cost)
    if out.input and out.input != SOURCE:  # the earlier output this one was made from
        fields.append(f"from {posixpath.splitext(posixpath.basename(out.input))[0]}")
    if is_video(out):
        label = SEP.join(f for f in fields if f)
        if out.poster:
            return _Entry("video", label, path=out.poster)
        return _Entry("video", label, reason="video (no poster image)")
    return _Entry("output", SEP.join(fields), path=out.path)


def _row(step: StepRecord) -> _Row:
    name = clean_text(step.name) or "step"
    model = clean_text(step.model or step.model_id) or "?"
    state = clean_text(step.state) or "pending"
    outputs = sorted(enumerate(step.outputs), key=_variant_key)
    entries = [_output_entry(out, name, model) for _, out in outputs]
    error = clean_text(hide_paths(step.error or ""))
    if state == "failed" and (error or not entries):
        reason = error or "failed (no reason recorded)"
        entries.append(_Entry("failed", SEP.join([name, model, "failed"]), reason=reason))
    elif not entries:
        reason = "no outputs" if state == "done" else state
        entries.append(_Entry("pending", SEP.join([name, model, state]), reason=reason))
    return _Row(
        name, model, clean_text(step.prompt), tuple(entries), clean_text(step.variation or "")
    )


def _groups(rows: list[_Row]) -> list[list[_Row]]:
    groups: list[list[_Row]] = []
    for row in rows:
        if groups and groups[-1][0].name == row.name:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def _varies(group: list[_Row]) -> bool:
    """Whether the group's rows are prompt variations (each row labelled with its prompt)."""
    return any(r.variation for r in group) and len({r.prompt for r in group}) > 1


def _row_prompt(group: list[_Row], row: _Row) -> str:
    """A prompt variation's row label: its id (and model, in a compare) and its prompt."""
    if not _varies(group) or not row.prompt:
        return ""
    several_models = len({r.model for r in group}) > 1
    who = SEP.join(x for x in (row.model if several_models else "", row.variation) if x)
    return f"{who}: {row.prompt}" if who else row.prompt


def _group_prompt(group: list[_Row], rule_prompt: str) -> str:
    if _varies(group):  # each row says its own prompt
        return ""
    prompts = list(dict.fromkeys(r.prompt for r in group if r.prompt))
    differing = [p for p in prompts if p != rule_prompt]
    if not differing:
        return ""
    if len(prompts) == 1:
        return f"{group[0].name}: {prompts[0]}"
    per_model = [f"{r.model}: {r.prompt}" for r in group if r.prompt]
    return f"{group[0].name}: " + " | ".join(dict.fromkeys(per_model))


def _made_from(manifest: Manifest) -> str:
    """For a plan a review decision started (channel renditions of an approved hero, a refine
    round): which output it was made from, of which rule, and the decision."""
    follows = manifest.follows
    if follows is None:
        return ""
    what = [posixpath.basename(follows.output)]
    if follows.rule:
        what.append(f"of {follows.rule}")
    decided = "refine" if follows.trigger == "refine" else follows.trigger
    text = " ".join(what) + SEP + decided + (f" by {follows.by}" if follows.by else "")
    if follows.trigger == "refine":
        text += f"{SEP}round {follows.round}"
    if follows.note:
        text += f"{SEP}note: {follows.note}"
    return clean_text(text)


def _prompt_prefix(manifest: Manifest) -> str:
    """ "prompt: ", or "prompt (with sidecar a.json): " when the source's sidecar could set or
    extend it (the page says the same: rule, sidecar, variation)."""
    sidecar = manifest.source.sidecar
    if sidecar is None or not sidecar.key:
        return "prompt: "
    return f"prompt (with sidecar {clean_text(posixpath.basename(sidecar.key))}): "


def _references(manifest: Manifest) -> list[_Entry]:
    """A tile per reference image the steps used (once each): its small copy in the sink,
    captioned with the steps that used it and its file name; a grey tile where no copy was
    kept."""
    users: dict[str, list[str]] = {}
    for step in manifest.steps:
        for ref in step.references:
            names = users.setdefault(ref, [])
            if (name := clean_text(step.name) or "step") not in names:
                names.append(name)
    entries = []
    for ref, steps in users.items():
        name = clean_text(posixpath.basename(ref)) or "?"
        label = f"{', '.join(steps)} reference{SEP}{name}"
        thumb = manifest.reference_thumbs.get(ref)
        if thumb:
            entries.append(_Entry("reference", label, path=thumb))
        else:
            entries.append(_Entry("pending", label, reason="reference (no picture kept)"))
    return entries


def _source_label(source: ManifestSource) -> str:
    w, h = source.width, source.height
    return f"{SOURCE}{SEP}{w}x{h}" if w and h else SOURCE


def reason_lines(reason: str, image: Box, m: Metrics) -> tuple[TextLine, ...]:
    """A failed or pending tile's reason, wrapped inside its image square."""
    size, lh = m.caption_size, line_height(m.caption_size)
    width = image.width - 2 * m.pad
    max_lines = max(1, (image.height - 2 * m.pad) // lh)
    lines = wrap_text(reason, font(size), width, max_lines)
    return place_lines(lines, size, image.x0 + m.pad, image.y0 + m.pad)


def _block(
    role: Any, text: str, size: int, max_lines: int, x: int, y: int, width: int, prefix: str = ""
) -> TextBlock:
    lines = wrap_text(prefix + text, font(size), width, max_lines)
    placed = place_lines(lines, size, x, y)
    box = Box(x, y, x + width, y + len(lines) * line_height(size))
    # An accent on a capital ("Á") can reach a pixel above the line's origin: the block
    # holds its lines' ink.
    top = min([box.y0, *(line.box.y0 for line in placed)])
    bottom = max([box.y1, *(line.box.y1 for line in placed)])
    return TextBlock(role, Box(box.x0, top, box.x1, bottom), placed, text)


def layout_sheet(manifest: Manifest, tile: int = 256) -> SheetLayout:
    """Where everything on the sheet goes, for ``tile``-pixel square image cells."""
    if tile < MIN_TILE:
        raise ValueError(f"tile must be at least {MIN_TILE} px, got {tile}")
    m = Metrics.for_tile(tile)
    rule, source = manifest.rule, manifest.source
    rule_prompt = clean_text(rule.prompt)
    groups = _groups([_row(step) for step in manifest.steps])
    columns = max([1] + [len(r.entries) for g in groups for r in g])
    grid_x = m.margin + tile + m.source_gap
    width = grid_x + columns * tile + (columns - 1) * m.gap + m.margin
    inner = width - 2 * m.margin

    # Header band: rule name, source key line, prompt, negative prompt.
    blocks: list[TextBlock] = []
    y = m.margin
    key_fields = [clean_text(source_name(source)) or "?"]
    if source.width and source.height:
        key_fields.append(f"{source.width}x{source.height} px")
    if manifest.status:
        key_fields.append(clean_text(manifest.status))
    if (cost := cost_text(manifest.total_cost())) is not None:
        key_fields.append(f"{cost} est.")
    if (compute := seconds_text(compute_seconds(manifest.steps))) is not None:
        key_fields.append(f"{compute} model time")
    header_texts: list[tuple[Any, str, int, int, str]] = [
        ("title", clean_text(rule.name) or "(no rule)", m.title_size, 1, ""),
        ("key", SEP.join(key_fields), m.caption_size, 1, ""),
        ("made-from", _made_from(manifest), m.caption_size, 2, "made from: "),
        ("prompt", rule_prompt, m.prompt_size, MAX_PROMPT_LINES, _prompt_prefix(manifest)),
        (
            "negative",
            clean_text(rule.negative_prompt),
            m.caption_size,
            MAX_NEGATIVE_LINES,
            "negative: ",
        ),
    ]
    for role, text, size, max_lines, prefix in header_texts:
        if not text:
            continue
        block = _block(role, text, size, max_lines, m.margin, y, inner, prefix)
        blocks.append(block)
        y = block.box.y1 + m.pad
    header = Box(0, 0, width, y - m.pad + m.margin)

    # Caption area height: uniform, sized for the longest caption (at most MAX_CAPTION_LINES).
    cap_font, cap_lh = font(m.caption_size), line_height(m.caption_size)
    cap_width = tile - 2 * m.pad
    references = _references(manifest)
    labels = [_source_label(source)] + [e.label for g in groups for r in g for e in r.entries]
    labels += [e.label for e in references]
    wrapped = {
        label: wrap_text(label, cap_font, cap_width, MAX_CAPTION_LINES, sep=SEP) for label in labels
    }
    caption_lines = max(1, max(len(v) for v in wrapped.values()))
    caption_height = 2 * m.pad + caption_lines * cap_lh
    cell_h = tile + caption_height

    def place(kind: TileKind, x: int, y: int, label: str, **kw: Any) -> PlacedTile:
        image = Box(x, y, x + tile, y + tile)
        captions = place_lines(wrapped[label], m.caption_size, x + m.pad, image.y1 + m.pad)
        reason = kw.get("reason")
        reasons = reason_lines(reason, image, m) if reason else ()
        return PlacedTile(
            kind,
            Box(x, y, x + tile, y + cell_h),
            image,
            label,
            captions,
            reason_lines=reasons,
            **kw,
        )

    top = header.y1 + m.margin
    tiles = [place("source", m.margin, top, labels[0], path=SOURCE)]
    y = top
    row_index = 0
    for group in groups:
        text = _group_prompt(group, rule_prompt)
        if text:
            block = _block(
                "group-prompt",
                text,
                m.caption_size,
                MAX_GROUP_PROMPT_LINES,
                grid_x,
                y,
                width - m.margin - grid_x,
            )
            blocks.append(block)
            y = block.box.y1 + m.gap
        for row in group:
            label = _row_prompt(group, row)
            if label:  # prompt variations: the prompt is the row's title
                block = _block(
                    "group-prompt",
                    label,
                    m.caption_size,
                    MAX_GROUP_PROMPT_LINES,
                    grid_x,
                    y,
                    width - m.margin - grid_x,
                )
                blocks.append(block)
                y = block.box.y1 + m.pad
            for col, entry in enumerate(row.entries):
                x = grid_x + col * (tile + m.gap)
                tiles.append(
                    place(
                        entry.kind,
                        x,
                        y,
                        entry.label,
                        path=entry.path,
                        reason=entry.reason,
                        row=row_index,
                        column=col,
                        step=row.name,
                        model=row.model,
                    )
                )
            y += cell_h + m.gap
            row_index += 1
        y += m.gap  # a little more air between groups
    # The references the steps used, stacked under the source tile.
    ref_y = tiles[0].cell.y1 + m.gap
    for entry in references:
        tiles.append(
            place(entry.kind, m.margin, ref_y, entry.label, path=entry.path, reason=entry.reason)
        )
        ref_y = tiles[-1].cell.y1 + m.gap
    bottom = max(max(t.cell.y1 for t in tiles if t.row < 0), y - 2 * m.gap if groups else top)
    return SheetLayout(
        size=(width, bottom + m.margin),
        tile=tile,
        margin=m.margin,
        gap=m.gap,
        caption_height=caption_height,
        header=header,
        blocks=tuple(blocks),
        tiles=tuple(tiles),
        rows=row_index,
        columns=columns,
    )
