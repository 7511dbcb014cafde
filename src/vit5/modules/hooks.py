"""Guards of the in-place inference paths: user hooks that could observe a module's tensors, and
tensors sharing memory."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as module_lib


def has_hooks(module: nn.Module) -> bool:
    """True if ``module`` or any submodule has forward hooks or pre-hooks, or global ones are set.

    Fast paths that skip a submodule call, or overwrite a submodule's output in place, take the
    plain path when this is True: a hook must run and must see the tensors the module returned.
    """
    if getattr(module_lib, "_global_forward_hooks", None) or getattr(
        module_lib, "_global_forward_pre_hooks", None
    ):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def in_place_allowed(module: nn.Module) -> bool:
    """Whether an inference fast path may overwrite tensors inside ``module`` (same bits, fewer
    buffers): no autograd (nothing is saved for backward), not under ``torch.compile`` (the
    compiler plans the buffers itself and cannot trace storages), and no hooks (a hook must see the
    tensors the module returned)."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling() and not has_hooks(module)


def shares_storage(tensor: torch.Tensor, *others: torch.Tensor) -> bool:
    """True if ``tensor`` lives in the same storage as any of ``others`` (writing it may change them).

    Not traceable by ``torch.compile``: callers ask only where :func:`in_place_allowed` holds.
    """
    storage = tensor.untyped_storage().data_ptr()
    return any(other.untyped_storage().data_ptr() == storage for other in others)
