"""The one test of the inference fast paths, and the hook / storage guards behind it.

Several modules have inference fast paths that give the plain path's bits with fewer passes or
buffers: the block's in-place residual adds, Hyena's in-place gates and the MLP's in-place
activation. Every one of them asks :func:`fast_path_allowed` (and nothing else) whether it may
run:

* no autograd (nothing is saved for backward, so buffers may be overwritten);
* no graph capture (:func:`vit5.ops.capture.is_capturing`: ``torch.compile``, ``torch.export``,
  ``torch.onnx.export``, FX tracing), where the compiler plans buffers itself and storages, data
  pointers and in-place tricks cannot be traced;
* no forward hooks or pre-hooks on the module, its submodules or globally (a hook must run, and
  must see the tensors the module returned).

The fused CPU kernels (:mod:`vit5.ops.native`) are not in-place tricks and run with autograd
too; Hyena's fused gates and a block's fused residual adds step aside when :func:`has_hooks`
finds a hook in the module whose submodules they replace.

The hook test walks the module's subtree on every call (a few microseconds for a block: a plain
recursion over ``_modules``, no generator or name strings), so hooks added or submodules replaced
at any time are seen, and importing vit5 installs no process-wide hook.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as module_lib

from vit5.ops.capture import is_capturing

__all__ = ["fast_path_allowed", "has_hooks", "shares_storage"]


def _subtree_has_hooks(module: nn.Module) -> bool:
    # The hook dictionaries are private: PyTorch has no public query for registered hooks.
    if module._forward_hooks or module._forward_pre_hooks:
        return True
    for child in module._modules.values():  # noqa: SIM110 (a loop: no generator per module)
        if child is not None and _subtree_has_hooks(child):
            return True
    return False


def has_hooks(module: nn.Module) -> bool:
    """True if ``module`` or any submodule has forward hooks or pre-hooks, or global ones are set."""
    if module_lib._global_forward_hooks or module_lib._global_forward_pre_hooks:
        return True
    return _subtree_has_hooks(module)


def fast_path_allowed(module: nn.Module) -> bool:
    """Whether an inference fast path may run inside ``module``: no autograd, no graph capture,
    no hooks (see the module doc)."""
    return not torch.is_grad_enabled() and not is_capturing() and not has_hooks(module)


def shares_storage(tensor: torch.Tensor, *others: torch.Tensor) -> bool:
    """True if ``tensor`` lives in the same storage as any of ``others`` (writing it may change them).

    Not traceable: callers ask only where :func:`fast_path_allowed` holds.
    """
    storage = tensor.untyped_storage().data_ptr()
    return any(other.untyped_storage().data_ptr() == storage for other in others)
