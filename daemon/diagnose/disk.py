"""Live: free space where the daemon writes: the state folder (ledger) and each folder sink.

Below ``FAIL_BYTES`` writes are about to fail (the ledger needs room for its journal, outputs
for their temp files); below ``WARN_BYTES`` a busy day can fill it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from daemon.config.settings import FolderSinkConfig, Settings
from daemon.diagnose.findings import Finding, fail, ok, warn

GIB = 1024**3
FAIL_BYTES = 1 * GIB
WARN_BYTES = 10 * GIB


def check_disks(settings: Settings) -> list[Finding]:
    places = [("disk state_dir", settings.state_dir)]
    places += [
        (f"disk sink {name}", sink.path)
        for name, sink in settings.sinks.items()
        if isinstance(sink, FolderSinkConfig)
    ]
    findings = []
    for check, path in places:
        existing = _existing(path)
        usage = shutil.disk_usage(existing)
        free = f"{usage.free / GIB:.1f} GiB free of {usage.total / GIB:.0f} GiB at {existing}"
        fix = f"free space on the filesystem of {existing}, or move {path} to a bigger one"
        if usage.free < FAIL_BYTES:
            findings.append(fail(check, free, fix))
        elif usage.free < WARN_BYTES:
            findings.append(warn(check, free, fix))
        else:
            findings.append(ok(check, free))
    return findings


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
