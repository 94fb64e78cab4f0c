"""Live: external programs the rules need — ffmpeg for mp4 video, Ghostscript for EPS/PDF.

ffmpeg: ``imageio-ffmpeg``'s bundled binary, else one on PATH. Ghostscript (``gs``) is needed
only when a rule takes EPS/PDF inputs (its absence would hold their jobs). A tool no rule
needs is reported ok, with that said.
"""

from __future__ import annotations

import shutil

from daemon.diagnose.findings import Finding, fail, ok
from daemon.rules.match import RuleSet

VIDEO_TASKS = ("svd", "ltx-i2v", "wan-i2v")
POSTSCRIPT = (".eps", ".pdf", ".ps")


def ffmpeg_path() -> str | None:
    try:
        import imageio_ffmpeg

        found: str = imageio_ffmpeg.get_ffmpeg_exe()
        return found
    except Exception:  # noqa: BLE001 - not installed, or its binary missing
        return shutil.which("ffmpeg")


def check_tools(rules: RuleSet | None, tasks: dict[str, str]) -> list[Finding]:
    """``tasks``: each profile's task, by profile name (to tell which steps make video)."""
    steps = [step for item in (rules.rules if rules else []) for step in item.rule.steps]
    needs_mp4 = any(
        step.video_format == "mp4" and any(tasks.get(p) in VIDEO_TASKS for p in step.profiles)
        for step in steps
    )
    needs_gs = any(
        pattern.lower().endswith(POSTSCRIPT)
        for item in (rules.rules if rules else [])
        for pattern in item.rule.match.include
    )
    findings = []
    ffmpeg = ffmpeg_path()
    if ffmpeg:
        findings.append(ok("tool ffmpeg", ffmpeg))
    elif needs_mp4:
        findings.append(
            fail(
                "tool ffmpeg",
                "not found, and a rule makes mp4 video",
                "pip install imageio-ffmpeg (bundles ffmpeg) or apt install ffmpeg;"
                " or set video_format: webp",
            )
        )
    else:
        findings.append(ok("tool ffmpeg", "not found; no rule makes mp4 video"))
    gs = shutil.which("gs")
    if gs:
        findings.append(ok("tool gs", gs))
    elif needs_gs:
        findings.append(
            fail(
                "tool gs",
                "Ghostscript not found, and a rule takes EPS/PDF inputs (they would be held)",
                "apt install ghostscript",
            )
        )
    else:
        findings.append(ok("tool gs", "not found; no rule takes EPS/PDF inputs"))
    return findings
