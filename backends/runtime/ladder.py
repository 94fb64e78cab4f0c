"""The out-of-memory ladder for one loaded backend: run; on out-of-memory, re-place and run again.

The pool halves batches first (its job: it can split a request); what is left is this ladder,
:func:`backends.runtime.placement.oom_ladder`'s rungs (model offload, then sequential offload),
each applied to the *same* loaded pipeline with :meth:`PipelineBackend.replace` — the copy that
ran out of memory is moved off the device before the next placement, never loaded twice.
"""

from __future__ import annotations

import logging
from typing import Any

from backends.base import DeviceError, Request, Result
from backends.runtime.placement import oom_ladder

log = logging.getLogger("darkroom.backends")


def run_with_offload_ladder(backend: Any, request: Request) -> Result:
    """``backend.run(request)``, walking the offload ladder on out-of-memory errors.

    ``backend`` is a loaded (or loadable) :class:`~backends.pipeline.PipelineBackend`; on
    return its ``spec`` is the placement that worked (the caller's cache should re-key it).
    A sticky device error, or out-of-memory on the last rung, is raised as is.
    """
    rungs = oom_ladder(backend.spec)
    while True:
        try:
            result = backend.run(request)
        except DeviceError as exc:
            if not exc.out_of_memory or exc.sticky or not rungs:
                raise
            nxt = rungs.pop(0)
            log.warning(
                "out of memory running %s; retrying with cpu_offload=%s: %s",
                backend.spec.model,
                nxt.option("cpu_offload"),
                exc,
            )
            backend.replace(nxt)
            continue
        return result
