"""CKConvND against the reference implementation (nvsubquadratic): outputs and gradients on every path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers import assert_parity, copy_state, randomize_, requires_reference
from tests.modules.test_ckconv import D, cf, kernel_cfg
from vit5.config import LazyConfig
from vit5.modules.ckconv import CKConvND
from vit5.modules.masks import ExponentialModulationND, GaussianModulationND
from vit5.ops import longconv_plan, native


def _translate(cfg: object) -> object:
    """Swap vit5 targets for the reference's classes in a small config tree."""
    from nvsubquadratic.lazy_config import LazyConfig as RefLazy
    from nvsubquadratic.modules import film, kernels_nd, masks_nd

    targets = {
        "vit5.modules.siren.SIRENKernelND": kernels_nd.SIRENKernelND,
        "vit5.modules.film.KernelFiLMGenerator": film.KernelFiLMGenerator,
        "vit5.modules.masks.GaussianModulationND": masks_nd.GaussianModulationND,
        "vit5.modules.masks.BlockAlignedGaussianModulationND": masks_nd.BlockAlignedGaussianModulationND,
        "vit5.modules.masks.ExponentialModulationND": masks_nd.ExponentialModulationND,
        "torch.nn.modules.linear.Identity": nn.Identity,
    }
    if isinstance(cfg, dict) and "__target__" in cfg:
        kwargs = {key: _translate(value) for key, value in cfg.items() if key != "__target__"}
        return RefLazy(targets[cfg["__target__"]])(**kwargs)
    return cfg


def _pair(seed: int = 0, **overrides: object) -> tuple[nn.Module, CKConvND]:
    from nvsubquadratic.modules.ckconv_nd import CKConvND as Reference

    kw = dict(
        data_dim=2,
        hidden_dim=D,
        kernel_cfg=kernel_cfg(),
        mask_cfg=LazyConfig(nn.Identity)(),
        grid_type="double",
        fft_padding="zero",
    )
    kw.update(overrides)
    torch.manual_seed(seed)
    ref = Reference(**{key: _translate(value) for key, value in kw.items()})
    torch.manual_seed(seed)
    ours = CKConvND(**kw)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key  # seed-exact init, incl. the shortcut
    randomize_(ref, seed=seed + 1)
    if hasattr(ref.mask, "std_param"):  # keep Gaussian widths in range: the clamp would dominate otherwise
        ref.mask.std_param.data.copy_(
            ours.mask.std_param.data * torch.empty_like(ours.mask.std_param).uniform_(0.5, 1.5)
        )
    copy_state(ref, ours)
    return ref, ours


def _check(
    ref: nn.Module, ours: CKConvND, sizes: tuple[int, ...], channels: int = D, **kwargs: object
) -> None:
    x = torch.randn(2, *sizes, channels)
    assert_parity(ours(x, **kwargs), ref(x, **kwargs))
    assert_parity(ours(cf(x), is_bhl_input=True, **kwargs), ref(cf(x), is_bhl_input=True, **kwargs))
    assert ours.flop_count(sizes) == ref.flop_count(sizes)
    assert ours.flop_count(sizes, inference=True) == ref.flop_count(sizes, inference=True)


PARITY_CASES = {
    "zero-double": {},
    "zero-single": {"grid_type": "single"},
    "circular": {"grid_type": "single", "fft_padding": "circular"},
    "CIRCULAR-L7": {"grid_type": "single", "fft_padding": "CIRCULAR", "kernel_cfg": kernel_cfg(7)},
    "circular-zero": {"grid_type": None, "fft_padding": ["circular", "zero"]},
    "zero-circular": {"grid_type": None, "fft_padding": ("zero", "Circular")},
    "all-circular-list": {"grid_type": None, "fft_padding": ["circular", "circular"]},
    "chunked-mixed": {"grid_type": None, "fft_padding": ["circular", "zero"], "use_chunked_fftconv": True},
    "exp-mask": {"mask_cfg": LazyConfig(ExponentialModulationND)(data_dim=2, num_channels=D)},
    "gauss-direct": {"mask_cfg": LazyConfig(GaussianModulationND)(data_dim=2, num_channels=D, grid_size=99)},
    "gauss-log-circular": {
        "grid_type": "single",
        "fft_padding": "circular",
        "mask_cfg": LazyConfig(GaussianModulationND)(
            data_dim=2, num_channels=D, grid_size=3, parametrization="log"
        ),
    },
    "gauss-softplus-mixed": {
        "grid_type": None,
        "fft_padding": ["zero", "circular"],
        "mask_cfg": LazyConfig(GaussianModulationND)(
            data_dim=2, num_channels=D, grid_size=5, parametrization="softplus", init_extent=[1.0, 2.0]
        ),
    },
    "subq-backend": {"fft_backend": "subq_ops_fused"},
}


