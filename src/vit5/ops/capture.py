"""Is this forward running eagerly, or being captured as a graph (compile, export, FX)?

Graph capture changes what a forward may do: data-dependent Python checks (``bool(x.all())``),
caches keyed on data pointers and in-place tricks either break the trace or are baked into it.
Every module asks :func:`capture_mode` (or :func:`is_capturing`) instead of testing the capture
systems one by one; note that ``torch.compiler.is_compiling()`` is False under
``torch.fx.symbolic_trace``, and that ``torch.onnx.export`` (dynamo) captures through
``torch.export``.

=========  =====================================================================================
mode       when
=========  =====================================================================================
"fx"       ``torch.fx.symbolic_trace`` (timm/torchvision feature extraction): inputs are Proxies
"export"   ``torch.export.export`` / ``torch.onnx.export`` (dynamo exporter)
"compile"  ``torch.compile`` (dynamo tracing)
"eager"    a plain call
=========  =====================================================================================
"""

from __future__ import annotations

import torch
import torch.fx

__all__ = ["capture_mode", "is_capturing"]


def _fx_tracing() -> bool:
    # ``is_fx_tracing`` is also True under torch.export (and warns); this one means FX only.
    tracer = torch.fx._symbolic_trace
    checker = getattr(tracer, "is_fx_symbolic_tracing", None)
    if checker is not None:
        return bool(checker())
    return bool(getattr(getattr(tracer, "_is_fx_tracing_tls", None), "flag", False))


def _exporting() -> bool:
    checker = getattr(torch.compiler, "is_exporting", None)
    return bool(checker()) if checker is not None else False


def capture_mode() -> str:
    """``"fx"``, ``"export"``, ``"compile"`` or ``"eager"`` (see the module docstring)."""
    if _fx_tracing():
        return "fx"
    if _exporting():
        return "export"
    if torch.compiler.is_compiling():
        return "compile"
    return "eager"


def is_capturing() -> bool:
    """True under FX tracing, export or ``torch.compile``: skip data-dependent checks and caches."""
    return capture_mode() != "eager"
