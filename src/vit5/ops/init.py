"""Weight initialisers with the reference library's two calling conventions.

* ``init_fn(tensor)`` — used by :class:`~vit5.modules.attention.ViT5Attention`'s ``init_fn_*``:
  :func:`trunc_normal_init`.
* ``init_method(dim) -> init_fn`` — used by :class:`~vit5.modules.mlp.MLP` and
  :class:`~vit5.modules.qkv_mixer.QKVSequenceMixer`'s ``init_method_*``, called with the layer's
  output width: :func:`trunc_normal_init_factory`, :func:`small_init`,
  :func:`partial_wang_init_fn_with_num_layers`.

All of them fill the tensor in place (and return it), drawing from the global torch RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from vit5._validation import positive_float, positive_int

InitFn = Callable[[torch.Tensor], torch.Tensor]
InitMethod = Callable[[int], InitFn]

__all__ = [
    "partial_wang_init_fn_with_num_layers",
    "small_init",
    "small_init_factory",
    "trunc_normal_init",
    "trunc_normal_init_factory",
    "wang_init",
]


def trunc_normal_init(std: float = 0.02) -> InitFn:
    """Truncated normal, mean 0, standard deviation ``std``, cut at the absolute values +-2."""
    positive_float("std", std)
    return partial(nn.init.trunc_normal_, mean=0.0, std=std, a=-2.0, b=2.0)


def trunc_normal_init_factory(std: float = 0.02) -> InitMethod:
    """``fn(dim) -> trunc_normal_init(std)``; ``dim`` is ignored."""
    positive_float("std", std)

    def init_method(dim: int) -> InitFn:
        return trunc_normal_init(std)

    return init_method


def small_init(dim: int) -> InitFn:
    """Normal, mean 0, std ``sqrt(2 / (5 * dim))`` (Nguyen & Salazar's "small init")."""
    positive_int("dim", dim)
    return partial(nn.init.normal_, mean=0.0, std=math.sqrt(2.0 / (5.0 * dim)))


def wang_init(dim: int, num_layers: int) -> InitFn:
    """Normal, mean 0, std ``2 / (num_layers * sqrt(dim))`` (GPT-NeoX's output-projection init)."""
    positive_int("dim", dim)
    positive_int("num_layers", num_layers)
    return partial(nn.init.normal_, mean=0.0, std=2.0 / (num_layers * math.sqrt(dim)))


def partial_wang_init_fn_with_num_layers(num_layers: int) -> InitMethod:
    """``fn(dim) -> wang_init(dim, num_layers)``; the reference configs pass the network depth."""
    positive_int("num_layers", num_layers)
    return partial(wang_init, num_layers=num_layers)


def small_init_factory() -> InitMethod:
    """Returns :func:`small_init` itself, so that a config can record it as ``LazyConfig(small_init_factory)()``."""
    return small_init
