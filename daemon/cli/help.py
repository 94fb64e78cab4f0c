"""What ``darkroom COMMAND --help`` says: a description and an example for every subcommand.

Kept here, not beside each ``add_parser`` call, so each command module stays about what the
command does; :func:`describe` fills them in once every module has registered its commands.
A text a module set itself wins."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "describe", "subcommands"]

CONFIG = "(--config PATH, else $DARKROOM_CONFIG, else ./darkroom.yaml)"

# "command [subcommand]" -> (description, example lines)
HELP: dict[str, tuple[str, str]] = {
    "run": (
        "Run the daemon in the foreground: watch the sources, match files against the rules, "
        f"run the models and write outputs, until SIGTERM or Ctrl-C {CONFIG}. SIGHUP reloads "
        "the config and rules. Logs go to stdout (JSON when it is not a terminal).",
        "darkroom run --config /etc/darkroom/darkroom.yaml",
    ),
    "check": (
        "Validate the config and every rule file and report every problem at once, each with "
        "file:line:col and a hint; exit 1 if there is any. Offline, it also checks that the "
        "weights (or hosted API keys) of every profile the rules use are here, pick ranges, "
        "mask and watermark files, webhook URL schemes and folders. Warnings do not change "
        "the exit status. --json prints them as a list of {file, line, column, key, message, "
        "hint, severity}; --live also runs the checks of 'doctor'.",
        "darkroom check --config darkroom.yaml\ndarkroom check --json | jq -r '.[].text'",
    ),
    "doctor": (
        "Check the environment the config needs (GPU and torch build, disk space, ffmpeg and "
        "Ghostscript, AWS credentials, buckets readable and writable, SQS queues and their "
        "bucket notifications, webhook endpoints): one line each with ok, warn or fail and a "
        "fix. Exit 0 when all are ok, 1 on a warning, 2 on a failure. --json for scripts; "
        "--ping-webhooks POSTs a signed doctor.ping event instead of a HEAD request.",
        "darkroom doctor --config /etc/darkroom/darkroom.yaml\n"
        "darkroom doctor --json | jq -r '.[] | select(.status != \"ok\") | .fix'",
    ),
    "models": (
        "List the model profiles the rules can name, grouped by role, with where their weights "
        "are (or whether a hosted model's API key is set). --json for scripts.",
        "darkroom models\ndarkroom models --all --json | jq '.[].profile'",
    ),
    "models pull": (
        "Download the weights of profiles into the Hugging Face cache the daemon loads from "
        "(HF_HOME), before their first job: only the files the profile's pipeline reads (its "
        "components, the fp16 files where the profile uses them), with the total size first "
        "and progress. The one command that goes online: it refuses while HF_HUB_OFFLINE=1. "
        "Gated models (kontext, flux-fill, svd) need HF_TOKEN and their licence accepted.",
        "darkroom models pull sd-turbo sdxl-turbo\n"
        "HF_TOKEN=hf_... darkroom models pull kontext\n"
        "darkroom models pull --all-used --config /etc/darkroom/darkroom.yaml",
    ),
    "process": (
        "Process files once, through the same pipeline as the daemon, and exit: 0 when every "
        "file is done, 1 otherwise. Results (one line per file and rule) go to stdout; progress "
        "and logs go to stderr (a bar on a terminal, plain lines elsewhere).",
        "darkroom process shoots/a.jpg shoots/b.png\n"
        "darkroom process --rule product-lifestyle hero.jpg 2>progress.log",
    ),
    "status": (
        "Show the queue of a running or stopped daemon from its ledger: jobs in every state, "
        "held and failed jobs with their reasons, quarantined inputs, spend.",
        "darkroom status --config /etc/darkroom/darkroom.yaml",
    ),
    "jobs": ("Inspect jobs in the ledger.", "darkroom jobs ls --state failed"),
    "jobs ls": (
        "List jobs, newest first: id, state, rule/step, attempts, last update, source:key and "
        "the reason of a failed or held one. When more jobs match than --limit (50), stderr "
        "says 'showing N of M (use --limit)'. --json prints a list of objects with whole ids.",
        "darkroom jobs ls --state failed --rule product-lifestyle\n"
        "darkroom jobs ls --json --limit 1000 | jq -r '.[] | select(.state==\"held\") | .id'",
    ),
    "retry": (
        "Run failed (or held) jobs again with a fresh attempt budget; the running daemon picks "
        "them up within a second. Jobs are named by id or a unique prefix of it.",
        "darkroom retry 3f2a9c1e07b4\ndarkroom retry --failed",
    ),
    "requeue": (
        "Re-admit quarantined inputs: move them back to where they came from and process them "
        "again (after fixing what was wrong with them).",
        "darkroom requeue shoots/a.jpg",
    ),
    "cancel": (
        "End queued, waiting or held jobs; running and finished ones are left alone.",
        "darkroom cancel 3f2a9c1e07b4",
    ),
    "inspect": (
        "Print the provenance Darkroom embedded in an output file (source, rule, model, seed, "
        "prompt) as JSON.",
        "darkroom inspect out/product-lifestyle/a/explore-sd-turbo-0.png | jq .seed",
    ),
    "review": (
        "Approve or reject variants of a source from its manifest or output folder.",
        "darkroom review approve out/product-lifestyle/a 0 2 --note 'for the site'",
    ),
    "review approve": (
        "Approve variants: copy them to approved/ and record the decision in the manifest.",
        "darkroom review approve out/product-lifestyle/a/manifest.json 0 2 --by anna",
    ),
    "review reject": (
        "Reject variants: record the decision and remove an earlier approval copy.",
        "darkroom review reject out/product-lifestyle/a 1 --note 'wrong colour'",
    ),
    "review star": (
        "Star variants: a shortlist mark shown on the page, kept apart from approval.",
        "darkroom review star out/product-lifestyle/a explore-0",
    ),
    "review unstar": (
        "Remove the star from variants.",
        "darkroom review unstar out/product-lifestyle/a explore-0",
    ),
    "review note": (
        "Attach a note to variants (shown on the page, sent with the webhook).",
        "darkroom review note out/product-lifestyle/a explore-1 --note 'try warmer light'",
    ),
    "review refine": (
        "Start another round on a variant: the rule runs again on it (or the rule its refine: "
        "names), its prompt extended by the note. Needs the daemon (it runs the round).",
        "darkroom review refine out/product-lifestyle/a explore-1 --note 'warmer light'",
    ),
    "serve": (
        "Serve the sinks' review pages over HTTP with approve, reject, star and note buttons "
        f"{CONFIG}. Loopback unless review.allow_remote and review.token are set; decisions "
        "go into the manifests and the ledger, where the daemon announces them.",
        "darkroom serve --config darkroom.yaml --port 8765",
    ),
    "match": (
        "Explain which rules take a file and why the others don't, with the rendered prompts, "
        "seeds and output names, without loading a model. Exit 0 if a rule matches, 1 if none. "
        "--json prints the same report as one object.",
        "darkroom match drop/shoots/a.jpg\n"
        "darkroom match --json drop/shoots/a.jpg | jq '.rules[] | select(.matches) | .rule'",
    ),
    "rules": ("Rule-file tooling.", "darkroom rules schema -o rule.schema.json"),
    "rules schema": (
        "Print the JSON schema of rule files, for editors that validate YAML as you type.",
        "darkroom rules schema -o .vscode/darkroom-rule.schema.json",
    ),
    "reprocess": (
        "Run the current version of a rule again on inputs already seen (works beside a "
        "running daemon, which picks the new jobs up).",
        "darkroom reprocess --rule product-lifestyle --since 2025-05-01",
    ),
}


def subcommands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every (``"jobs ls"``, parser) below ``parser``, depth first."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                path = f"{prefix} {name}".strip()
                found.append((path, child))
                found += subcommands(child, path)
    return found


def describe(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand in :data:`HELP` its description and example."""
    for path, child in subcommands(parser):
        if path not in HELP:
            continue
        description, example = HELP[path]
        child.description = child.description or description
        if not child.epilog:
            lines = "\n".join(f"  {line}" for line in example.splitlines())
            child.epilog = f"example:\n{lines}"
        # Keep the example's line breaks; argparse still wraps the description.
        child.formatter_class = _DescriptionWrapsExampleKept


class _DescriptionWrapsExampleKept(argparse.HelpFormatter):
    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)
