"""The kernel family of nvsubquadratic.modules.kernels_nd (0.2.0) and RMSNormChannelFirst: parity,
parameter names, validation, and use inside CKConvND / Hyena."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vit5
from tests.helpers import assert_parity, copy_state, requires_reference
from vit5.config import LazyConfig, instantiate
from vit5.config.registry import resolve_config_target
from vit5.modules import (
    BlockDiagonalLearnableOmegaSIRENKernelND,
    BlockDiagonalMultiOmegaSIRENKernelND,
    CKConvND,
    LearnableOmegaSIRENKernelND,
    LearnableOmegaSIRENPositionalEmbeddingND,
    MultiOmegaSIRENKernelND,
    MultiOmegaSIRENPositionalEmbeddingND,
    RandomFourierKernelND,
    RandomFourierPositionalEmbeddingND,
    RMSNormChannelFirst,
)

BASE = dict(out_dim=8, data_dim=2, mlp_hidden_dim=8, num_layers=3, embedding_dim=8, L_cache=5, use_bias=True)
KERNELS = {
    "MultiOmegaSIRENKernelND": (MultiOmegaSIRENKernelND, dict(omega_0_per_row=[1.0, 2, 3, 4, 5, 6, 7, 8.5])),
    "BlockDiagonalMultiOmegaSIRENKernelND": (BlockDiagonalMultiOmegaSIRENKernelND, dict(num_blocks=4)),
    "BlockDiagonalMultiOmegaSIRENKernelND-log": (
        BlockDiagonalMultiOmegaSIRENKernelND, dict(num_blocks=2, schedule="log", omega_0_min=2.0, omega_0_max=20.0,
                                                   off_block_scale=0.0, hidden_omega_0=3.0)),
    "BlockDiagonalMultiOmegaSIRENKernelND-given": (
        BlockDiagonalMultiOmegaSIRENKernelND, dict(num_blocks=2, omega_0_per_block=[3.0, 9.0])),
    "LearnableOmegaSIRENKernelND": (LearnableOmegaSIRENKernelND, dict(omega_0=6.0, omega_0_scale_init=0.5)),
    "LearnableOmegaSIRENKernelND-rows": (
        LearnableOmegaSIRENKernelND, dict(omega_0=6.0, omega_0_scale_init=[0.5, 1, 1.5, 2, 0.1, 0.2, 0.3, 1.0],
                                          apply_lr_scale=True)),
    "BlockDiagonalLearnableOmegaSIRENKernelND": (BlockDiagonalLearnableOmegaSIRENKernelND, dict(num_blocks=4)),
    "RandomFourierKernelND": (
        RandomFourierKernelND, dict(omega_0=2.0, nonlinear_cfg=LazyConfig(nn.GELU)())),
}  # fmt: skip


def _reference(name: str, kwargs: dict) -> nn.Module:
    from nvsubquadratic.lazy_config import LazyConfig as RefLazy
    from nvsubquadratic.modules import kernels_nd

    kwargs = dict(kwargs)
    if "nonlinear_cfg" in kwargs:
        kwargs["nonlinear_cfg"] = RefLazy(nn.GELU)()
    return getattr(kernels_nd, name.split("-")[0])(**kwargs)


@pytest.mark.parity
@requires_reference
@pytest.mark.parametrize("name", list(KERNELS))
def test_kernel_parity_with_the_reference(name):
    cls, extra = KERNELS[name]
    kwargs = {**BASE, **extra}
    torch.manual_seed(0)
    reference = _reference(name, kwargs)
    torch.manual_seed(0)
    ours = cls(**kwargs)
    if not name.startswith("RandomFourier"):  # same draws in the same order: same init
        for (key, theirs), (_, mine) in zip(
            reference.state_dict().items(), ours.state_dict().items(), strict=True
        ):
            assert torch.equal(theirs, mine), key
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    copy_state(reference, ours)
    for lens in [(5, 5), (3, 4), (7, 6)]:  # inside the cache, and growing it once (bit-identical growth)
        theirs, their_grid = reference(seq_lens=lens)
        mine, grid = ours(lens)
        assert mine.shape == (1, 2 * lens[0] - 1, 2 * lens[1] - 1, 8)
        assert_parity(mine, theirs)
        assert_parity(grid, their_grid)
    for buffer in ("omega_0_per_row", "omega_0_per_block"):
        if hasattr(reference, buffer):
            # constant tables: the reference's values exactly
            assert torch.equal(getattr(ours, buffer), getattr(reference, buffer))


@pytest.mark.parity
@requires_reference
def test_positional_embedding_parity():
    from nvsubquadratic.modules import kernels_nd

    cases = [
        (MultiOmegaSIRENPositionalEmbeddingND, dict(omega_0_per_row=[1.0, 2, 3, 4])),
        (LearnableOmegaSIRENPositionalEmbeddingND, dict(omega_0=3.0, omega_0_scale_init=[0.5, 1, 1.5, 2])),
        (RandomFourierPositionalEmbeddingND, dict(omega_0=1.5)),
    ]
    for cls, extra in cases:
        kwargs = dict(data_dim=2, embedding_dim=4, L_cache=4, **extra)
        reference = getattr(kernels_nd, cls.__name__)(**kwargs)
        ours = cls(**kwargs)
        copy_state(reference, ours)
        theirs, their_grid = reference(seq_lens=(4, 3))
        grid = ours.grid((4, 3))
        assert_parity(ours(grid), theirs)
        assert_parity(grid, their_grid)


@pytest.mark.parity
@requires_reference
def test_learnable_scale_is_clamped_like_the_reference():
    from nvsubquadratic.modules import kernels_nd

    kwargs = {**BASE, "omega_0": 4.0}
    reference = kernels_nd.LearnableOmegaSIRENKernelND(**kwargs)
    ours = LearnableOmegaSIRENKernelND(**kwargs)
    with torch.no_grad():
        reference.positional_embedding.omega_0_scale.copy_(torch.linspace(-1, 3, 8))
    copy_state(reference, ours)
    assert_parity(ours((4, 4))[0], reference(seq_lens=(4, 4))[0])
    # the same clamp on the same parameter: exact
    assert torch.equal(ours.positional_embedding.omega_0_scale, reference.positional_embedding.omega_0_scale)
    assert float(ours.positional_embedding.omega_0_scale.detach().min()) == pytest.approx(1e-2)


@pytest.mark.parity
@requires_reference
def test_rms_norm_channel_first_parity():
    from nvsubquadratic.modules.rms_norm_channel_first import RMSNormChannelFirst as Reference

    reference, ours = (
        Reference(6, eps=1e-5, use_quack=False),
        RMSNormChannelFirst(6, eps=1e-5, use_quack=False),
    )
    with torch.no_grad():
        reference.weight.uniform_(-2, 2)
    copy_state(reference, ours)
    for shape in [(2, 6, 5, 4), (3, 6, 7)]:
        x = torch.randn(shape) * 3
        assert_parity(ours(x), reference(x))
    x = torch.randn(2, 6, 3, 3).to(torch.bfloat16)
    assert ours(x).dtype == torch.bfloat16 and ours.channels_first and ours.weight._no_weight_decay


def test_rms_norm_channel_first_formula_and_errors():
    norm = RMSNormChannelFirst(3)
    x = torch.randn(2, 3, 4)
    expected = x / torch.sqrt(x.pow(2).mean(1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x), expected)
    with pytest.raises(ValueError, match=r"expects \[B, 3, \.\.\.\], got shape \(2, 4, 4\)"):
        norm(torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match="dim"):
        RMSNormChannelFirst(0)


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [(MultiOmegaSIRENKernelND, dict(omega_0_per_row=[1.0] * 7), "omega_0_per_row length"),
     (MultiOmegaSIRENKernelND, dict(omega_0_per_row=[1.0] * 7 + [0.0]), "strictly positive"),
     (MultiOmegaSIRENKernelND, dict(omega_0_per_row="fast"), "list of positive numbers"),
     (BlockDiagonalMultiOmegaSIRENKernelND, dict(num_blocks=3), "divisible by num_blocks=3"),
     (BlockDiagonalMultiOmegaSIRENKernelND, dict(schedule="cubic"), "schedule must be"),
     (BlockDiagonalMultiOmegaSIRENKernelND, dict(omega_0_min=5.0, omega_0_max=2.0), "omega_0_max must be >="),
     (BlockDiagonalMultiOmegaSIRENKernelND, dict(num_blocks=2, omega_0_per_block=[1.0]), "must equal num_blocks"),
     (LearnableOmegaSIRENKernelND, dict(omega_0=1.0, omega_0_scale_init=3.0), "must lie in"),
     (LearnableOmegaSIRENKernelND, dict(omega_0=1.0, omega_0_scale_min=0.0), "omega_0_scale_min"),
     (LearnableOmegaSIRENKernelND, dict(omega_0=1.0, omega_0_scale_min=2.0, omega_0_scale_max=1.0), ">= omega_0_scale_min"),
     (LearnableOmegaSIRENKernelND, dict(omega_0=1.0, omega_0_scale_init=[1.0, 1.0]), "8 values"),
     (RandomFourierKernelND, dict(omega_0=1.0, nonlinear_cfg=LazyConfig(nn.GELU)(), embedding_dim=7), "even"),
     (RandomFourierKernelND, dict(omega_0=1.0, nonlinear_cfg=LazyConfig(nn.GELU)(), num_layers=1), "num_layers"),
     (RandomFourierKernelND, dict(omega_0=1.0, nonlinear_cfg=None), "nonlinear_cfg")],
)  # fmt: skip
def test_invalid_arguments_are_one_line_errors(cls, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message) as error:
        cls(**{**BASE, **kwargs})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "name", ["BlockDiagonalMultiOmegaSIRENKernelND", "LearnableOmegaSIRENKernelND", "RandomFourierKernelND"]
)
def test_kernels_drive_ckconv_and_get_gradients(name):
    cls, extra = KERNELS[name]
    conv = CKConvND(
        hidden_dim=8, data_dim=2, kernel_cfg=LazyConfig(cls)(**{**BASE, **extra}), mask_cfg=None,
        fft_padding="zero", grid_type="double",
    )  # fmt: skip
    x = torch.randn(2, 5, 5, 8, requires_grad=True)
    y = conv(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [key for key, parameter in conv.named_parameters() if parameter.grad is None]
    assert not missing
    conv.eval()
    with torch.no_grad():
        assert torch.allclose(conv(x), conv(x))  # eval path (cached spectrum) is stable


def test_registered_under_their_reference_names():
    for name in [*{key.split("-")[0] for key in KERNELS}, "RMSNormChannelFirst", "RandomFourierPositionalEmbeddingND",
                 "MultiOmegaSIRENPositionalEmbeddingND", "LearnableOmegaSIRENPositionalEmbeddingND"]:  # fmt: skip
        module = "rms_norm_channel_first" if name == "RMSNormChannelFirst" else "kernels_nd"
        path = resolve_config_target(f"nvsubquadratic.modules.{module}.{name}")
        assert path.startswith("vit5.modules.") and path.endswith(name)
        assert getattr(vit5, name, None) is None or path.endswith(getattr(vit5, name).__qualname__)
    norm = instantiate(
        {
            "__target__": resolve_config_target(
                "nvsubquadratic.modules.rms_norm_channel_first.RMSNormChannelFirst"
            ),
            "dim": 4,
        }
    )
    assert isinstance(norm, RMSNormChannelFirst)
