"""The one test of the inference fast paths, and the hook / storage guards behind it.

Several modules have inference fast paths that give the plain path's bits with fewer passes or
buffers: the block's in-place residual adds, Hyena's in-place gates and packed q/k/v view, the
MLP's in-place activation, attention's fused q/k norm + RoPE, RMSNorm's ``out=`` path. Every one of
them asks :func:`fast_path_allowed` (and nothing else) whether it may run:

* no autograd (nothing is saved for backward, so buffers may be overwritten);
* no graph capture (:func:`vit5.ops.capture.is_capturing`: ``torch.compile``, ``torch.export``,
  ``torch.onnx.export``, FX tracing), where the compiler plans buffers itself and storages, data
  pointers and in-place tricks cannot be traced;
* no forward hooks or pre-hooks on the module, its submodules or globally (a hook must run, and
  must see the tensors the module returned).

The fused CPU kernels (:mod:`vit5.ops.native`) are not in-place tricks and run with autograd
too; Hyena's fused gates and a block's fused residual adds step aside when :func:`has_hooks`
finds a hook in the module whose submodules they replace.

The hook test is cheap enough for every forward: the hook dictionaries of a module's subtree are
collected once and cached on the module; the cache is rebuilt when any submodule anywhere has
been registered since (a global counter, bumped by a torch module-registration hook). Hook
dictionaries are per-module objects that registering a hook fills in place, so a cached tuple of
them sees hooks added later.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as module_lib

from vit5.ops.capture import is_capturing

__all__ = ["fast_path_allowed", "has_hooks", "shares_storage"]

_registrations = [0]  # bumped whenever a submodule is registered anywhere (structure may change)
_CACHE_ATTR = "_vit5_hook_dicts"


def _count_registration(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
    _registrations[0] += 1


module_lib.register_module_module_registration_hook(_count_registration)


def _hook_dicts(module: nn.Module) -> tuple[dict, ...]:
    """The forward hook and pre-hook dictionaries of ``module`` and all its submodules (cached)."""
    cached = module.__dict__.get(_CACHE_ATTR)
    if cached is None or cached[0] != _registrations[0]:
        dicts = tuple(d for m in module.modules() for d in (m._forward_hooks, m._forward_pre_hooks))
        cached = (_registrations[0], dicts)
        module.__dict__[_CACHE_ATTR] = cached
    return cached[1]


def has_hooks(module: nn.Module) -> bool:
    """True if ``module`` or any submodule has forward hooks or pre-hooks, or global ones are set."""
    if module_lib._global_forward_hooks or module_lib._global_forward_pre_hooks:
        return True
    return any(_hook_dicts(module))


def fast_path_allowed(module: nn.Module) -> bool:
    """Whether an inference fast path may run inside ``module``: no autograd, no graph capture,
    no hooks (see the module doc). Cheap: no module-tree walk per call."""
    return not torch.is_grad_enabled() and not is_capturing() and not has_hooks(module)


def shares_storage(tensor: torch.Tensor, *others: torch.Tensor) -> bool:
    """True if ``tensor`` lives in the same storage as any of ``others`` (writing it may change them).

    Not traceable: callers ask only where :func:`fast_path_allowed` holds.
    """
    storage = tensor.untyped_storage().data_ptr()
    return any(other.untyped_storage().data_ptr() == storage for other in others)
