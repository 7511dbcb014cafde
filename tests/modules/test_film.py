"""KernelFiLMGenerator: layout, init, weight-decay tags, validation, flop_count, reference parity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import assert_parity, copy_state, randomize_, requires_reference
from vit5.modules.film import KernelFiLMGenerator


def test_identity_init_and_pair_layout() -> None:
    generator = KernelFiLMGenerator(cond_dim=5, kernel_hidden_dim=4, num_film_layers=3)
    pairs = generator(torch.randn(2, 5))
    assert len(pairs) == 3
    for gamma, beta in pairs:
        assert gamma.shape == beta.shape == (2, 4)
        assert torch.equal(gamma, torch.ones(2, 4)) and torch.equal(beta, torch.zeros(2, 4))
    assert torch.count_nonzero(generator.mlp[2].weight) == 0
    assert generator.mlp[0].weight.shape == (64, 5) and generator.mlp[2].weight.shape == (24, 64)


def test_forward_formula_and_slicing() -> None:
    torch.manual_seed(0)
    generator = randomize_(
        KernelFiLMGenerator(cond_dim=3, kernel_hidden_dim=2, num_film_layers=2, film_hidden_dim=7)
    )
    c = torch.randn(4, 3)
    w1, b1, w2, b2 = (p.detach() for p in generator.parameters())
    u = F.gelu(c @ w1.T + b1, approximate="none") @ w2.T + b2  # exact erf GELU
    pairs = generator(c)
    for layer, (gamma, beta) in enumerate(pairs):
        torch.testing.assert_close(gamma, u[:, 4 * layer : 4 * layer + 2])
        torch.testing.assert_close(beta, u[:, 4 * layer + 2 : 4 * layer + 4])


def test_small_random_init() -> None:
    torch.manual_seed(0)
    generator = KernelFiLMGenerator(
        cond_dim=3, kernel_hidden_dim=16, num_film_layers=4, init_type="small_random", init_std=1e-3
    )
    std = generator.mlp[2].weight.std().item()
    assert 0.9e-3 < std < 1.1e-3
    bias = generator.mlp[2].bias.view(4, 2, 16)
    assert torch.equal(bias[:, 0], torch.ones(4, 16)) and torch.equal(bias[:, 1], torch.zeros(4, 16))


@pytest.mark.parametrize("setting", [False, True, 0.5])
def test_weight_decay_tags(setting: object) -> None:
    generator = KernelFiLMGenerator(
        cond_dim=3, kernel_hidden_dim=4, num_film_layers=1, no_weight_decay=setting
    )
    for name, parameter in generator.named_parameters():
        if name.endswith("bias") or setting is True:
            assert parameter._no_weight_decay is True
        elif setting is False:
            assert not hasattr(parameter, "_no_weight_decay") and not hasattr(parameter, "_weight_decay")
        else:
            assert parameter._weight_decay == 0.5 and not hasattr(parameter, "_no_weight_decay")


@pytest.mark.parametrize(
    "overrides,error",
    [
        ({"init_type": "zeros"}, ValueError),
        ({"num_film_layers": 0}, ValueError),
        ({"cond_dim": 2.0}, TypeError),
        ({"no_weight_decay": "yes"}, TypeError),
        ({"no_weight_decay": -0.1}, ValueError),
        ({"init_std": -1.0}, ValueError),
    ],
)
def test_validation(overrides: dict, error: type) -> None:
    with pytest.raises(error):
        KernelFiLMGenerator(**{"cond_dim": 3, "kernel_hidden_dim": 4, "num_film_layers": 2, **overrides})


def test_wrong_conditioning_shape() -> None:
    generator = KernelFiLMGenerator(cond_dim=3, kernel_hidden_dim=4, num_film_layers=2)
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        generator(torch.randn(2, 4))


def test_flop_count() -> None:
    generator = KernelFiLMGenerator(cond_dim=6, kernel_hidden_dim=16, num_film_layers=2)
    assert generator.flop_count() == 2 * 6 * 64 + 64 + 2 * 64 * 64 == 9024


@pytest.mark.parametrize("init_type", ["identity", "small_random"])
@pytest.mark.parity
@requires_reference
def test_parity_with_reference(init_type: str) -> None:
    from nvsubquadratic.modules.film import KernelFiLMGenerator as Reference

    kw = dict(cond_dim=5, kernel_hidden_dim=4, num_film_layers=3, film_hidden_dim=16, init_type=init_type)
    torch.manual_seed(0)
    ref = Reference(**kw)
    torch.manual_seed(0)
    ours = KernelFiLMGenerator(**kw)
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key  # same init, same RNG order
    randomize_(ref)
    copy_state(ref, ours)
    c = torch.randn(2, 5)
    for (g_ours, b_ours), (g_ref, b_ref) in zip(ours(c), ref(c), strict=True):
        assert_parity(g_ours, g_ref)
        assert_parity(b_ours, b_ref)
    assert ours.flop_count() == ref.flop_count()
