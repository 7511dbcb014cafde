"""Is this forward running eagerly, or being captured as a graph (compile, export, FX) or transformed?

Graph capture changes what a forward may do: data-dependent Python checks (``bool(x.all())``),
caches keyed on data pointers and in-place tricks either break the trace or are baked into it.
Every module asks :func:`capture_mode` (or :func:`is_capturing`) instead of testing the capture
systems one by one; note that ``torch.compiler.is_compiling()`` is False under
``torch.fx.symbolic_trace``, and that ``torch.onnx.export`` (dynamo) captures through
``torch.export``.

===========  ===================================================================================
mode         when
===========  ===================================================================================
"fx"         ``torch.fx.symbolic_trace`` (timm/torchvision feature extraction): inputs are Proxies
"export"     ``torch.export.export`` / ``torch.onnx.export`` (dynamo exporter), and TorchScript
             tracing (``torch.jit.trace``, ``torch.onnx.export(..., dynamo=False)``), which
             records the ops a call runs and bakes in tensors it computed outside the graph
"compile"    ``torch.compile`` (dynamo tracing)
"transform"  a ``torch.func`` transform (``grad``, ``vmap``, ``jvp``, ``jacrev``, ...) or a
             ``torch.autograd.forward_ad.dual_level`` is active: tensors may be wrappers without
             storage, or carry tangents that custom autograd functions do not propagate
"eager"      a plain call
===========  ===================================================================================

``torch.func`` transforms and forward-mode AD are not graph capture, but they need what capture
needs: plain PyTorch ops (functorch's wrapper tensors have no data pointer and cannot be read
by a kernel, and custom autograd functions have no forward-mode or vmap rule), so they count.
"""

from __future__ import annotations

import torch
import torch.fx
from torch.autograd import forward_ad

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
    return (bool(checker()) if checker is not None else False) or torch.jit.is_tracing()


def _transforming() -> bool:
    # No public API says whether a functorch transform or a forward-AD level is active; these
    # two private checks are the cheapest exact answers (one C call, one module attribute).
    return torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0


def capture_mode() -> str:
    """``"fx"``, ``"export"``, ``"compile"``, ``"transform"`` or ``"eager"`` (see the module docstring)."""
    if _fx_tracing():
        return "fx"
    if _exporting():
        return "export"
    if torch.compiler.is_compiling():
        return "compile"
    if _transforming():
        return "transform"
    return "eager"


def is_capturing() -> bool:
    """True for every mode but ``"eager"``: plain differentiable PyTorch ops only (no custom
    autograd functions, kernels, data-dependent checks, caches or in-place tricks)."""
    return capture_mode() != "eager"
