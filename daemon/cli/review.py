"""Review commands: ``darkroom inspect`` and ``darkroom review approve|reject``.

    darkroom inspect FILE
        print the Darkroom provenance embedded in FILE (PNG, JPEG, WebP, GIF, or an mp4's
        container metadata) as JSON, its IPTC ``digital_source_type`` included;
        exit 1 with "no Darkroom provenance in FILE" when there is none.

    darkroom review approve|reject TARGET VARIANT... [--note TEXT] [--by NAME] [--config F]
        TARGET is a manifest.json or the folder holding it. VARIANT is an output path as written
        in the manifest, its file name (with or without extension), or a short name such as
        ``explore-0`` (``explore-sd-turbo-0`` when a compare step makes that name ambiguous).

How the sink is found. Without ``--config`` the sink is a folder sink whose root is the nearest
folder above TARGET from which the manifest's output paths resolve (an ``index.json`` there
also marks it). With ``--config``, TARGET is either ``SINK:path/in/sink/manifest.json`` (any
sink type, S3 included) or a local path inside one of the configured folder sinks.

What it does: the decision is recorded in the manifest's ``decisions`` (rewritten atomically
through the sink's ``write``), an approved variant is copied to ``approved/<rule>/<stem>/<file>``
in the same sink (a rejection removes such a copy), and the page and root index are republished.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import mimetypes
import posixpath
import sys
from pathlib import Path, PurePosixPath

from daemon.errors import DarkroomError
from daemon.outputs.manifest import (
    Decision,
    Manifest,
    ManifestError,
    manifest_bytes,
    parse_manifest,
)
from daemon.sinks.base import Sink


class ReviewError(DarkroomError):
    """A review command could not do what it was asked (the message says why)."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the review subcommands to the ``darkroom`` parser."""
    p = sub.add_parser("inspect", help="print the provenance embedded in an output image or video")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_inspect)

    review = sub.add_parser("review", help="approve or reject variants of a source")
    actions = review.add_subparsers(dest="action", required=True)
    for action, text in (
        ("approve", "approve variants (copies them to approved/)"),
        ("reject", "reject variants (removes an earlier approval copy)"),
    ):
        a = actions.add_parser(action, help=text)
        a.add_argument("target", metavar="MANIFEST_OR_SOURCE_DIR")
        a.add_argument("variants", nargs="+", metavar="VARIANT")
        a.add_argument("--note", default=None, help="a note stored with the decision")
        a.add_argument("--by", default=None, help="who decided (default: the login name)")
        a.add_argument("--config", "-c", help="config file: find the sink among its sinks")
        a.set_defaults(func=cmd_review, decision="approved" if action == "approve" else "rejected")


# --------------------------------------------------------------------------- inspect