@pytest.mark.parametrize("case", list(PARITY_CASES))
@pytest.mark.parametrize("sizes", [(5, 4), (4, 7)], ids=str)
@pytest.mark.parity
@requires_reference
def test_parity_modes(case: str, sizes: tuple[int, int]) -> None:
    overrides = dict(PARITY_CASES[case])
    backend = overrides.pop("fft_backend", None)
    ref, ours = _pair(**overrides)
    if backend is not None:  # the reference needs CUDA kernels for it; ours runs the torch path
        ours = CKConvND(
            **{
                **dict(
                    data_dim=2,
                    hidden_dim=D,
                    kernel_cfg=kernel_cfg(),
                    mask_cfg=LazyConfig(nn.Identity)(),
                    grid_type="double",
                    fft_padding="zero",
                ),
                "fft_backend": backend,
            }
        )
        copy_state(ref, ours)
    _check(ref, ours, sizes)


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("grid_type", ["double", "single"])
@pytest.mark.parity
@requires_reference
def test_parity_causal_1d(chunked: bool, grid_type: str) -> None:
    ref, ours = _pair(
        data_dim=1,
        kernel_cfg=kernel_cfg(6, data_dim=1),
        is_causal=True,
        use_chunked_fftconv=chunked,
        grid_type=grid_type,
    )
    for length in (6, 9, 4):  # 9 grows the cache
        _check(ref, ours, (length,))


@pytest.mark.parity
@requires_reference
def test_parity_chunked_wide() -> None:
    ref, ours = _pair(hidden_dim=130, kernel_cfg=kernel_cfg(out_dim=130), use_chunked_fftconv=True)
    _check(ref, ours, (3, 4), channels=130)


@pytest.mark.parity
@requires_reference
def test_parity_growth_and_anisotropic_l_cache() -> None:
    ref, ours = _pair()  # L_cache [5, 4] on a 5 x 4 grid
    for sizes in [(5, 4), (7, 6), (3, 2), (7, 6), (5, 4)]:  # one growth event, then smaller again
        _check(ref, ours, sizes)
    assert torch.equal(
        ours.kernel.positional_embedding.grid_cache, ref.kernel.positional_embedding.grid_cache
    )


@pytest.mark.parametrize("after", [False, True])
@pytest.mark.parity
@requires_reference
def test_parity_film(after: bool) -> None:
    cfg = kernel_cfg(film=2 + after)
    cfg.film_after_pos_embed = after
    ref, ours = _pair(kernel_cfg=cfg)
    _check(ref, ours, (5, 4), conditioning=torch.randn(2, 3))
    _check(ref, ours, (4, 4))


@pytest.mark.parametrize("fused", [False, True], ids=["dft", "fused"])
@pytest.mark.parametrize(
    "overrides",
    [{}, {"grid_type": "single"}, {"kernel_cfg": kernel_cfg(film=2)}],
    ids=["double", "single", "film"],
)
@pytest.mark.parity
@requires_reference
def test_parity_dft_and_fused_training_paths(
    monkeypatch: pytest.MonkeyPatch, overrides: dict, fused: bool
) -> None:
    """The training paths of planner rows 6 (DFT matrices) and 5 (fused FFT kernels; FiLM kernels
    take row 6 there too): outputs and every gradient as the reference."""
    monkeypatch.setattr(longconv_plan, "BUILT_DENSE_MAX_BYTES", 0)  # no dense operator
    if not fused:
        monkeypatch.setattr(longconv_plan, "FUSED_MAX_SIGNAL", 0)
    seen = []
    plan = longconv_plan.plan_long_conv
    monkeypatch.setattr(
        "vit5.ops.route.plan_long_conv", lambda **kw: seen.append(plan(**kw).path) or plan(**kw)
    )
    ref, ours = _pair(**overrides)
    film = "film_generator" in dict(ours.kernel.named_children())
    for sizes in [(5, 4), (4, 7)]:
        x = torch.randn(2, *sizes, D)
        kwargs = {"conditioning": torch.randn(2, 3)} if film else {}
        results = []
        for module in (ours, ref):
            module.zero_grad(set_to_none=True)
            xi = x.clone().requires_grad_()
            y = module(xi, **kwargs)
            y.backward(torch.ones_like(y) + torch.arange(y.numel()).view(y.shape) % 3)
            grads = {name: p.grad for name, p in module.named_parameters()}
            results.append((y, xi.grad, grads))
        (y, gx, grads), (y_ref, gx_ref, grads_ref) = results
        assert_parity(y, y_ref)
        assert_parity(gx, gx_ref)
        assert grads.keys() == grads_ref.keys()
        for name in grads:
            assert_parity(grads[name], grads_ref[name])
    expected = fused and native.library() is not None and "kernel_cfg" not in overrides
    path = longconv_plan.LongConvPath.FFT_LOWMEM if expected else longconv_plan.LongConvPath.DFT
    assert seen and set(seen) == {path}
