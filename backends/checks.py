"""Request checks every backend makes, with one wording (no torch here).

Backends call ``check_request`` first in ``validate`` and then add what is particular to
their task; the messages say what to change in the rule.
"""

from __future__ import annotations

import numbers

from backends.base import InvalidRequest, Request

MAX_SEED = 2**64


def check_request(
    task: str,
    request: Request,
    *,
    size_multiple: int | None = None,
    per: str = "output",
    who: str | None = None,
) -> None:
    """At least one input and one seed, seeds in range, and (with ``size_multiple``) input
    sides that the model can take. ``per`` names what each seed makes ("output", "clip")."""
    if not request.images:
        raise InvalidRequest(f"{task} needs at least one input image")
    if not request.seeds:
        raise InvalidRequest(f"{task} needs at least one seed (one {per} per seed)")
    for seed in request.seeds:
        integer = isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
        if not integer or not 0 <= seed < MAX_SEED:
            raise InvalidRequest(f"seed {seed!r} must be an integer in [0, 2**64)")
    if size_multiple:
        check_sizes(who or task, request, size_multiple)


def check_sizes(who: str, request: Request, m: int) -> None:
    for index, image in enumerate(request.images):
        width, height = image.size
        if min(width, height) < m or width % m or height % m:
            raise InvalidRequest(
                f"input image {index} is {width}x{height}: {who} needs both sides to be multiples of {m}"
                f" (the caller sizes inputs: round the rule's size down to a multiple of {m}, e.g. "
                f"{max(m, width // m * m)}x{max(m, height // m * m)})"
            )
