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


def shares_storage(tensor: torch.Tensor, *others: torch.Tensor) -> bool:
    """True if ``tensor`` lives in the same storage as any of ``others`` (writing it may change them).

    Under ``torch.compile`` storages are not traceable: the answer is a conservative True, so the
    in-place paths that ask step aside (the compiler plans the buffers itself).
    """
    if torch.compiler.is_compiling():
        return True
    storage = tensor.untyped_storage().data_ptr()
    return any(other.untyped_storage().data_ptr() == storage for other in others)
