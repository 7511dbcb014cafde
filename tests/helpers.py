"""Shared test utilities."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

HAS_REFERENCE = importlib.util.find_spec("nvsubquadratic") is not None
requires_reference = pytest.mark.skipif(not HAS_REFERENCE, reason="nvsubquadratic==0.2.0 is not installed")

# spec/00-overview.md: max|ours - ref| / max(1, max|ref|) <= 1e-5 in fp32 on CPU.
PARITY_TOLERANCE = 1e-5


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """``max|ours - reference| / max(1, max|reference|)``."""
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    scale = max(1.0, reference.detach().abs().max().item())
    return (ours.detach().double() - reference.detach().double()).abs().max().item() / scale


def assert_parity(ours: torch.Tensor, reference: torch.Tensor, tolerance: float = PARITY_TOLERANCE) -> None:
    error = relative_error(ours, reference)
    assert error <= tolerance, f"relative error {error:.3g} > {tolerance:g}"


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0, low: float = -1.0, high: float = 1.0) -> nn.Module:
    """Set every parameter to i.i.d. uniform O(1) values (so LayerScale etc. do not hide errors)."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in module.parameters():
        parameter.copy_(torch.empty(parameter.shape).uniform_(low, high, generator=generator))
    return module


def copy_state(source: nn.Module, target: nn.Module) -> None:
    """Load ``source``'s state dict into ``target`` with ``strict=True`` after checking keys and shapes."""
    ours = {key: tuple(value.shape) for key, value in target.state_dict().items()}
    theirs = {key: tuple(value.shape) for key, value in source.state_dict().items()}
    assert ours == theirs, (
        f"state_dict mismatch: only in target {sorted(set(ours) - set(theirs))}, "
        f"only in source {sorted(set(theirs) - set(ours))}, "
        f"shape differences {[k for k in ours if k in theirs and ours[k] != theirs[k]]}"
    )
    target.load_state_dict(source.state_dict(), strict=True)
