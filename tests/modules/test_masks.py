"""Kernel masks: formulas, bounds, init, clamping and gradients, validation, reference parity."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import assert_parity, copy_state, randomize_, requires_reference
from vit5.modules.masks import BlockAlignedGaussianModulationND, ExponentialModulationND, GaussianModulationND

KAPPA_01 = math.sqrt(-1 / (2 * math.log(0.1)))  # 0.4659906018
KAPPA_095 = math.sqrt(-1 / (2 * math.log(0.95)))  # 3.1221567663


def grid_2d(h: int = 5, w: int = 4) -> torch.Tensor:
    rows, cols = torch.linspace(-1, 1, 2 * h - 1), torch.linspace(-1, 1, 2 * w - 1)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).unsqueeze(0)  # (1, 9, 7, 2)


def test_exponential_init_and_formula() -> None:
    mask = ExponentialModulationND(data_dim=2, num_channels=5)
    expected_row = torch.linspace(2.3, 13.81, 5) / 2
    assert torch.equal(mask.weight, expected_row.expand(2, 5))
    assert mask.weight._no_weight_decay and mask.weight.requires_grad
    grid = grid_2d()
    x = torch.randn(3, 9, 7, 5)
    with torch.no_grad():
        mask.weight.mul_(torch.tensor([[1.0], [-0.5]]))  # |w| is used
    window = torch.exp(-grid[..., :1].abs() * mask.weight[0].abs()) * torch.exp(
        -grid[..., 1:].abs() * mask.weight[1].abs()
    )
    torch.testing.assert_close(mask(grid, x), x * window)
    center = mask(grid, torch.ones(1, 9, 7, 5))[0, 4, 3]
    torch.testing.assert_close(center, torch.ones(5))  # linspace centre is ~1e-8, not exactly 0


def test_gaussian_bounds_and_init() -> None:
    mask = GaussianModulationND(data_dim=2, num_channels=6, grid_size=27, init_extent=[1.0, 3.0])
    assert mask.min_std == pytest.approx(2 / 26 * KAPPA_01) and mask.min_std == pytest.approx(
        0.0358454, abs=1e-7
    )
    assert mask.max_std == pytest.approx(KAPPA_095)
    low = mask.min_std
    torch.testing.assert_close(mask.std_param[0], torch.logspace(math.log10(low), math.log10(KAPPA_01), 6))
    torch.testing.assert_close(
        mask.std_param[1], torch.logspace(math.log10(3 * low), math.log10(3 * KAPPA_01), 6)
    )
    assert mask.std_param._no_weight_decay and list(mask.buffers()) == []
    # the narrowest channel attenuates to 0.1 one grid step (2 / (grid_size - 1)) from the centre
    step = torch.tensor([[[[2 / 26, 0.0]]]])
    assert mask(step, torch.ones(1, 1, 1, 6))[0, 0, 0, 0].item() == pytest.approx(0.1, rel=1e-5)


@pytest.mark.parametrize("parametrization", ["direct", "log", "softplus"])
def test_gaussian_parametrizations_give_the_same_window(parametrization: str) -> None:
    grid, x = grid_2d(), torch.randn(2, 9, 7, 4)
    direct = GaussianModulationND(2, 4, grid_size=9)
    other = GaussianModulationND(2, 4, grid_size=9, parametrization=parametrization)
    sigma = direct.std_param.detach()
    window = torch.exp(-0.5 * (grid.unsqueeze(-1) ** 2 / sigma**2).sum(-2))
    torch.testing.assert_close(other(grid, x), x * window, rtol=1e-5, atol=1e-6)
    stored = {"direct": sigma, "log": sigma.log(), "softplus": torch.log(torch.expm1(sigma))}[parametrization]
    torch.testing.assert_close(other.std_param.detach(), stored)


def test_direct_clamps_in_place_with_identity_gradient() -> None:
    mask = GaussianModulationND(2, 3, grid_size=9)
    with torch.no_grad():
        mask.std_param.copy_(torch.tensor([[1e-4, 0.5, 100.0], [0.3, 0.3, 0.3]]))
    out = mask(grid_2d(), torch.ones(1, 9, 7, 3))
    assert mask.std_param[0, 0].item() == pytest.approx(mask.min_std)
    assert mask.std_param[0, 2].item() == pytest.approx(mask.max_std)
    assert mask.state_dict()["std_param"][0, 0].item() == pytest.approx(mask.min_std)  # visible in the state
    out.sum().backward()
    assert (mask.std_param.grad[0] != 0).all()  # identity gradient, even at the bounds


@pytest.mark.parametrize("parametrization", ["log", "softplus"])
def test_mapped_parametrizations_never_modify_the_parameter(parametrization: str) -> None:
    mask = GaussianModulationND(2, 3, grid_size=9, parametrization=parametrization)
    with torch.no_grad():
        mask.std_param[0, 0] = -20.0  # far below min_std after the mapping
    before = mask.std_param.detach().clone()
    mask(grid_2d(), torch.ones(1, 9, 7, 3)).sum().backward()
    assert torch.equal(mask.std_param.detach(), before)
    assert mask.std_param.grad[0, 0] == 0 and mask.std_param.grad[0, 1] != 0


def test_block_aligned_flips_channels() -> None:
    plain = GaussianModulationND(2, 5, grid_size=9, init_extent=2.0)
    aligned = BlockAlignedGaussianModulationND(2, 5, grid_size=9, init_extent=2.0)
    assert torch.equal(aligned.std_param, plain.std_param.flip(-1))
    assert aligned.std_param[0, 0] > aligned.std_param[0, -1]


def test_masks_broadcast_over_per_sample_kernels_and_keep_dtype() -> None:
    grid = grid_2d()
    for mask in (ExponentialModulationND(2, 4), GaussianModulationND(2, 4, grid_size=9)):
        x = torch.randn(3, 9, 7, 4).bfloat16()
        out = mask(grid, x)
        assert out.shape == x.shape and out.dtype == torch.bfloat16
        # a sample alone: another split of the vectorised loops (exp may round differently in the
        # scalar tail), so equal to rounding; bf16 output: within one bf16 step
        alone = mask(grid, x[1:2])
        torch.testing.assert_close(out[1:2].float(), alone.float(), rtol=2**-7, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"parametrization": "exp"}, ValueError),
        ({"grid_size": 1}, ValueError),
        ({"init_extent": -1.0}, ValueError),
        ({"init_extent": [1.0]}, ValueError),
        ({"init_extent": float("nan")}, ValueError),
        ({"min_attenuation_at_step": 1.5}, ValueError),
        ({"max_attenuation_at_limit": 0.0}, ValueError),
        ({"grid_size": 2, "max_attenuation_at_limit": 0.01}, ValueError),  # min_std > max_std
    ],
)
def test_gaussian_validation(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        GaussianModulationND(**{"data_dim": 2, "num_channels": 4, "grid_size": 9, **kwargs})


def test_call_validation() -> None:
    mask = GaussianModulationND(2, 4, grid_size=9)
    with pytest.raises(ValueError, match="grid"):
        mask(torch.zeros(1, 9, 7, 3), torch.zeros(1, 9, 7, 4))
    with pytest.raises(ValueError, match="kernel"):
        mask(grid_2d(), torch.zeros(1, 9, 7, 5))
    with pytest.raises(ValueError):
        ExponentialModulationND(2, 0)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("ExponentialModulationND", {}),
        ("ExponentialModulationND", {"fast_decay_pct": 9.0, "slow_decay_pct": 1.0}),
        ("GaussianModulationND", {"grid_size": 9}),
        ("GaussianModulationND", {"grid_size": 13, "parametrization": "log", "init_extent": [0.5, 2.0]}),
        (
            "GaussianModulationND",
            {"grid_size": 7, "parametrization": "softplus", "min_attenuation_at_step": 0.3},
        ),
        ("BlockAlignedGaussianModulationND", {"grid_size": 9, "max_attenuation_at_limit": 0.9}),
    ],
)
@pytest.mark.parametrize("data_dim", [1, 2, 3])
@pytest.mark.parity
@requires_reference
def test_parity_with_reference(name: str, kwargs: dict, data_dim: int) -> None:
    import nvsubquadratic.modules.masks_nd as reference_masks

    import vit5.modules.masks as masks

    if isinstance(kwargs.get("init_extent"), list):
        kwargs = {**kwargs, "init_extent": (kwargs["init_extent"] * 2)[:data_dim]}
    ref = getattr(reference_masks, name)(data_dim=data_dim, num_channels=5, **kwargs)
    ours = getattr(masks, name)(data_dim=data_dim, num_channels=5, **kwargs)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.allclose(ours.state_dict()[key], value, rtol=1e-6, atol=0), key
    for parameter in ref.parameters():
        assert getattr(parameter, "_no_weight_decay", False)
    if name != "ExponentialModulationND":
        assert (ours.min_std, ours.max_std) == pytest.approx((ref.min_std, ref.max_std))
    else:
        randomize_(ref)  # Gaussian widths stay at their (valid) init so that the clamp does not dominate
    copy_state(ref, ours)
    sizes = [4, 3, 2][:data_dim]
    axes = [torch.linspace(-1, 1, 2 * n - 1) for n in sizes]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).unsqueeze(0)
    x = torch.randn(2, *[2 * n - 1 for n in sizes], 5)
    assert_parity(ours(grid, x), ref(grid, x))
