"""Review commands: ``darkroom inspect`` and ``darkroom review approve|reject``.

    darkroom inspect FILE
        print the Darkroom provenance embedded in FILE (PNG, JPEG, WebP, GIF, or an mp4's
        container metadata) as JSON, its IPTC ``digital_source_type`` included;
        exit 1 with "no Darkroom provenance in FILE" when there is none.

    darkroom review approve|reject|star|unstar|note TARGET VARIANT... [--note TEXT] [--by NAME]
                                                                      [--config F]
        TARGET is a manifest.json or the folder holding it. VARIANT is an output path as written
        in the manifest, its file name (with or without extension), or a short name such as
        ``explore-0`` (``explore-sd-turbo-0`` when a compare step makes that name ambiguous).

    darkroom serve [--config F] [--host H] [--port N]
        the review server (:mod:`daemon.review.server`) over the configured sinks, without the
        daemon; ``review.enabled: true`` runs the same server inside ``darkroom run``.

How the sink is found. Without ``--config`` (and no darkroom.yaml here) the sink is a folder
sink whose root is the nearest folder above TARGET from which the manifest's output paths
resolve (an ``index.json`` there also marks it). With a config, TARGET is either
``SINK:path/in/sink/manifest.json`` (any sink type, S3 included) or a local path inside one of
the configured folder sinks, and the decision is also recorded in the ledger, where the
daemon announces it (webhooks, ``on: approved`` rules) - at once if it runs, else when it
starts.

What it does: see :mod:`daemon.review.decisions` - the manifest's ``decisions``, the approval
copy in ``approved/<output path>``, and the republished page and index.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.outputs.manifest import Manifest
from daemon.review.decisions import Action, ReviewError, decide, load_manifest
from daemon.sinks.base import Sink

if TYPE_CHECKING:
    from daemon.config.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the review subcommands to the ``darkroom`` parser."""
    p = sub.add_parser("inspect", help="print the provenance embedded in an output image or video")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_inspect)

    review = sub.add_parser("review", help="approve, reject, star or note variants of a source")
    actions = review.add_subparsers(dest="action", required=True)
    for action, text in (
        (Action.APPROVE, "approve variants (copies them to approved/)"),
        (Action.REJECT, "reject variants (removes an earlier approval copy)"),
        (Action.STAR, "star variants (a shortlist mark, kept apart from approval)"),
        (Action.UNSTAR, "remove the star from variants"),
        (Action.NOTE, "attach a note to variants (--note TEXT)"),
        (Action.REFINE, "run another round on variants, the prompt extended by --note TEXT"),
    ):
        a = actions.add_parser(action.value, help=text)
        a.add_argument("target", metavar="MANIFEST_OR_SOURCE_DIR")
        a.add_argument("variants", nargs="+", metavar="VARIANT")
        a.add_argument("--note", default=None, help="a note stored with the decision")
        a.add_argument("--by", default=None, help="who decided (default: the login name)")
        a.add_argument("--config", "-c", help="config file: find the sink among its sinks")
        a.set_defaults(func=cmd_review, decision=action)

    serve = sub.add_parser("serve", help="serve the review pages with approve/reject buttons")
    serve.add_argument("--config", "-c")
    serve.add_argument("--host", default=None, help="override review.host")
    serve.add_argument("--port", type=int, default=None, help="override review.port")
    serve.set_defaults(func=cmd_serve)


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


def _open_sink(args: argparse.Namespace) -> tuple[Sink, str, Settings | None]:
    """(sink, manifest path inside it, the settings that named the sink) for TARGET."""
    from daemon.cli.main import _config_path
    from daemon.sinks.folder import FolderSink

    config = _config_path(args.config)
    if config is not None:
        from daemon.config.settings import load_settings
        from daemon.service.app import build_sinks

        settings = load_settings(config)
        sinks = build_sinks(settings)
        name, sep, rest = args.target.partition(":")
        if sep and name in sinks:
            return sinks[name], rest, settings
        target = _manifest_file(Path(args.target)).resolve()
        for sink in sinks.values():
            root = sink.local_root()
            if root is not None and target.is_relative_to(root.resolve()):
                return sink, target.relative_to(root.resolve()).as_posix(), settings
        if args.config:
            raise ReviewError(
                f"{args.target} is not inside a configured folder sink; use "
                f"SINK:path/to/manifest.json (sinks: {', '.join(sorted(sinks)) or 'none'})"
            )
    manifest_file = _manifest_file(Path(args.target))
    manifest = load_manifest(manifest_file.read_bytes(), str(manifest_file))
    root = _folder_root(manifest_file, manifest)
    path = manifest_file.resolve().relative_to(root).as_posix()
    return FolderSink("review", root), path, None


def cmd_review(args: argparse.Namespace) -> int:
    action: Action = args.decision
    try:
        sink, manifest_path, settings = _open_sink(args)
        done = decide(sink, manifest_path, args.variants, action, note=args.note, by=args.by)
    except ReviewError as exc:
        print(f"darkroom: {exc}", file=sys.stderr)
        return 1
    from daemon.outputs.paths import page_path_for

    if settings is not None:
        # The daemon announces it from the ledger (webhooks, on: approved rules).
        from daemon.review.log import DecisionLog

        settings.state_dir.mkdir(parents=True, exist_ok=True)
        log = DecisionLog(settings.state_dir / "ledger.sqlite")
        try:
            log.record(sink.name, done)
        finally:
            log.close()
    for d in done:
        tail = f" -> {sink.location(d.approved_copy)}" if d.approved_copy else ""
        print(f"{d.action.event.removeprefix('variant.')}: {d.output_path}{tail}")
    print(f"page: {sink.location(page_path_for(manifest_path))}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from daemon.cli.main import _settings
    from daemon.review.log import DecisionLog
    from daemon.review.server import ReviewServer
    from daemon.service.app import build_sinks

    settings = _settings(args)
    config = settings.review
    changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if changes:
        from daemon.config.settings import ReviewConfig

        config = ReviewConfig.model_validate({**config.model_dump(), **changes})
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    log = DecisionLog(settings.state_dir / "ledger.sqlite")
    server = ReviewServer(build_sinks(settings), config, on_decided=log.record)
    server.start()
    print(f"review server: {server.url}  (Ctrl-C to stop)", flush=True)
    stop = threading.Event()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        log.close()
    return 0
