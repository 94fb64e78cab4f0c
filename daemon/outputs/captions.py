"""How outputs are described in words on sheets, pages and digests: times, costs, clip lengths.

One wording everywhere, so a sheet and the page beside it say "0.41 s", "$0.004" and
"2.1 s, 25 frames" alike, and name a source by its key (never the server's path) alike.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any

from daemon.outputs.manifest import ManifestSource, StepRecord
from daemon.types import OutputRecord

__all__ = [
    "VIDEO_SUFFIXES",
    "clip_text",
    "compute_seconds",
    "cost_text",
    "hide_paths",
    "is_video",
    "number",
    "params_text",
    "seconds_text",
    "source_name",
]

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".m4v")


def number(value: Any) -> float | None:
    """``value`` as a float, or None (a hand-edited manifest can hold anything)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def seconds_text(value: Any) -> str | None:
    """ "0.41 s" / "12.3 s"; None when there is no time."""
    s = number(value)
    if s is None:
        return None
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def cost_text(value: Any) -> str | None:
    """ "$0.004" / "$0.12" for an estimated USD cost; None when there is none."""
    c = number(value)
    if c is None or c < 0:
        return None
    return f"${c:.3f}" if c < 0.1 else f"${c:.2f}"


def is_video(output: OutputRecord) -> bool:
    """An output that is a clip (``kind: video``, or a video file suffix)."""
    if output.kind == "video":
        return True
    return (output.path or "").lower().endswith(VIDEO_SUFFIXES)


def clip_text(output: OutputRecord) -> str:
    """A clip's length: "2.1 s, 25 frames" (duration from frames / fps when not given)."""
    frames, fps, duration = output.frames, output.fps, output.duration
    if duration is None and frames and fps:
        duration = frames / fps
    parts = []
    if duration is not None:
        parts.append(f"{duration:.1f} s")
    if frames is not None:
        parts.append(f"{frames} frame" + ("" if frames == 1 else "s"))
    return ", ".join(parts) or "video"


def params_text(params: Mapping[str, Any]) -> str:
    """A unit's model parameters as "strength=0.55, steps=2"."""
    return ", ".join(f"{k}={v}" for k, v in params.items())


def source_name(source: ManifestSource) -> str:
    """How pages and sheets name a source: its key under its source. A manifest without a key
    holds the server's path (or URI) only: its file name then, never the whole path."""
    if source.key:
        return source.key
    return posixpath.basename((source.uri or "").rstrip("/")) or "?"


def compute_seconds(steps: Iterable[StepRecord]) -> float | None:
    """The model time of every unit together (the units' times, else their outputs')."""
    total, seen = 0.0, False
    for step in steps:
        seconds = number(step.seconds)
        if seconds is None:
            outs = [number(o.seconds) for o in step.outputs]
            seconds = sum(s for s in outs if s is not None) if any(outs) else None
        if seconds is not None:
            total += seconds
            seen = True
    return total if seen else None


# An absolute path in a message: "/" not preceded by a name, a URL scheme or another path
# ("s3://b/k", "http://h/p" and a sink's "look/a.png" are left alone), up to its last "/".
_SERVER_FOLDERS = re.compile(r"(?<![\w:/.~-])/(?:[^\s/'\"()\[\]<>]+/)+(?=[^\s/'\"()\[\]<>])")


def hide_paths(text: str) -> str:
    """``text`` (an error message) with every absolute path cut to its file name:
    "cannot read /srv/rules/refs/logo.png" -> "cannot read …/logo.png". Pages and sheets are
    shared with people who have no business knowing the server's folders."""
    return _SERVER_FOLDERS.sub("…/", text)