def cmd_inspect(args: argparse.Namespace) -> int:
    from daemon.outputs import provenance

    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"darkroom: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 1
    info = provenance.read(data)
    if info is None:
        print(f"no Darkroom provenance in {path}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False))
    return 0


# --------------------------------------------------------------------------- review


def _manifest_file(target: Path) -> Path:
    if target.is_dir():
        candidate = target / "manifest.json"
        if candidate.is_file():
            return candidate
        found = sorted(target.glob("*manifest.json"))
        if len(found) == 1:
            return found[0]
        raise ReviewError(f"no manifest.json in {target}")
    if not target.is_file():
        raise ReviewError(f"{target}: no such manifest or folder")
    return target


def _folder_root(manifest_file: Path, manifest: Manifest) -> Path:
    """The sink root: the nearest ancestor from which the manifest's own paths resolve."""
    paths = [str(o.path) for o in manifest.written()]
    if manifest.sheet:
        paths.append(manifest.sheet)
    folder = manifest_file.resolve().parent
    for root in [folder, *folder.parents]:
        if any((root / p).is_file() for p in paths) or (root / "index.json").is_file():
            return root
    return folder


def _open_sink(args: argparse.Namespace) -> tuple[Sink, str]:
    """(sink, manifest path inside it) for the command's TARGET."""
    from daemon.sinks.folder import FolderSink

    if args.config:
        from daemon.cli.main import _config_path
        from daemon.config.settings import load_settings
        from daemon.service.app import build_sinks

        sinks = build_sinks(load_settings(_config_path(args.config)))
        name, sep, rest = args.target.partition(":")
        if sep and name in sinks:
            return sinks[name], rest
        target = _manifest_file(Path(args.target)).resolve()
        for sink in sinks.values():
            root = sink.local_root()
            if root is not None and target.is_relative_to(root.resolve()):
                return sink, target.relative_to(root.resolve()).as_posix()
        raise ReviewError(
            f"{args.target} is not inside a configured folder sink; use SINK:path/to/manifest.json "
            f"(sinks: {', '.join(sorted(sinks)) or 'none'})"
        )
    manifest_file = _manifest_file(Path(args.target))
    manifest = _load(manifest_file.read_bytes(), str(manifest_file))
    root = _folder_root(manifest_file, manifest)
    return FolderSink("review", root), manifest_file.resolve().relative_to(root).as_posix()


def _load(data: bytes, where: str) -> Manifest:
    try:
        return parse_manifest(data)
    except ManifestError as exc:
        raise ReviewError(f"{where} is {exc}") from None


def resolve_variant(manifest: Manifest, wanted: str, where: str) -> str:
    """The output path in ``manifest`` that ``wanted`` names (see the module docstring)."""
    from daemon.outputs.page import short_names

    names = short_names(manifest)
    matches = []
    for step, o in manifest.outputs():
        if not o.path or o.path not in names:
            continue
        name, model = o.step or step.name, o.model or step.model
        base = posixpath.basename(o.path)
        forms = {
            o.path,
            base,
            PurePosixPath(base).stem,
            names[o.path],
            f"{name}-{o.variant}",
            f"{name}-{model}-{o.variant}",
        }
        if wanted in forms and o.path not in matches:
            matches.append(o.path)
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(names.values()) or "none"
    if matches:
        raise ReviewError(f"variant {wanted!r} is ambiguous in {where}; variants: {listing}")
    raise ReviewError(f"no variant {wanted!r} in {where}; variants: {listing}")


def approved_path(manifest: Manifest, output_path: str, manifest_path: str) -> str:
    """``approved/<rule>/<stem>/<file>`` for an output of this manifest."""
    rule = manifest.rule.name or "unknown-rule"
    key = manifest.source.key or ""
    stem = PurePosixPath(key).stem or PurePosixPath(manifest_path).parent.name or "source"
    return posixpath.join("approved", rule, stem, posixpath.basename(output_path))


def decide(
    sink: Sink,
    manifest_path: str,
    variants: list[str],
    decision: str,
    *,
    note: str | None = None,
    by: str | None = None,
) -> list[tuple[str, str]]:
    """Record ``decision`` ("approved"/"rejected") for ``variants`` of the manifest at
    ``manifest_path`` in ``sink``; copy/remove approval copies; republish the page.

    Returns ``[(output path, approved copy path)]``. Raises ReviewError naming what was wrong;
    nothing is written unless every variant resolves.
    """
    from daemon.outputs.page import publish

    if decision not in ("approved", "rejected"):
        raise ValueError(f"decision must be 'approved' or 'rejected', not {decision!r}")
    where = sink.location(manifest_path)
    if not sink.exists(manifest_path):
        raise ReviewError(f"no manifest at {where}")
    manifest = _load(sink.read(manifest_path), where)
    paths = [resolve_variant(manifest, v, where) for v in variants]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    who = by or _login()
    decided: dict[str, Decision] = {}
    done = []
    for path in dict.fromkeys(paths):
        copy = approved_path(manifest, path, manifest_path)
        if decision == "approved":
            sink.write(copy, sink.read(path), _content_type(path))
        elif sink.exists(copy):
            sink.delete(copy)
        # A note is written only when given, as earlier daemons did.
        fields = {"note": note} if note else {}
        decided[path] = Decision(decision=decision, at=now, by=who, **fields)
        done.append((path, copy))
    manifest = manifest.with_decisions(decided)
    # A plain write, not write_manifest: replacing our own commit marker is intended here.
    sink.write(manifest_path, manifest_bytes(manifest), "application/json")
    publish(sink, manifest, manifest_path=manifest_path)
    return done


def _content_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def cmd_review(args: argparse.Namespace) -> int:
    try:
        sink, manifest_path = _open_sink(args)
        done = decide(sink, manifest_path, args.variants, args.decision, note=args.note, by=args.by)
    except ReviewError as exc:
        print(f"darkroom: {exc}", file=sys.stderr)
        return 1
    from daemon.outputs.paths import page_path_for

    for path, copy in done:
        tail = f" -> {sink.location(copy)}" if args.decision == "approved" else ""
        print(f"{args.decision}: {path}{tail}")
    print(f"page: {sink.location(page_path_for(manifest_path))}")
    return 0
