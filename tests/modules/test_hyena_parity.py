"""Full-stack parity with nvsubquadratic==0.2.0: ViT5HyenaAdapter -> QKVSequenceMixer -> Hyena -> CKConvND -> SIREN.

The same LazyConfig tree is built with the reference's classes and with vit5's; the state dicts must
have identical keys in the same order (and identical values from the same seed: same init and RNG
order), outputs must agree to 1e-5 relative after copying randomised O(1) parameters, and
``flop_count`` must agree exactly (train and inference).

Reference crashes (checked here too): CPU bf16 autocast (``shortcut.dtype must match x.dtype``) and
``module.to(torch.bfloat16)`` (``grid_cache must be float32``); vit5 runs both (see test_hyena.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.helpers import assert_parity, copy_state, randomize_, requires_reference

pytestmark = [pytest.mark.parity, requires_reference]

D = 8


def namespaces() -> tuple[SimpleNamespace, SimpleNamespace]:
    from nvsubquadratic.lazy_config import LazyConfig as RefLazy
    from nvsubquadratic.lazy_config import instantiate as ref_instantiate
    from nvsubquadratic.modules import (
        ckconv_nd,
        film,
        hyena_nd,
        kernels_nd,
        masks_nd,
        rms_norm,
        sequence_mixer,
    )
    from nvsubquadratic.modules import vit5_hyena_adapter as ref_adapter
    from nvsubquadratic.utils import init as ref_init
    from nvsubquadratic.utils import qk_norm

    import vit5.modules.adapter as adapter
    import vit5.modules.ckconv as ckconv
    import vit5.modules.film as vit5_film
    import vit5.modules.hyena as hyena
    import vit5.modules.masks as masks
    import vit5.modules.norms as norms
    import vit5.modules.qkv_mixer as qkv
    import vit5.modules.siren as siren
    import vit5.ops.init as init
    from vit5.config import LazyConfig, instantiate

    reference = SimpleNamespace(
        L=RefLazy,
        instantiate=ref_instantiate,
        SIREN=kernels_nd.SIRENKernelND,
        CKConv=ckconv_nd.CKConvND,
        Hyena=hyena_nd.Hyena,
        QKV=sequence_mixer.QKVSequenceMixer,
        Adapter=ref_adapter.ViT5HyenaAdapter,
        FiLM=film.KernelFiLMGenerator,
        Gaussian=masks_nd.GaussianModulationND,
        Exponential=masks_nd.ExponentialModulationND,
        BlockAligned=masks_nd.BlockAlignedGaussianModulationND,
        RMSNorm=rms_norm.RMSNorm,
        L2Norm=qk_norm.L2Norm,
        small_init=ref_init.small_init,
        wang=lambda n: ref_init.partial_wang_init_fn_with_num_layers(n),
    )
    ours = SimpleNamespace(
        L=LazyConfig,
        instantiate=instantiate,
        SIREN=siren.SIRENKernelND,
        CKConv=ckconv.CKConvND,
        Hyena=hyena.Hyena,
        QKV=qkv.QKVSequenceMixer,
        Adapter=adapter.ViT5HyenaAdapter,
        FiLM=vit5_film.KernelFiLMGenerator,
        Gaussian=masks.GaussianModulationND,
        Exponential=masks.ExponentialModulationND,
        BlockAligned=masks.BlockAlignedGaussianModulationND,
        RMSNorm=norms.RMSNorm,
        L2Norm=norms.L2Norm,
        small_init=init.small_init,
        wang=lambda n: LazyConfig(init.partial_wang_init_fn_with_num_layers)(num_layers=n),
    )
    return reference, ours


def build(
    ns: SimpleNamespace,
    width: int = D,
    L_cache: object = (5, 4),
    grid_w: int = 4,
    siren_width: int = 16,
    mask: tuple | None = None,
    grid_type: str | None = "double",
    fft_padding: object = "zero",
    chunked: bool = False,
    film_layers: int | None = None,
    film_after: bool = False,
    hyena: dict | None = None,
) -> nn.Module:
    L = ns.L
    film_cfg = None
    if film_layers is not None:
        film_cfg = L(ns.FiLM)(
            cond_dim=6, kernel_hidden_dim=siren_width, num_film_layers=film_layers, init_type="small_random"
        )
    kernel = L(ns.SIREN)(
        out_dim=width,
        data_dim=2,
        mlp_hidden_dim=siren_width,
        num_layers=3,
        embedding_dim=siren_width,
        omega_0=10.0,
        L_cache=list(L_cache) if isinstance(L_cache, tuple) else L_cache,
        use_bias=True,
        film_cfg=film_cfg,
        film_after_pos_embed=film_after,
    )
    if mask is None:
        mask_cfg = L(nn.Identity)()
    elif mask[0] == "Exponential":
        mask_cfg = L(ns.Exponential)(data_dim=2, num_channels=width)
    else:
        mask_cfg = L(getattr(ns, mask[0]))(
            data_dim=2, num_channels=width, grid_size=99, parametrization=mask[1]
        )
    conv = L(ns.CKConv)(
        data_dim=2,
        hidden_dim=width,
        kernel_cfg=kernel,
        mask_cfg=mask_cfg,
        grid_type=grid_type,
        fft_padding=list(fft_padding) if isinstance(fft_padding, tuple) else fft_padding,
        use_chunked_fftconv=chunked,
    )
    parts = dict(
        global_conv_cfg=conv,
        short_conv_cfg=L(nn.Conv2d)(
            in_channels=3 * width,
            out_channels=3 * width,
            kernel_size=3,
            padding=1,
            groups=3 * width,
            bias=False,
        ),
        gate_nonlinear_cfg=L(nn.SiLU)(),
        pixelhyena_norm_cfg=L(ns.RMSNorm)(dim=width, eps=1e-6),
        qk_norm_cfg=L(ns.L2Norm)(),
        output_norm_cfg=L(ns.RMSNorm)(dim=width, eps=1e-6),
        gate_nonlinear_2_cfg=L(nn.Sigmoid)(),
    )
    for key, make in (hyena or {}).items():
        parts[key] = make(ns, width)
    mixer = L(ns.QKV)(
        hidden_dim=width,
        mixer_cfg=L(ns.Hyena)(**parts),
        init_method_in=ns.small_init,
        init_method_out=ns.wang(12),
    )
    return ns.instantiate(L(ns.Adapter)(inner_mixer_cfg=mixer, grid_w=grid_w))


def pair(seed: int = 0, **kwargs: object) -> tuple[nn.Module, nn.Module]:
    reference, ours = namespaces()
    torch.manual_seed(seed)
    ref = build(reference, **kwargs)
    torch.manual_seed(seed)
    mine = build(ours, **kwargs)
    assert list(mine.state_dict()) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(mine.state_dict()[key], value), f"init differs at {key}"
    randomize_(ref, seed=seed + 1)
    for module in ref.modules():  # Gaussian widths: keep them in range so the clamp does not dominate
        if hasattr(module, "std_param"):
            module.std_param.data.uniform_(0.5, 1.5)
    copy_state(ref, mine)
    return ref, mine


def check(
    ref: nn.Module,
    mine: nn.Module,
    rows: int,
    grid_w: int = 4,
    width: int = D,
    conditioning: torch.Tensor | None = None,
):
    tokens = rows * grid_w
    x = torch.randn(2, tokens, width)
    kwargs = {} if conditioning is None else {"conditioning": conditioning}
    assert_parity(mine(x, **kwargs), ref(x, **kwargs))
    assert mine.flop_count(tokens) == ref.flop_count(tokens)
    assert mine.flop_count(tokens, inference=True) == ref.flop_count(tokens, inference=True)


# --------------------------------------------------------------------------------------------------


def _identity(ns: SimpleNamespace, width: int) -> object:
    return ns.L(nn.Identity)()


CASES = {
    "default": {},
    "single-zero": {"grid_type": "single"},
    "circular": {"grid_type": "single", "fft_padding": "circular"},
    "mixed-circular-zero": {"grid_type": None, "fft_padding": ("circular", "zero")},
    "mixed-zero-circular": {"grid_type": None, "fft_padding": ("zero", "circular")},
    "chunked": {"chunked": True},
    "exponential": {"mask": ("Exponential",)},
    "gaussian-direct": {"mask": ("Gaussian", "direct")},
    "gaussian-log": {"mask": ("Gaussian", "log")},
    "gaussian-softplus": {"mask": ("Gaussian", "softplus"), "grid_type": "single", "fft_padding": "circular"},
    "block-aligned": {
        "mask": ("BlockAligned", "direct"),
        "grid_type": None,
        "fft_padding": ("circular", "zero"),
    },
    "identity-short-conv": {"hyena": {"short_conv_cfg": _identity}},
    "no-qk-norm": {"hyena": {"qk_norm_cfg": lambda ns, w: None}},
    "linear-gate-k-norm": {
        "hyena": {
            "gate_nonlinear_cfg": _identity,
            "qk_norm_cfg": lambda ns, w: ns.L(ns.RMSNorm)(dim=w, eps=1e-6),
        }
    },
    "shared-gate-2": {
        "hyena": {
            "gate_nonlinear_cfg": lambda ns, w: ns.L(nn.PReLU)(),
            "gate_nonlinear_2_cfg": lambda ns, w: None,
        }
    },
    "groupnorm": {
        "hyena": {
            "pixelhyena_norm_cfg": lambda ns, w: ns.L(nn.GroupNorm)(num_groups=2, num_channels=w),
            "output_norm_cfg": lambda ns, w: ns.L(nn.GroupNorm)(num_groups=4, num_channels=w),
        }
    },
    "identity-output-norm": {"hyena": {"output_norm_cfg": _identity}},
}


@pytest.mark.parametrize("case", list(CASES))
def test_parity_configurations(case: str) -> None:
    ref, mine = pair(**CASES[case])
    check(ref, mine, rows=5)


@pytest.mark.parametrize("film_after", [False, True])
def test_parity_film_conditioning_through_the_stack(film_after: bool) -> None:
    ref, mine = pair(film_layers=2 + film_after, film_after=film_after)
    check(ref, mine, rows=5, conditioning=torch.randn(2, 6))
    check(ref, mine, rows=5)  # without conditioning: the plain kernel


def test_parity_l_cache_growth_then_smaller() -> None:
    ref, mine = pair(L_cache=(3, 4), grid_w=4)
    for rows in (3, 6, 2, 6, 3):  # 6 rows > L_cache 3: the cache grows once, then smaller grids again
        check(ref, mine, rows=rows)
    ref_cache = ref.inner_mixer.mixer.global_conv.kernel.positional_embedding.grid_cache
    # coordinate grids are data: the reference's values exactly
    assert torch.equal(mine.inner_mixer.mixer.global_conv.kernel.positional_embedding.grid_cache, ref_cache)


def test_parity_anisotropic_l_cache_on_matching_grid() -> None:
    ref, mine = pair(L_cache=(5, 4), grid_w=4)
    check(ref, mine, rows=5)
    ref, mine = pair(L_cache=(4, 6), grid_w=6, fft_padding=("circular", "zero"), grid_type=None)
    check(ref, mine, rows=4, grid_w=6)


def test_parity_hyena_s_shapes() -> None:
    """The ViT-5-S Hyena mixer itself (D 384, SIREN 32, L_cache 14) on its 14 x 14 grid."""
    ref, mine = pair(width=384, L_cache=14, grid_w=14, siren_width=32)
    shapes = {key: tuple(value.shape) for key, value in mine.state_dict().items()}
    assert shapes["inner_mixer.mixer.short_conv.weight"] == (1152, 1, 3, 3)
    assert shapes["inner_mixer.qkv_proj.weight"] == (1152, 384)
    assert sum(p.numel() for p in mine.parameters()) == 616_224
    x = torch.randn(1, 196, 384)
    assert_parity(mine(x), ref(x))
    assert mine.flop_count(196) == ref.flop_count(196) == 302_618_971


def test_reference_crashes_that_vit5_fixes() -> None:
    reference, ours = namespaces()
    ref = build(reference)
    mine = build(ours)
    x = torch.randn(2, 20, D)
    with pytest.raises(AssertionError), torch.autocast("cpu", dtype=torch.bfloat16):
        ref(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert mine(x).dtype == torch.bfloat16
    with pytest.raises(AssertionError):
        ref.to(torch.bfloat16)(x.bfloat16())
    assert mine.to(torch.bfloat16)(x.bfloat16()).dtype == torch.bfloat16
