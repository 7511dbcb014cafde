"""CKConvND: convolution semantics per mode, L_cache handling, validation, dtypes, flop_count, parity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers import assert_parity, randomize_
from tests.ops.test_fftconv import dense_conv
from vit5.config import LazyConfig
from vit5.modules.ckconv import CKConvND
from vit5.modules.film import KernelFiLMGenerator
from vit5.modules.masks import ExponentialModulationND, GaussianModulationND
from vit5.modules.siren import SIRENKernelND
from vit5.ops import longconv_plan, native

D = 6


def kernel_cfg(L_cache: object = (5, 4), data_dim: int = 2, out_dim: int = D, film: int | None = None):
    film_cfg = (
        None
        if film is None
        else LazyConfig(KernelFiLMGenerator)(cond_dim=3, kernel_hidden_dim=8, num_film_layers=film)
    )
    L_cache = list(L_cache) if isinstance(L_cache, tuple) else L_cache
    return LazyConfig(SIRENKernelND)(
        out_dim=out_dim,
        data_dim=data_dim,
        mlp_hidden_dim=8,
        num_layers=3,
        embedding_dim=8,
        omega_0=10.0,
        L_cache=L_cache,
        use_bias=True,
        film_cfg=film_cfg,
    )


def make(**overrides: object) -> CKConvND:
    kw = dict(
        data_dim=2,
        hidden_dim=D,
        kernel_cfg=kernel_cfg(),
        mask_cfg=LazyConfig(nn.Identity)(),
        grid_type="double",
        fft_padding="zero",
    )
    return CKConvND(**{**kw, **overrides})


def cf(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(-1, 1)


# --------------------------------------------------------------------------------------------------
# Semantics against slow references


def test_zero_double_is_conv2d_with_flipped_kernel_plus_shortcut(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    conv = randomize_(make())
    x = torch.randn(2, 5, 4, D)
    kernel, _ = conv.kernel((5, 4))  # (1, 9, 7, C)
    weight = kernel[0].permute(2, 0, 1).unsqueeze(1).flip(-1, -2)  # (C, 1, 9, 7)
    expected = F.conv2d(cf(x), weight, padding=(4, 3), groups=D) + conv.shortcut.view(-1, 1, 1) * cf(x)
    y = conv(x)
    assert y.shape == x.shape
    torch.testing.assert_close(cf(y), expected, rtol=1e-4, atol=1e-4)
    # this tiny channels-last grid trains through the dense operator; the FFT path is layout-exact
    torch.testing.assert_close(conv(cf(x), is_bhl_input=True), cf(y), rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(longconv_plan, "BUILT_DENSE_MAX_BYTES", 0)  # the DFT-matrix training path
    torch.testing.assert_close(conv(cf(x), is_bhl_input=True), cf(conv(x)), rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(longconv_plan, "DFT_MAX_SIGNAL", 0)  # the FFT paths
    with native.disabled():  # PyTorch's transforms in both layouts: transposed transforms, fp32 rounding
        torch.testing.assert_close(conv(cf(x), is_bhl_input=True), cf(conv(x)), rtol=1e-5, atol=1e-5)
    # channels-last fp32 on a CPU: the fused kernel (vit5.ops.fftnative), to fp32 rounding
    torch.testing.assert_close(cf(conv(x)), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv(cf(x), is_bhl_input=True), cf(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(5, 4), (6, 7)], ids=str)
def test_circular_single_is_a_centred_modular_convolution(size: tuple[int, int]) -> None:
    torch.manual_seed(1)
    conv = randomize_(make(grid_type="single", fft_padding="circular"))
    x = torch.randn(2, D, *size)
    grid_lens = tuple((n + 1) // 2 for n in size)
    kernel = cf(conv.kernel(grid_lens)[0])  # (1, C, K_h, K_w), K = N or N - 1
    expected = dense_conv(x, kernel, ("circular", "circular")) + conv.shortcut.view(-1, 1, 1) * x
    torch.testing.assert_close(conv(x, is_bhl_input=True), expected, rtol=1e-4, atol=1e-4)


def test_mixed_list_uses_single_grid_on_circular_axes() -> None:
    torch.manual_seed(2)
    conv = randomize_(make(grid_type=None, fft_padding=["circular", "zero"]))
    x = torch.randn(2, D, 5, 4)
    kernel = cf(conv.kernel((3, 4))[0])  # rows: single grid (3 -> 5 taps); columns: double (7 taps)
    assert kernel.shape[-2:] == (5, 7)
    expected = dense_conv(x, kernel, ("circular", "zero")) + conv.shortcut.view(-1, 1, 1) * x
    torch.testing.assert_close(conv(x, is_bhl_input=True), expected, rtol=1e-4, atol=1e-4)


def test_causal_1d_uses_non_negative_displacements() -> None:
    torch.manual_seed(3)
    conv = randomize_(make(data_dim=1, kernel_cfg=kernel_cfg(6, data_dim=1), is_causal=True))
    x = torch.randn(2, 7, D)
    full = conv.kernel((7,))[0]  # (1, 13, C)
    kernel = cf(full[:, 6:])  # taps t = 0..6
    expected = dense_conv(cf(x), kernel, ("causal",)) + conv.shortcut.view(-1, 1) * cf(x)
    y = conv(x)
    torch.testing.assert_close(cf(y), expected, rtol=1e-4, atol=1e-4)
    x2 = x.clone()
    x2[:, -1] += 5.0
    torch.testing.assert_close(conv(x2)[:, :-1], y[:, :-1])


def test_mask_multiplies_the_kernel() -> None:
    torch.manual_seed(4)
    conv = randomize_(make(mask_cfg=LazyConfig(ExponentialModulationND)(data_dim=2, num_channels=D)))
    x = torch.randn(1, D, 5, 4)
    kernel, grid = conv.kernel((5, 4))
    masked = cf(conv.mask(grid, kernel))
    expected = dense_conv(x, masked, ("zero", "zero")) + conv.shortcut.view(-1, 1, 1) * x
    torch.testing.assert_close(conv(x, is_bhl_input=True), expected, rtol=1e-4, atol=1e-4)


def test_conditioning_gives_per_sample_kernels() -> None:
    torch.manual_seed(5)
    conv = randomize_(make(kernel_cfg=kernel_cfg(film=2)))
    x, cond = torch.randn(3, 5, 4, D), torch.randn(3, 3)
    y = conv(x, conditioning=cond)
    for b in range(3):  # matmul blocking differs with the batch size: rounding-level differences only
        assert_parity(y[b : b + 1], conv(x[b : b + 1], conditioning=cond[b : b + 1]))
    assert not torch.allclose(y, conv(x))


def test_chunked_matches_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    """use_chunked_fftconv trades memory for more, smaller FFT calls: equal to fp32 rounding."""
    monkeypatch.setattr(longconv_plan, "BUILT_DENSE_MAX_BYTES", 0)  # compare the two FFT paths
    monkeypatch.setattr(longconv_plan, "DFT_MAX_SIGNAL", 0)
    torch.manual_seed(6)
    wide = 130  # > one chunk of 128 channels
    plain = make(hidden_dim=wide, kernel_cfg=kernel_cfg(out_dim=wide))
    chunked = make(hidden_dim=wide, kernel_cfg=kernel_cfg(out_dim=wide), use_chunked_fftconv=True)
    chunked.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 4, wide)
    with native.disabled():  # both on PyTorch's transforms
        torch.testing.assert_close(chunked(x), plain(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked(x), plain(x), rtol=1e-5, atol=1e-5)  # plain: the fused kernel


# --------------------------------------------------------------------------------------------------
# Construction


def test_single_grid_halves_l_cache_and_injects_grid_size() -> None:
    gauss = LazyConfig(GaussianModulationND)(data_dim=2, num_channels=D, grid_size=1000)
    conv = make(grid_type="single", fft_padding="circular", mask_cfg=gauss)
    assert conv.kernel.L_cache == [3, 2] and conv.kernel.positional_embedding.grid_cache.shape == (1, 5, 3, 2)
    assert conv.mask.grid_size == 5 and conv.mask.min_std == pytest.approx(
        2 / 4 * math.sqrt(-1 / (2 * math.log(0.1)))
    )
    assert make(mask_cfg=gauss).mask.grid_size == 9  # double grid: 2 * max(5, 4) - 1
    mixed = make(grid_type=None, fft_padding=["circular", "zero"], kernel_cfg=kernel_cfg(8), mask_cfg=gauss)
    assert mixed.kernel.L_cache == [4, 8] and mixed.mask.grid_size == 15
    assert make(grid_type="single", fft_padding="circular", kernel_cfg=kernel_cfg(8)).kernel.L_cache == 4
    assert make(kernel_cfg=kernel_cfg(8)).kernel.L_cache == 8


def test_attributes_and_state() -> None:
    conv = make(fft_padding="Zero", fft_backend="torch_fft")
    assert (conv.data_dim, conv.hidden_dim, conv.grid_type, conv.fft_padding) == (2, D, "double", "Zero")
    assert (conv.is_causal, conv.use_chunked_fftconv, conv.fft_backend) == (False, False, "torch_fft")
    assert isinstance(conv.mask, nn.Identity) and isinstance(conv.kernel, SIRENKernelND)
    assert list(conv.state_dict())[0] == "shortcut" and not hasattr(conv.shortcut, "_no_weight_decay")
    bound = 1 / math.sqrt(D)
    assert conv.shortcut.abs().max() <= bound


def test_other_fft_backends_warn_once_and_run_torch() -> None:
    import warnings

    import vit5.modules.ckconv as module

    module._LOGGED_BACKENDS.discard("subq_ops")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        conv = make(fft_backend="subq_ops")
        make(fft_backend="subq_ops")
    said = [str(w.message) for w in caught if "subq_ops" in str(w.message)]
    assert len(said) == 1 and "PyTorch FFT path" in said[0]
    reference = make()
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(1, 5, 4, D)
    assert torch.equal(conv(x), reference(x))  # the ignored option is a no-op: the same path, the same bits


@pytest.mark.parametrize(
    "overrides,error,match",
    [
        ({"fft_padding": "circular"}, ValueError, "grid_type='single'"),
        ({"grid_type": None}, ValueError, "grid_type"),
        ({"grid_type": "triple"}, ValueError, "grid_type"),
        ({"fft_padding": ["zero", "zero"]}, ValueError, "grid_type must be None"),
        ({"fft_padding": ["zero"], "grid_type": None}, ValueError, "one mode per axis"),
        ({"fft_padding": "zero,circular", "grid_type": None}, ValueError, "comma"),
        ({"fft_padding": [True, False], "grid_type": None}, TypeError, "fft_padding"),
        ({"fft_padding": "reflect"}, ValueError, "fft_padding"),
        ({"is_causal": True}, ValueError, "data_dim=1"),
        (
            {"fft_padding": "circular", "grid_type": "single", "use_chunked_fftconv": True},
            ValueError,
            "chunked",
        ),
        ({"fft_backend": 3}, TypeError, "fft_backend"),
        ({"hidden_dim": 4}, ValueError, "out_dim"),
        ({"data_dim": 3}, ValueError, "L_cache"),
        (
            {"mask_cfg": LazyConfig(ExponentialModulationND)(data_dim=2, num_channels=3)},
            ValueError,
            "num_channels",
        ),
        ({"is_causal": "yes"}, TypeError, "is_causal"),
    ],
)
def test_invalid_combinations(overrides: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        make(**overrides)


def test_causal_validation_1d() -> None:
    one_d = dict(data_dim=1, kernel_cfg=kernel_cfg(6, data_dim=1), is_causal=True)
    with pytest.raises(ValueError, match="is_causal"):
        make(**one_d, fft_padding="circular", grid_type="single")
    with pytest.raises(ValueError, match="is_causal"):
        make(**one_d, fft_padding=["zero"], grid_type=None)
    assert make(**one_d, grid_type="single", use_chunked_fftconv=True).is_causal


def test_forward_validation() -> None:
    conv = make()
    with pytest.raises(ValueError, match="C=6"):
        conv(torch.randn(1, 5, 4, 5))
    with pytest.raises(ValueError, match="4-d"):
        conv(torch.randn(1, 5, D))
    film = make(kernel_cfg=kernel_cfg(film=2))
    with pytest.raises(ValueError, match="conditioning"):
        film(torch.randn(2, 5, 4, D), conditioning=torch.randn(3, 3))


# --------------------------------------------------------------------------------------------------
# Dtypes and gradients


def test_autocast_bf16_model_and_gradients() -> None:
    conv = make(mask_cfg=LazyConfig(GaussianModulationND)(data_dim=2, num_channels=D, grid_size=9))
    x = torch.randn(2, 5, 4, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    conv(x).square().sum().backward()
    assert all(p.grad is not None for p in conv.parameters())
    conv.to(torch.bfloat16)
    y = conv(x.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    assert conv.kernel.positional_embedding.grid_cache.dtype == torch.float32


# --------------------------------------------------------------------------------------------------
# flop_count


def test_flop_count_matches_spec_table() -> None:
    conv = CKConvND(
        data_dim=2,
        hidden_dim=384,
        grid_type="double",
        fft_padding="zero",
        mask_cfg=LazyConfig(nn.Identity)(),
        kernel_cfg=LazyConfig(SIRENKernelND)(
            out_dim=384,
            data_dim=2,
            mlp_hidden_dim=32,
            num_layers=3,
            embedding_dim=32,
            omega_0=10.0,
            L_cache=14,
            use_bias=True,
        ),
    )
    assert conv.flop_count((14, 14)) == 66_365_275
    assert conv.flop_count((14, 14), inference=True) == 30_827_260
    assert conv.flop_count((14, 14)) - conv.kernel.flop_count((14, 14)) == 43_418_491 + 1_806_336 + 75_264


@pytest.mark.parametrize(
    "overrides,sizes",
    [
        ({}, (10, 8)),
        ({"grid_type": "single"}, (min(5 + 3, 10), min(4 + 2, 8))),
        ({"grid_type": "single", "fft_padding": "circular"}, (5, 4)),
        ({"grid_type": None, "fft_padding": ["circular", "zero"]}, (5, 8)),
    ],
)
def test_flop_count_formula(overrides: dict, sizes: tuple[int, int]) -> None:
    conv = make(**overrides)
    total = math.prod(sizes)
    grid_lens = conv._grid_lens((5, 4))
    for inference, n_fft in ((False, 3), (True, 2)):
        expected = (
            conv.kernel.flop_count(grid_lens, inference)
            + int(n_fft * 5 * D * total * sum(map(math.log2, sizes)))
            + 6 * D * total
            + D * 20
        )
        assert conv.flop_count((5, 4), inference) == expected
