"""Review commands: ``darkroom inspect`` and ``darkroom review approve|reject``.

    darkroom inspect FILE
        print the Darkroom provenance embedded in FILE (PNG, JPEG, WebP, GIF, or an mp4's
        container metadata) as JSON, its IPTC ``digital_source_type`` included;
        exit 1 with "no Darkroom provenance in FILE" when there is none.

    darkroom review approve|reject|star|unstar|note|refine TARGET [VARIANT...] [--note TEXT]
                                                             [--by NAME] [--config F]
        TARGET names the source (its output folder or manifest.json) or one of its outputs: a
        local path, an ``s3://bucket/key`` URL or ``SINK:path`` (see
        :mod:`daemon.cli.review_target`). VARIANT is an output path as written in the manifest,
        its file name (with or without extension), or a short name such as ``explore-0``
        (``explore-sd-turbo-0`` when a compare step makes that name ambiguous); none when
        TARGET is the output itself.

    darkroom serve [--config F] [--host H] [--port N]
        the review server (:mod:`daemon.review.server`) over the configured sinks, without the
        daemon; ``review.enabled: true`` runs the same server inside ``darkroom run``.

How the sink is found: :mod:`daemon.cli.review_target`. With a config (``--config``, or
darkroom.yaml here) the decision is also recorded in the ledger, where the daemon announces it
(webhooks, ``on: approved`` rules) - at once if it runs, else when it starts.

What it does: see :mod:`daemon.review.decisions` - the manifest's ``decisions``, the approval
copy in ``approved/<output path>``, and the republished page and index.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

from daemon.cli.review_target import ReviewTarget, resolve_target
from daemon.review.decisions import Action, ReviewError, decide, load_manifest


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
        a.add_argument(
            "target",
            metavar="TARGET",
            help="the source's output folder, manifest.json or one of its outputs: a local path,"
            " an s3://bucket/key URL or SINK:path (the last two with --config)",
        )
        a.add_argument(
            "variants",
            nargs="*",
            metavar="VARIANT",
            help="short name, file name or path of a variant (none: TARGET is the output)",
        )
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


def cmd_review(args: argparse.Namespace) -> int:
    from daemon.cli.main import _config_path

    action: Action = args.decision
    try:
        target = resolve_target(
            args.target, _config_path(args.config), explicit_config=bool(args.config)
        )
        sink, manifest_path, settings = target.sink, target.manifest_path, target.settings
        variants = args.variants or _named_output(target)
        done = decide(sink, manifest_path, variants, action, note=args.note, by=args.by)
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


def _named_output(target: ReviewTarget) -> list[str]:
    """The variant TARGET itself names (an output's path or URL), when no VARIANT is given."""
    from daemon.outputs.page import short_names

    where = target.sink.location(target.manifest_path)
    manifest = load_manifest(target.sink.read(target.manifest_path), where)
    outputs = {str(o.path) for o in manifest.written()}
    if target.output_path in outputs:
        return [target.output_path]
    listing = ", ".join(short_names(manifest).values()) or "none"
    raise ReviewError(
        f"name the variants to decide on after the target (or give one output's own path or "
        f"URL as the target); variants of {where}: {listing}"
    )


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
