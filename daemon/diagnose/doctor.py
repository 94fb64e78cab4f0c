"""``darkroom doctor``: every live check, in the order a user would fix things.

Each family returns :class:`~daemon.diagnose.findings.Finding` lines; one that raises
something unexpected becomes a ``fail`` line naming it, so one broken check never hides the
others.
"""

from __future__ import annotations

from collections.abc import Callable

from daemon.config.profiles import Profile
from daemon.config.settings import Settings
from daemon.diagnose.findings import Finding, fail
from daemon.rules.match import RuleSet


def live_findings(
    settings: Settings,
    rules: RuleSet | None,
    profiles: dict[str, Profile] | None,
    *,
    ping_webhooks: bool = False,
) -> list[Finding]:
    from daemon.diagnose import disk, gpu, s3, sqs, tools, webhooks

    tasks = {name: p.task for name, p in (profiles or {}).items()}
    families: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("gpu", lambda: [gpu.check_gpu(settings)]),
        ("disk", lambda: disk.check_disks(settings)),
        ("tools", lambda: tools.check_tools(rules, tasks)),
        ("s3", lambda: s3.check_s3(settings)),
        ("sqs", lambda: sqs.check_sqs(settings)),
        ("webhooks", lambda: webhooks.check_webhooks(settings, ping=ping_webhooks)),
    ]
    findings: list[Finding] = []
    for family, run in families:
        try:
            findings += run()
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the rest
            findings.append(
                fail(family, f"the check itself failed: {type(exc).__name__}: {exc}", None)
            )
    return findings
