"""The performance paths give the results of the plain ones: spectrum cache, low-memory FFT-conv
backward, packed q/k/v in Hyena, and a ``torch.compile`` smoke test of tiny networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers import randomize_
from tests.modules.test_ckconv import kernel_cfg, make
from tests.modules.test_hyena import hyena_cfg
from vit5.config import LazyConfig, instantiate
from vit5.modules import ckconv as ckconv_module
from vit5.modules.ckconv import CKConvND
from vit5.modules.masks import GaussianModulationND
from vit5.networks.presets import vit5_config
from vit5.ops import longconv_plan, native
from vit5.ops.denseconv import dense_conv_operator

D = 6


def _uncached(conv: CKConvND, x: torch.Tensor) -> torch.Tensor:
    """The output computed from a freshly generated kernel (cache emptied first): the same path as
    a cached call, so a correct cache is a no-op and gives the same bits."""
    conv._spectrum_cache = None
    with torch.no_grad():
        y = conv(x)
    conv._spectrum_cache = None
    return y


def test_eval_spectrum_cache_is_reused_and_gives_identical_outputs() -> None:
    torch.manual_seed(0)
    conv = randomize_(make()).eval()
    x = torch.randn(2, 5, 4, D)
    expected = _uncached(conv, x)
    with torch.inference_mode():
        first = conv(x)
    cache = conv._spectrum_cache
    assert cache is not None
    with torch.no_grad():
        second = conv(x)
    assert conv._spectrum_cache is cache  # reused, not rebuilt
    assert torch.equal(first, expected) and torch.equal(second, expected)
    conv.eval()  # eval() again keeps the cache
    assert conv._spectrum_cache is cache


def test_cache_is_not_used_with_autograd_or_in_training() -> None:
    conv = randomize_(make()).eval()
    x = torch.randn(2, 5, 4, D)
    conv(x).sum().backward()  # eval mode but with autograd: gradients reach the kernel
    assert conv._spectrum_cache is None
    assert conv.kernel.out_linear.weight.grad is not None
    conv.train()
    with torch.no_grad():
        conv(x)
    assert conv._spectrum_cache is None


@pytest.mark.parametrize(
    "change", ["optimizer_step", "load_state_dict", "train", "in_place_edit", "to_double"]
)
def test_cache_is_invalidated_when_the_kernel_changes(change: str) -> None:
    torch.manual_seed(1)
    conv = randomize_(make()).eval()
    x = torch.randn(2, 5, 4, D)
    with torch.no_grad():
        before = conv(x)
    assert conv._spectrum_cache is not None
    if change == "optimizer_step":
        conv.train()
        conv(x).square().sum().backward()
        torch.optim.SGD(conv.parameters(), lr=0.1).step()
        conv.eval()
    elif change == "load_state_dict":
        conv.load_state_dict(randomize_(make(), seed=5).state_dict())
    elif change == "train":
        conv.train()
        assert conv._spectrum_cache is None
        conv.eval()
    elif change == "in_place_edit":
        with torch.no_grad():
            conv.kernel.hidden_linears[0].weight.mul_(1.5)
    else:
        conv.double()
        x = x.double()
    with torch.no_grad():
        after = conv(x)
    assert torch.equal(after, _uncached(conv, x))
    if change != "train":
        assert not torch.allclose(after.float(), before)


def test_cache_follows_input_size_and_grid_growth() -> None:
    torch.manual_seed(2)
    conv = randomize_(make()).eval()  # L_cache (5, 4)
    for size in [(5, 4), (3, 2), (7, 6), (5, 4), (5, 4)]:  # growth at (7, 6) changes the grid
        x = torch.randn(2, *size, D)
        with torch.no_grad():
            y = conv(x)
        assert torch.equal(y, _uncached(conv, x)), size


def test_cache_with_a_mask_that_clamps_in_place() -> None:
    mask = LazyConfig(GaussianModulationND)(data_dim=2, num_channels=D, grid_size=9)
    conv = randomize_(make(mask_cfg=mask), low=0.2, high=0.8).eval()
    x = torch.randn(1, 5, 4, D)
    with torch.no_grad():
        assert torch.equal(conv(x), conv(x))
        assert torch.equal(conv(x), _uncached(conv, x))


@pytest.mark.parametrize(
    "channels_first, dense_train_bytes",
    [(False, 0), (True, 0), (False, longconv_plan.BUILT_DENSE_MAX_BYTES)],
    ids=["channels-last-fft", "channels-first-fft", "channels-last-dense"],
)
def test_training_path_matches_autograd_of_the_plain_path(
    channels_first: bool, dense_train_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CKConvND's training paths (low-memory FFT backward; dense operator on tiny channels-last
    grids) vs autograd through the spectrum path (chunked config)."""
    monkeypatch.setattr(longconv_plan, "BUILT_DENSE_MAX_BYTES", dense_train_bytes)
    built = []
    monkeypatch.setattr(
        ckconv_module, "dense_conv_operator", lambda *a: built.append(1) or dense_conv_operator(*a)
    )
    torch.manual_seed(3)
    lowmem = randomize_(make())
    plain = make(use_chunked_fftconv=True)  # chunked: plain autograd through rfftn/irfftn
    plain.load_state_dict(lowmem.state_dict())
    x = torch.randn(2, 5, 4, D)
    if channels_first:
        x = x.movedim(-1, 1).contiguous()
    weight = torch.randn_like(x)
    grads = []
    for conv in (lowmem, plain):
        xi = x.clone().requires_grad_()
        y = conv(xi, is_bhl_input=channels_first)
        (y * weight).sum().backward()
        grads.append((y.detach(), xi.grad, [p.grad for p in conv.parameters()]))
    assert bool(built) == (dense_train_bytes > 0)  # the path under test was taken
    (y0, gx0, gp0), (y1, gx1, gp1) = grads
    torch.testing.assert_close(y0, y1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx0, gx1, rtol=1e-4, atol=1e-4)
    for a, b in zip(gp0, gp1):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_training_path_with_per_sample_kernels() -> None:
    torch.manual_seed(4)
    lowmem = randomize_(make(kernel_cfg=kernel_cfg(film=2)), low=-0.5, high=0.5)
    plain = make(kernel_cfg=kernel_cfg(film=2), use_chunked_fftconv=True)
    plain.load_state_dict(lowmem.state_dict())
    x, cond = torch.randn(2, 5, 4, D), torch.randn(2, 3)
    grads = []
    for conv in (lowmem, plain):
        xi = x.clone().requires_grad_()
        conv(xi, conditioning=cond).square().sum().backward()
        grads.append((xi.grad, [p.grad for p in conv.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-4, atol=1e-4)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_hyena_packed_input_matches_separate_tensors() -> None:
    """``forward_packed(qkv)`` is ``forward(*qkv.split(...))`` (the same computation: the same
    bits), with the same gradients for the packed tensor and the parameters."""
    torch.manual_seed(5)
    hyena = randomize_(instantiate(hyena_cfg()))
    qkv = torch.randn(2, 5, 4, 24, requires_grad=True)
    weight = torch.randn(2, 5, 4, 8)
    (hyena.forward_packed(qkv) * weight).sum().backward()
    packed_grad, packed_params = qkv.grad.clone(), [p.grad.clone() for p in hyena.parameters()]
    hyena.zero_grad()
    qkv.grad = None
    separate = [t.clone() for t in qkv.split(8, dim=-1)]  # three separate tensors: concatenated
    (hyena(*separate) * weight).sum().backward()
    torch.testing.assert_close(qkv.grad, packed_grad, rtol=0, atol=0)
    for a, b in zip(packed_params, (p.grad for p in hyena.parameters())):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("pattern, readout", [("A", "cls"), ("H", "gap"), ("HA", "cls")])
def test_torch_compile_tiny_networks_on_cpu(pattern: str, readout: str) -> None:
    """``torch.compile`` (inductor, CPU) runs the networks and matches eager, forward and backward."""
    cfg = vit5_config(
        hidden_dim=32, num_blocks=2, num_heads=2, pattern=pattern, patch_size=4, image_size=16,
        num_classes=5, num_registers=4 if readout == "cls" else 0, readout=readout, siren_hidden_dim=8,
    )  # fmt: skip
    torch.manual_seed(6)
    model = randomize_(instantiate(cfg), low=-0.3, high=0.3)
    compiled = torch.compile(model)
    x = torch.randn(2, 16, 16, 3)
    model.eval()
    with torch.no_grad():
        expected = model({"input": x})["logits"]
        torch.testing.assert_close(compiled({"input": x})["logits"], expected, rtol=1e-4, atol=1e-4)
    model.train()
    compiled({"input": x})["logits"].square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model({"input": x})["logits"].square().sum().backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(grads[name], parameter.grad, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("context", [torch.no_grad, torch.enable_grad])
def test_the_mixer_hands_hyena_its_projection_without_a_concatenation(
    context, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vit5.modules import hyena as hyena_module
    from vit5.modules.qkv_mixer import QKVSequenceMixer

    torch.manual_seed(6)
    mixer = QKVSequenceMixer(hidden_dim=8, mixer_cfg=hyena_cfg())
    x = torch.randn(2, 5, 4, 8)
    with context():
        expected = mixer(x)

        def no_cat(*args):
            raise AssertionError("the mixer concatenated q, k and v again")

        monkeypatch.setattr(hyena_module, "_packed", no_cat)
        torch.testing.assert_close(mixer(x), expected, rtol=0, atol=0)  # the same computation


@pytest.mark.parametrize("short_conv", [True, False], ids=["short-conv", "no-short-conv"])
@pytest.mark.parametrize(
    "gates", [(nn.SiLU, nn.Sigmoid), (nn.Identity, nn.Identity)], ids=["silu-sigmoid", "identity"]
)
def test_hyena_inference_gates_in_place_give_the_plain_bits(gates, short_conv) -> None:
    """Without autograd (and without the fused CPU kernels) the gate products go into the
    activations' outputs: the same bits as the plain products (a hook turns that path off),
    inputs untouched, Identity gates never written."""
    first, second = gates
    extra = {} if short_conv else {"short_conv_cfg": LazyConfig(nn.Identity)()}
    cfg = hyena_cfg(
        gate_nonlinear_cfg=LazyConfig(first)(), gate_nonlinear_2_cfg=LazyConfig(second)(), **extra
    )
    hyena = randomize_(instantiate(cfg), seed=3).eval()
    q, k, v = torch.randn(3, 2, 5, 4, 8).unbind(0)
    originals = [t.clone() for t in (q, k, v)]
    with torch.inference_mode(), native.disabled():
        fast = hyena(q, k, v)
        handle = hyena.gate_nonlinear.register_forward_hook(lambda module, args, out: None)
        plain = hyena(q, k, v)
        handle.remove()
        separate = hyena(*(t.clone() for t in (q, k, v)))
    assert torch.equal(fast, plain) and torch.equal(fast, separate)  # eval's in-place gates: training's bits
    assert all(torch.equal(t, o) for t, o in zip((q, k, v), originals))


def test_identity_short_conv_path_still_runs() -> None:
    hyena = instantiate(hyena_cfg(short_conv_cfg=LazyConfig(nn.Identity)()))
    q, k, v = torch.randn(3, 2, 5, 4, 8).unbind(0)
    assert hyena(q, k, v).shape == (2, 5, 4, 8)


def test_small_grids_use_the_cached_dense_operator_in_eval() -> None:
    torch.manual_seed(7)
    conv = randomize_(make()).eval()
    x = torch.randn(2, 5, 4, D)
    with torch.no_grad():
        y = conv(x)
        assert conv._spectrum_cache[2].shape == (D, 20, 20)  # the dense operator, not a spectrum
        fft = conv(x.movedim(-1, 1).contiguous(), is_bhl_input=True)  # channels-first: FFT path
    assert isinstance(conv._spectrum_cache[2], tuple)
    torch.testing.assert_close(y, fft.movedim(1, -1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["dense", "fft", "fft-pytorch", "dft"])
def test_eval_path_is_bit_identical_to_the_training_forward(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Channels-last eval gives the bits of the training forward, in fp32 and bf16. ``dense`` (small
    grids): eval adds the cached operator's product straight into the shortcut term, training uses
    the differentiable operator. ``fft``: fp32 runs the fused CPU kernel (vit5.ops.fftnative) in
    both, from the cached spectrum in eval; bf16 (and ``fft-pytorch``, the kernels switched off)
    accumulates the spectrum chunk by chunk (several chunks here) into the shortcut term in eval,
    training uses the low-memory FFT path. ``dft``: eval
    applies the cached kernel spectrum through reused chunk buffers, training the autograd
    function that keeps the input's spectrum (several batch chunks here)."""
    from vit5.ops import dftconv

    dense = path == "dense"
    monkeypatch.setattr(longconv_plan, "DENSE_MAX_BYTES", 1 << 30 if dense else 0)
    monkeypatch.setattr(longconv_plan, "BUILT_DENSE_MAX_BYTES", 1 << 30 if dense else 0)
    if path.startswith("fft"):
        monkeypatch.setattr(longconv_plan, "DFT_MAX_SIGNAL", 0)
    if path == "fft-pytorch":
        monkeypatch.setenv(native.ENV_SWITCH, "0")
    if path == "dft":
        monkeypatch.setattr(longconv_plan, "FUSED_MAX_SIGNAL", 0)
    monkeypatch.setattr(dftconv, "CHUNK_BYTES", 1)  # one sample per chunk
    torch.manual_seed(12)
    channels = 40
    conv = randomize_(make(hidden_dim=channels, kernel_cfg=kernel_cfg(out_dim=channels)))
    x = torch.randn(3, 5, 4, channels)
    for dtype in (torch.float32, torch.bfloat16):
        xd = x.to(dtype)
        trained = conv.train()(xd.clone().requires_grad_())
        with torch.inference_mode():
            evaluated = conv.eval()(xd)
        cached = conv._spectrum_cache[2]
        if path == "dense":
            assert cached.shape == (channels, 20, 20)  # the operator
        elif path == "dft":
            assert cached.shape == (1, 5, 2, 7 * channels)  # [1, F1', 2, F2 C] at sizes (9, 7)
        elif path == "fft" and dtype == torch.float32 and native.library() is not None:
            assert cached.shape == (
                3,
                66,
                4,
                8,
            )  # fused layout: 3 groups of 16 channels, sizes (16, 8): 16 * 8 / 2 + 2
        else:
            assert isinstance(cached, tuple)  # the split torch.fft spectrum
        assert evaluated.dtype == dtype and evaluated.shape == x.shape
        assert torch.equal(evaluated, trained.detach())
