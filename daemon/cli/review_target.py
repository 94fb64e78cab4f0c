"""Which sink and manifest a ``darkroom review`` TARGET names, and the output it names, if any.

A TARGET is whatever a reviewer has at hand:

    SINK:path             a configured sink's name and a path in it
    s3://bucket/key       an object or prefix under a configured S3 sink (copied from a page,
                          a webhook or ``aws s3 ls``)
    /a/local/path         a path in a configured folder sink, or (no config) in an output folder

and the path may be the source's ``manifest.json``, its folder, a file beside the manifest
(the page, the sheet) or one of its outputs, also as its approval copy
(``approved/<output path>``). A TARGET that is an output names the variant too, so
``darkroom review approve s3://out/look/lamp.png/explore-0.png`` needs nothing more.

Without a config (and no darkroom.yaml here) the sink is a folder sink whose root is the
nearest folder above the manifest from which the manifest's output paths resolve.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.outputs.manifest import Manifest
from daemon.review.decisions import ReviewError, approved_path, load_manifest
from daemon.sinks.base import Sink

if TYPE_CHECKING:
    from daemon.config.settings import Settings

__all__ = ["ReviewTarget", "resolve_target"]

MANIFEST_NAME = "manifest.json"
APPROVED = approved_path("")  # "approved/": where approval copies of outputs are kept


@dataclass(frozen=True)
class ReviewTarget:
    """What a TARGET resolved to."""

    sink: Sink
    manifest_path: str  # the manifest, relative to the sink's root
    output_path: str | None  # the output the TARGET itself named (sink-relative), if any
    settings: Settings | None  # the config that named the sink (None: an ad hoc folder sink)


def resolve_target(target: str, config: Path | None, *, explicit_config: bool) -> ReviewTarget:
    """The sink, manifest and output TARGET names; ReviewError saying why when none.

    ``config`` is the config file to find the sink in (None: none given and no darkroom.yaml
    here); ``explicit_config`` says whether the user named it (then a local path outside
    every configured sink is an error rather than an ad hoc folder sink)."""
    if config is None:
        if target.startswith("s3://"):
            raise ReviewError(
                f"{target}: an S3 target needs the config that names its sink: add "
                "--config darkroom.yaml (or run where darkroom.yaml is)"
            )
        return _local_target(Path(target))
    from daemon.config.settings import load_settings
    from daemon.service.app import build_sinks

    settings = load_settings(config)
    sinks = build_sinks(settings)
    name, sep, rest = target.partition(":")
    if sep and name in sinks:
        sink, path = sinks[name], rest
    elif target.startswith("s3://"):
        sink, path = _s3_sink_for(target, sinks)
    else:
        found = _folder_sink_for(Path(target), sinks)
        if found is None:
            if explicit_config:
                raise ReviewError(
                    f"{target} is not inside a configured sink; give a path in one of them, "
                    f"its s3:// URL, or SINK:path/to/manifest.json ({_listing(sinks)})"
                )
            return _local_target(Path(target))
        sink, path = found
    manifest_path, output_path = _locate(sink, path)
    return ReviewTarget(sink, manifest_path, output_path, settings)


# --------------------------------------------------------------------------- configured sinks


def _listing(sinks: dict[str, Sink]) -> str:
    named = ", ".join(f"{n} = {_where(s, '')}" for n, s in sorted(sinks.items()))
    return f"sinks: {named or 'none'}"


def _where(sink: Sink, path: str) -> str:
    """``sink.location(path)``, the sink's root included (``path`` empty)."""
    if path:
        return sink.location(path)
    root = sink.local_root()
    return str(root) if root is not None else sink.location("")


def _s3_sink_for(url: str, sinks: dict[str, Sink]) -> tuple[Sink, str]:
    """The S3 sink whose bucket and prefix hold ``url`` (the deepest, when prefixes nest),
    and the path in it."""
    from daemon.sinks.s3 import S3Sink

    bucket, _, key = url.removeprefix("s3://").partition("/")
    holders = [
        s
        for s in sinks.values()
        if isinstance(s, S3Sink) and s.bucket == bucket and key.startswith(s.prefix)
    ]
    if not holders:
        raise ReviewError(
            f"{url} is in none of the configured sinks ({_listing(sinks)}); give a URL under "
            "one of them, or add a sink for that bucket and prefix to the config"
        )
    sink = max(holders, key=lambda s: len(s.prefix))
    return sink, key[len(sink.prefix) :]


