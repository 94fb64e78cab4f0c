"""The ``compile`` option: ``torch.compile`` of a pipeline's denoiser, falling back to eager.

``compile`` (default off): ``true`` compiles the denoiser (``pipe.transformer`` or ``pipe.unet``)
after loading; a string picks torch.compile's mode (``default``, ``reduce-overhead``,
``max-autotune``, ``max-autotune-no-cudagraphs``). Compiling happens lazily, on the first call,
and takes a while (15-45 s for the tiny Kontext model on a 2-core CPU, 16 s on an H100; more for
real models): worth it for a worker that runs many jobs on one model, not for a single image. If
torch.compile is unavailable or fails — when wrapping or on a call — a warning is logged and the
denoiser runs uncompiled.
"""

from __future__ import annotations

import logging
from typing import Any

from backends.base import InvalidRequest, ModelSpec

log = logging.getLogger("darkroom.backends")

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DENOISERS = ("transformer", "unet")


def compile_mode(spec: ModelSpec) -> str | None:
    """The spec's ``compile`` option as a torch.compile mode, None when off."""
    value = spec.option("compile", False)
    if value is False or value is None:
        return None
    if value is True:
        return "default"
    if isinstance(value, str) and value in COMPILE_MODES:
        return value
    raise InvalidRequest(
        f"option compile {value!r} must be true, false or one of {', '.join(COMPILE_MODES)}"
    )


def compile_denoiser(pipe: Any, spec: ModelSpec) -> bool:
    """Compile ``pipe``'s denoiser in place when the spec asks; True if it is now compiled.

    ``module.compile()`` compiles lazily, at the first call. Failing to wrap here, or a
    compiler error on a call later, logs a warning and the module runs uncompiled from then on.
    """
    mode = compile_mode(spec)
    if mode is None:
        return False
    name = next((n for n in DENOISERS if getattr(pipe, n, None) is not None), None)
    if name is None:
        log.warning(
            "option compile: %s has no transformer or unet to compile; running uncompiled",
            type(pipe).__name__,
        )
        return False
    module = getattr(pipe, name)
    try:
        import torch

        compiled = torch.compile(module._call_impl, mode=None if mode == "default" else mode)
    except Exception as exc:  # noqa: BLE001 - a compile failure must not fail the load
        log.warning(
            "option compile: torch.compile of %s.%s failed; running uncompiled: %s: %s",
            spec.model,
            name,
            type(exc).__name__,
            exc,
        )
        return False
    # What nn.Module.compile() does, with a fallback around the compiled call.
    module._compiled_call_impl = _CompiledCall(module, compiled, f"{spec.model} {name}")
    return True


class _CompiledCall:
    """Call the compiled module; on a compiler error, warn and run it uncompiled for good.

    Only errors raised by torch's compiler (``torch._dynamo``, ``torch._inductor``) fall back:
    an error of the model itself would fail uncompiled too, and must not switch compiling off.
    """

    def __init__(self, module: Any, compiled: Any, what: str) -> None:
        self.module, self.compiled, self.what = module, compiled, what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.compiled(*args, **kwargs)
        except Exception as exc:
            if not _is_compiler_error(exc):
                raise
            log.warning(
                "option compile: compiling %s failed; running uncompiled: %s: %s",
                self.what,
                type(exc).__name__,
                exc,
            )
            self.module._compiled_call_impl = None
            return self.module(*args, **kwargs)


def _is_compiler_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("torch._dynamo", "torch._inductor"))
