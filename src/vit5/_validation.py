"""Argument checks shared by every layer. Each raises ValueError/TypeError naming the argument,
the value given and what was expected."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.fx


def positive_int(name: str, value: Any, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


def positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not value == value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return float(value)


def probability(name: str, value: Any, *, allow_one: bool = True) -> float:
    value = positive_float(name, value, allow_zero=True)
    if value > 1 or (value == 1 and not allow_one):
        raise ValueError(f"{name} must be in [0, 1{']' if allow_one else ')'}, got {value}")
    return value


def choice(name: str, value: Any, options: Iterable[Any]) -> Any:
    options = tuple(options)
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def int_or_per_axis(name: str, value: Any, data_dim: int) -> list[int]:
    """An int, or a sequence of ``data_dim`` ints, as a per-axis list of positive ints."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a list of {data_dim} ints, got {value!r}")
    if isinstance(value, int):
        return [positive_int(name, value)] * data_dim
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a list of {data_dim} ints, got {value!r}") from None
    if len(items) != data_dim:
        raise ValueError(f"{name} must have one entry per axis ({data_dim}), got {items!r}")
    return [positive_int(f"{name}[{axis}]", item) for axis, item in enumerate(items)]


def check_last_dim(module: str, x: torch.Tensor, dim: int) -> None:
    """``x.shape[-1] == dim`` (skipped for an FX ``Proxy``, which has no shape while tracing)."""
    if isinstance(x, torch.fx.Proxy):
        return
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(f"{module} expects inputs whose last dimension is {dim}, got shape {tuple(x.shape)}")
