"""SIRENKernelND: grid, growth, init, forward formulas, FiLM, dtypes, flop_count, reference parity."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import assert_parity, copy_state, randomize_, requires_reference
from vit5.config import LazyConfig
from vit5.modules.film import KernelFiLMGenerator
from vit5.modules.siren import SIRENKernelND

BASE = dict(
    out_dim=6, data_dim=2, mlp_hidden_dim=8, num_layers=3, embedding_dim=8, omega_0=10.0, use_bias=True
)


def make(**overrides: object) -> SIRENKernelND:
    return SIRENKernelND(**{**BASE, "L_cache": [5, 4], **overrides})


def film_cfg(layers: int = 2, cond: int = 3, **kw: object):
    return LazyConfig(KernelFiLMGenerator)(cond_dim=cond, kernel_hidden_dim=8, num_film_layers=layers, **kw)


def hand_forward(kernel: SIRENKernelND, grid: torch.Tensor, film=None) -> torch.Tensor:
    """The spec formulas: sin(W0 p + b0), sin(W h + b) per hidden layer (+ FiLM), linear out."""
    p = kernel.positional_embedding.linear
    h = torch.sin(grid @ p.weight.T + p.bias)
    pair = 0
    if film is not None and kernel.film_after_pos_embed:
        h = film[0][0][:, None, None] * h + film[0][1][:, None, None]
        pair = 1
    for layer in kernel.hidden_linears:
        h = torch.sin(h @ layer.weight.T + layer.bias)
        if film is not None:
            h = film[pair][0][:, None, None] * h + film[pair][1][:, None, None]
            pair += 1
    return h @ kernel.out_linear.weight.T + kernel.out_linear.bias


# --------------------------------------------------------------------------------------------------
# Grid


def test_grid_coordinates_rows_first_and_step() -> None:
    kernel = make()
    out, grid = kernel((5, 4))
    assert out.shape == (1, 9, 7, 6) and grid.shape == (1, 9, 7, 2) and grid.dtype == torch.float32
    assert torch.equal(grid[0, :, 0, 0], torch.linspace(-1, 1, 9))  # channel 0 = rows (H axis), step 1/4
    assert torch.equal(grid[0, 0, :, 1], torch.linspace(-1, 1, 7))  # step 1/3
    assert torch.all(grid[0, :, :, 0] == grid[0, :, :1, 0])  # meshgrid 'ij'


def test_smaller_input_takes_the_central_slice() -> None:
    kernel = make()
    _, grid = kernel((3, 2))
    full = torch.linspace(-1, 1, 9)
    assert torch.equal(grid[0, :, 0, 0], full[2:7])  # [L - H, L + H - 1)
    assert torch.allclose(grid[0, 0, :, 1], torch.tensor([-1 / 3, 0.0, 1 / 3]), atol=1e-7)


def test_grid_cache_is_a_non_persistent_fp32_buffer() -> None:
    kernel = make()
    assert "positional_embedding.grid_cache" in dict(kernel.named_buffers())
    assert all("grid_cache" not in key for key in kernel.state_dict())
    assert kernel.positional_embedding.grid_cache.shape == (1, 9, 7, 2)
    kernel.to(torch.bfloat16)
    assert kernel.positional_embedding.grid_cache.dtype == torch.float32
    assert kernel.out_linear.weight.dtype == torch.bfloat16
    assert torch.equal(kernel.positional_embedding.grid_cache, make().positional_embedding.grid_cache)


def test_growth_is_permanent_and_keeps_the_step() -> None:
    kernel = make()
    _, grid = kernel((7, 4))  # axis 0 grows from 5 to 7: lim = 1 + 2/4
    assert kernel.positional_embedding.grid_cache.shape == (1, 13, 7, 2)
    assert torch.equal(grid[0, :, 0, 0], torch.linspace(-1.5, 1.5, 13))
    assert torch.equal(grid[0, 0, :, 1], torch.linspace(-1, 1, 7))
    # a later larger input on the other axis keeps axis 0's coordinates (step 1/4) and grows axis 1
    _, grid = kernel((7, 6))
    assert torch.equal(grid[0, :, 0, 0], torch.linspace(-1.5, 1.5, 13))
    assert torch.equal(grid[0, 0, :, 1], torch.linspace(-5 / 3, 5 / 3, 11))
    # growing again on axis 0 is relative to the construction-time L (step stays 1/4)
    _, grid = kernel((9, 6))
    assert torch.equal(grid[0, :, 0, 0], torch.linspace(-2.0, 2.0, 17))
    # smaller inputs afterwards get (up to linspace rounding) their original coordinates
    _, small = kernel((5, 4))
    _, fresh = make()((5, 4))
    assert torch.allclose(small, fresh, atol=1e-6)
    assert kernel.L_cache == [5, 4] and kernel.L_cache_per_axis == (5, 4)


def test_step_sizes_and_attributes() -> None:
    kernel = SIRENKernelND(**{**BASE, "L_cache": 14})
    emb = kernel.positional_embedding
    assert emb.step_sizes == (1 / 13, 1 / 13) and emb.L_cache_per_axis == (14, 14) and emb.L_cache == 14
    for name in (
        "out_dim",
        "data_dim",
        "mlp_hidden_dim",
        "num_layers",
        "embedding_dim",
        "omega_0",
        "hidden_omega_0",
    ):
        assert getattr(kernel, name) == {**BASE, "hidden_omega_0": 1.0}[name]
    assert (
        kernel.film_generator is None and kernel.num_film_layers == 2 and kernel.film_after_pos_embed is False
    )


# --------------------------------------------------------------------------------------------------
# Init


def test_init_bounds_biases_and_output_scale() -> None:
    torch.manual_seed(0)
    kernel = SIRENKernelND(
        out_dim=64,
        data_dim=2,
        mlp_hidden_dim=32,
        num_layers=3,
        embedding_dim=32,
        omega_0=10.0,
        L_cache=[15, 14],
        use_bias=True,
    )
    w0 = kernel.positional_embedding.linear.weight
    assert w0.abs().max() <= 10 * math.pi and w0.abs().max() > 0.9 * 10 * math.pi
    for layer in kernel.hidden_linears:
        bound = math.sqrt(6 / 32)
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    out_bound = math.sqrt(6 / 32) / math.sqrt(15 * 14)
    assert kernel.out_linear.weight.abs().max() <= out_bound * (1 + 1e-6)
    assert kernel.out_linear.weight.abs().max() > 0.9 * out_bound
    for name, parameter in kernel.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(parameter) == 0, name


def test_hidden_omega_cancels_and_num_layers_quirk() -> None:
    torch.manual_seed(0)
    a = make(hidden_omega_0=7.0)
    torch.manual_seed(0)
    b = make()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    shapes = {
        n: [tuple(lin.weight.shape) for lin in make(num_layers=n, embedding_dim=4).hidden_linears]
        for n in (1, 2, 3, 4)
    }
    assert shapes == {1: [(8, 4)], 2: [(8, 4)], 3: [(8, 4), (8, 8)], 4: [(8, 4), (8, 8), (8, 8)]}


def test_no_weight_decay_tags() -> None:
    kernel = make(film_cfg=film_cfg())
    tagged = {name for name, p in kernel.named_parameters() if getattr(p, "_no_weight_decay", False)}
    expected = {
        name for name, _ in kernel.named_parameters() if name != "out_linear.weight" and "film" not in name
    }
    assert tagged - {"film_generator.mlp.0.bias", "film_generator.mlp.2.bias"} == expected


# --------------------------------------------------------------------------------------------------
# Forward


def test_forward_matches_hand_written_formulas() -> None:
    torch.manual_seed(1)
    kernel = randomize_(make())
    out, grid = kernel((4, 3))
    torch.testing.assert_close(out, hand_forward(kernel, grid), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("after", [False, True])
def test_film_forward_matches_hand_written_formulas(after: bool) -> None:
    torch.manual_seed(2)
    kernel = make(film_cfg=film_cfg(2 + after), film_after_pos_embed=after)
    cond = torch.randn(2, 3)
    plain, _ = kernel((4, 3))
    at_init, _ = kernel((4, 3), conditioning=cond)
    assert at_init.shape == (2, 7, 5, 6)
    torch.testing.assert_close(at_init, plain.expand(2, -1, -1, -1))  # identity modulation at init
    randomize_(kernel)
    out, grid = kernel((4, 3), conditioning=cond)
    film = kernel.film_generator(cond)
    torch.testing.assert_close(out, hand_forward(kernel, grid, film), rtol=1e-5, atol=1e-5)
    unconditioned, _ = kernel((4, 3))  # no conditioning: the plain SIREN, [1, ...]
    torch.testing.assert_close(unconditioned, hand_forward(kernel, grid), rtol=1e-5, atol=1e-5)


def test_film_validation() -> None:
    with pytest.raises(ValueError, match="num_film_layers must be 2"):
        make(film_cfg=film_cfg(3))
    with pytest.raises(ValueError, match="num_film_layers must be 3"):
        make(film_cfg=film_cfg(2), film_after_pos_embed=True)
    with pytest.raises(ValueError, match="embedding_dim == mlp_hidden_dim"):
        make(embedding_dim=4, film_after_pos_embed=True)
    with pytest.raises(ValueError, match="kernel_hidden_dim"):
        make(film_cfg=LazyConfig(KernelFiLMGenerator)(cond_dim=3, kernel_hidden_dim=5, num_film_layers=2))


@pytest.mark.parametrize(
    "overrides,error",
    [
        ({"L_cache": 1}, ValueError),
        ({"L_cache": [5]}, ValueError),
        ({"L_cache": "14"}, TypeError),
        ({"num_layers": 0}, ValueError),
        ({"omega_0": -1.0}, ValueError),
        ({"out_dim": 0}, ValueError),
        ({"use_bias": 1}, TypeError),
    ],
)
def test_constructor_validation(overrides: dict, error: type) -> None:
    with pytest.raises(error):
        make(**overrides)


def test_grid_lens_validation() -> None:
    with pytest.raises(ValueError, match="grid_lens"):
        make()((3,))
    with pytest.raises(ValueError, match="grid_lens"):
        make()((0, 2))


def test_one_and_three_dimensional_kernels() -> None:
    k1 = SIRENKernelND(**{**BASE, "data_dim": 1, "L_cache": 6})
    out, grid = k1((6,))
    assert out.shape == (1, 11, 6) and torch.equal(grid[0, :, 0], torch.linspace(-1, 1, 11))
    k3 = SIRENKernelND(**{**BASE, "data_dim": 3, "L_cache": [3, 4, 2]})
    out, grid = k3((3, 2, 2))
    assert out.shape == (1, 5, 3, 3, 6) and grid.shape == (1, 5, 3, 3, 3)


def test_dtypes_autocast_and_bf16() -> None:
    kernel = make()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grid = kernel((5, 4))
        # the first layer runs in fp32 even under autocast
        h0 = kernel.positional_embedding(grid)
    assert out.dtype == torch.bfloat16 and grid.dtype == torch.float32 and h0.dtype == torch.float32
    reference, _ = kernel((5, 4))
    assert (out.float() - reference).abs().max() < 0.05
    kernel.to(torch.bfloat16)
    out, grid = kernel((5, 4))
    assert out.dtype == torch.bfloat16 and grid.dtype == torch.float32 and torch.isfinite(out).all()


def test_backward_reaches_every_parameter() -> None:
    kernel = make(film_cfg=film_cfg(init_type="small_random"))
    out, _ = kernel((4, 4), conditioning=torch.randn(2, 3))
    out.square().sum().backward()
    assert all(p.grad is not None for p in kernel.parameters())


# --------------------------------------------------------------------------------------------------
# flop_count


def test_flop_count_formula() -> None:
    kernel = SIRENKernelND(
        out_dim=384,
        data_dim=2,
        mlp_hidden_dim=32,
        num_layers=3,
        embedding_dim=32,
        omega_0=10.0,
        L_cache=14,
        use_bias=True,
    )
    assert kernel.flop_count((14, 14)) == 28896 * 27 * 27 == 21_065_184  # spec/hyena.md §7
    assert kernel.flop_count((14, 14), inference=True) == 0
    small = make(film_cfg=film_cfg(cond=6))
    taps = 9 * 7
    plain = 2 * taps * 2 * 8 + taps * 8 + 2 * (2 * taps * 8 * 8 + taps * 8) + 2 * taps * 8 * 6
    generator = 2 * 6 * 64 + 64 + 2 * 64 * (2 * 2 * 8)
    expected = plain + generator + 2 * 2 * taps * 8
    assert small.flop_count((5, 4)) == expected == small.flop_count((5, 4), inference=True)


# --------------------------------------------------------------------------------------------------
# Reference parity


def _reference(**kw: object):
    from nvsubquadratic.lazy_config import LazyConfig as RefLazy
    from nvsubquadratic.modules.film import KernelFiLMGenerator as RefFiLM
    from nvsubquadratic.modules.kernels_nd import SIRENKernelND as RefSIREN

    film = kw.pop("film", None)
    cfg = None if film is None else RefLazy(RefFiLM)(cond_dim=3, kernel_hidden_dim=8, num_film_layers=film)
    return RefSIREN(**{**BASE, **kw, "film_cfg": cfg})


@pytest.mark.parametrize("L_cache", [[5, 4], 6, [3, 7]], ids=str)
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("data_dim", [1, 2])
@pytest.mark.parity
@requires_reference
def test_parity_with_reference_and_seed_exact_init(L_cache: object, use_bias: bool, data_dim: int) -> None:
    if data_dim == 1:
        L_cache = L_cache[0] if isinstance(L_cache, list) else L_cache
    kw = dict(L_cache=L_cache, use_bias=use_bias, data_dim=data_dim)
    torch.manual_seed(3)
    ref = _reference(**kw)
    torch.manual_seed(3)
    ours = SIRENKernelND(**{**BASE, **kw})
    assert list(ours.state_dict()) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key  # same init, same RNG order
    randomize_(ref, seed=4)
    copy_state(ref, ours)
    per_axis = ours.L_cache_per_axis
    for lens in (per_axis, tuple(max(1, n - 2) for n in per_axis)):
        (k_ref, g_ref), (k_ours, g_ours) = ref(lens), ours(lens)
        assert torch.equal(g_ours, g_ref)
        assert_parity(k_ours, k_ref)
        assert ours.flop_count(lens) == ref.flop_count(lens)
        assert ours.flop_count(lens, True) == ref.flop_count(lens, True)


@pytest.mark.parity
@requires_reference
def test_parity_growth_then_smaller() -> None:
    torch.manual_seed(5)
    ref = randomize_(_reference(L_cache=[5, 4]))
    ours = make()
    copy_state(ref, ours)
    for lens in [(5, 4), (8, 4), (3, 2), (8, 4), (5, 4)]:  # a single growth event, then smaller again
        (k_ref, g_ref), (k_ours, g_ours) = ref(lens), ours(lens)
        assert torch.equal(g_ours, g_ref) and torch.equal(
            ours.positional_embedding.grid_cache, ref.positional_embedding.grid_cache
        )
        assert_parity(k_ours, k_ref)


@pytest.mark.parametrize("after", [False, True])
@pytest.mark.parity
@requires_reference
def test_parity_film(after: bool) -> None:
    torch.manual_seed(6)
    ref = _reference(L_cache=[5, 4], film=2 + after, film_after_pos_embed=after)
    torch.manual_seed(6)
    ours = make(film_cfg=film_cfg(2 + after), film_after_pos_embed=after)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values()))
    randomize_(ref, seed=7)
    copy_state(ref, ours)
    cond = torch.randn(3, 3)
    assert_parity(ours((5, 4), conditioning=cond)[0], ref((5, 4), conditioning=cond)[0])
    assert_parity(ours((4, 4))[0], ref((4, 4))[0])
    assert ours.flop_count((5, 4), True) == ref.flop_count((5, 4), True)