def _folder_sink_for(target: Path, sinks: dict[str, Sink]) -> tuple[Sink, str] | None:
    path = target.resolve()
    for sink in sinks.values():
        root = sink.local_root()
        if root is not None and path.is_relative_to(root.resolve()):
            return sink, path.relative_to(root.resolve()).as_posix()
    return None


def _locate(sink: Sink, path: str) -> tuple[str, str | None]:
    """(manifest path, output path or None) for ``path`` in ``sink``: the manifest itself,
    its folder, or a file in that folder (an output, the page, the sheet), an approval copy
    included. ReviewError naming the place when there is no manifest there."""
    path = path.strip("/")
    if path.endswith(MANIFEST_NAME) and sink.exists(path):
        return path, None
    tries = [path]
    if path.startswith(APPROVED):  # approved/<output path> -> the output's own folder
        tries.append(path.removeprefix(APPROVED))
    for candidate in tries:
        folder = candidate
        while True:
            manifest = posixpath.join(folder, MANIFEST_NAME)
            if sink.exists(manifest):
                return manifest, candidate if folder != candidate else None
            if not folder:
                break
            folder = posixpath.dirname(folder)
        flat = _flat_manifest(sink, candidate)
        if flat is not None:
            return flat, candidate
    raise ReviewError(
        f"no {MANIFEST_NAME} at or above {_where(sink, path)}; give a source's output folder, "
        "its manifest.json or one of its outputs"
    )


def _flat_manifest(sink: Sink, output: str) -> str | None:
    """In a flat layout (``explore/hero-manifest.json`` beside ``explore/hero-0.png``), the
    manifest in the output's own folder that lists it."""
    folder = posixpath.dirname(output)
    for name in sink.list(folder):
        if posixpath.dirname(name) != folder or not name.endswith(MANIFEST_NAME):
            continue
        try:
            manifest = load_manifest(sink.read(name), sink.location(name))
        except ReviewError:
            continue
        if any(o.path == output for o in manifest.written()):
            return name
    return None


# --------------------------------------------------------------------------- no config


def _local_target(target: Path) -> ReviewTarget:
    """An ad hoc folder sink around the manifest a local TARGET names."""
    from daemon.sinks.folder import FolderSink

    manifest_file, named = _local_manifest(target)
    manifest = load_manifest(manifest_file.read_bytes(), str(manifest_file))
    root = _folder_root(manifest_file, manifest)
    manifest_path = manifest_file.relative_to(root).as_posix()
    output_path = named.relative_to(root).as_posix() if named is not None else None
    return ReviewTarget(FolderSink("review", root), manifest_path, output_path, None)


def _local_manifest(target: Path) -> tuple[Path, Path | None]:
    """(the manifest file, the output file TARGET names or None) for a local TARGET."""
    if not target.exists():
        raise ReviewError(f"{target}: no such manifest or folder (nor an output of one)")
    target = target.resolve()
    if target.is_file() and target.name.endswith(MANIFEST_NAME):
        return target, None
    if target.is_dir():
        found = _manifests_in(target)
        if len(found) == 1:
            return found[0], None
        if found:
            names = ", ".join(p.name for p in found)
            raise ReviewError(f"{target} holds several manifests ({names}): name one of them")
    tries = [target]
    tries += [a.parent / target.relative_to(a) for a in target.parents if a.name == "approved"]
    for candidate in tries:
        for folder in candidate.parents:
            if (folder / MANIFEST_NAME).is_file():
                return folder / MANIFEST_NAME, candidate if candidate.is_file() else None
        for manifest_file in _manifests_in(candidate.parent):
            try:
                manifest = load_manifest(manifest_file.read_bytes(), str(manifest_file))
            except ReviewError:
                continue
            if any(
                o.path and candidate.as_posix().endswith("/" + o.path) for o in manifest.written()
            ):
                return manifest_file, candidate
    raise ReviewError(
        f"no {MANIFEST_NAME} at or above {target}; give a source's output folder, its "
        "manifest.json or one of its outputs"
    )


def _manifests_in(folder: Path) -> list[Path]:
    if (folder / MANIFEST_NAME).is_file():
        return [folder / MANIFEST_NAME]
    return sorted(p for p in folder.glob("*" + MANIFEST_NAME) if p.is_file())


def _folder_root(manifest_file: Path, manifest: Manifest) -> Path:
    """The sink root: the nearest ancestor from which the manifest's own paths resolve."""
    paths = [str(o.path) for o in manifest.written()]
    if manifest.sheet:
        paths.append(manifest.sheet)
    folder = manifest_file.parent
    for root in [folder, *folder.parents]:
        if any((root / p).is_file() for p in paths) or (root / "index.json").is_file():
            return root
    return folder
