"""Graph capture of the long convolution (torch.export, ONNX, compile) through the planner's traced
paths, and a model alternating between inference and training (no cache leaks into autograd)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.helpers import randomize_
from tests.modules.test_ckconv import kernel_cfg, make
from vit5.networks import vit5_classification
from vit5.networks.presets import create_model
from vit5.ops import longconv_plan

D = 6


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a - b| / max|b|``."""
    return float((a.detach() - b.detach()).abs().max() / b.detach().abs().max())


class _Conv(nn.Module):
    def __init__(self, conv: nn.Module, channels_first: bool) -> None:
        super().__init__()
        self.conv, self.channels_first = conv, channels_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, is_bhl_input=self.channels_first)


def _fft_ops(program: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    return [n for n in program.graph.nodes if n.op == "call_function" and "fft" in str(n.target)]


def _has(program: torch.export.ExportedProgram, op: str) -> bool:
    return any(n.op == "call_function" and f"aten.{op}." in str(n.target) for n in program.graph.nodes)


CASES = {
    "zero-dense": (dict(), False, (5, 4)),
    "zero-fft": (dict(), False, (5, 4)),
    "circular": (dict(grid_type="single", fft_padding="circular"), False, (6, 5)),
    "mixed": (dict(grid_type=None, fft_padding=["circular", "zero"]), False, (6, 5)),
    "channels-first": (dict(), True, (5, 4)),
    "causal-1d": (
        dict(data_dim=1, kernel_cfg=kernel_cfg(L_cache=7, data_dim=1), is_causal=True),
        True,
        (7,),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_torch_export_matches_eager(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides, channels_first, spatial = CASES[case]
    if case != "zero-dense":
        monkeypatch.setattr(longconv_plan, "BUILT_DENSE_MAX_BYTES", 0)
    torch.manual_seed(0)
    module = _Conv(randomize_(make(**overrides), low=-0.5, high=0.5), channels_first).eval()
    shape = (3, D, *spatial) if channels_first else (3, *spatial, D)
    x, x5 = torch.randn(shape), torch.randn((5, *shape[1:]))
    with torch.no_grad():
        expected = module(x5)
    module.conv._spectrum_cache = None
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(module, (x,), dynamic_shapes=({0: batch},))
    assert module.conv._spectrum_cache is None  # the captured call left no cache behind
    assert rel(program.module()(x5), expected) <= 1e-5
    # the planner's choice: the dense operator (a bmm), or DFT matrices (no FFT ops under export)
    assert not _fft_ops(program)
    assert _has(program, "bmm") == (case == "zero-dense")
    assert _has(program, "matmul") == (case != "zero-dense")


def test_torch_compile_uses_the_traced_paths_with_gradients() -> None:
    torch.manual_seed(1)
    eager = randomize_(make(), low=-0.5, high=0.5)
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, backend="eager", fullgraph=True)
    x = torch.randn(2, 5, 4, D)
    weight = torch.randn_like(x)
    (eager(x) * weight).sum().backward()
    (compiled(x) * weight).sum().backward()
    for a, b in zip(eager.parameters(), compiled_module.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5)


def _network(name: str, monkeypatch: pytest.MonkeyPatch, **overrides: object) -> nn.Module:
    # The data-dependent finiteness check of the input is the export helper's (it skips it under
    # capture); here the network is exported past it.
    monkeypatch.setattr(vit5_classification, "check_images", lambda x, *args: x)

    class Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = create_model(name, **overrides)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net({"input": x})["logits"]

    return Logits().eval()


NETWORKS = {
    "tiny-hyena-padded": ("vit5_tiny_hyena", {}),
    "tiny-hybrid": ("vit5_tiny_hybrid", {}),
    "small-hyena-gap": ("vit5_small_hyena_gap", {"num_blocks": 1}),
}


@pytest.mark.parametrize("network", list(NETWORKS))
def test_torch_export_of_networks_matches_eager(network: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name, overrides = NETWORKS[network]
    model = _network(name, monkeypatch, **overrides)
    size = model.net.image_size
    x, x3 = torch.randn(2, size, size, 3), torch.randn(3, size, size, 3)
    with torch.no_grad():
        expected = model(x3)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    assert rel(program.module()(x3), expected) <= 1e-5
    # ViT-5-S at 224 px exports its long convolutions as DFT matrices, tiny 8x8 grids as dense operators
    assert not _fft_ops(program)
    assert _has(program, "bmm") == (network != "small-hyena-gap")


def _onnx_run(module: nn.Module, example: torch.Tensor, x: torch.Tensor, path) -> torch.Tensor:
    """Export ``module`` (dynamo, dynamic batch) traced on ``example``; run it on ``x`` in onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(module, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(out)


@pytest.mark.slow
@pytest.mark.parametrize("network", list(NETWORKS))
def test_onnx_export_of_networks_matches_eager(
    network: str, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    name, overrides = NETWORKS[network]
    model = _network(name, monkeypatch, **overrides)
    size = model.net.image_size
    x, x3 = torch.randn(2, size, size, 3), torch.randn(3, size, size, 3)
    with torch.no_grad():
        expected = model(x3)
    logits = _onnx_run(model, x, x3, tmp_path / "model.onnx")
    assert rel(logits, expected) <= 1e-4
    size_mb = sum(p.stat().st_size for p in tmp_path.iterdir()) / 2**20
    assert size_mb < 40  # ViT-5-S at 224 px: DFT matrices, not a dense [C, T, T] constant per block


def test_onnx_export_of_the_fft_path(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The convolution that eager and compiled calls run on the fused ``vit5::`` FFT operators
    (channels-last fp32 on a CPU, no dense operator) exports as standard ONNX operators only."""
    monkeypatch.setattr(longconv_plan, "BUILT_DENSE_MAX_BYTES", 0)
    torch.manual_seed(2)
    module = _Conv(randomize_(make(), low=-0.5, high=0.5), False).eval()
    x, x5 = torch.randn(3, 5, 4, D), torch.randn(5, 5, 4, D)
    with torch.no_grad():
        expected = module(x5)
    assert rel(_onnx_run(module, x, x5, tmp_path / "conv.onnx"), expected) <= 1e-4
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tmp_path / "conv.onnx"))
    nodes = [*model.graph.node, *(n for function in model.functions for n in function.node)]
    found = {(n.domain, n.op_type) for n in nodes}
    assert found and not any("vit5" in f"{domain}{op}".lower() for domain, op in found), found
    assert {domain for domain, _ in found} <= {"", "ai.onnx", "pkg.onnxscript.torch_lib.common"}, found


@pytest.mark.parametrize("path", ["dense", "dft", "fused"])
def test_alternating_inference_and_training_never_reuses_an_inference_cache(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One model object: eval without autograd (builds the cache: the dense operator, the DFT
    kernel spectrum or the fused FFT kernel's spectrum), eval with autograd, a training step, eval
    again: every output equals that of a fresh copy with the same weights."""
    if path != "dense":
        monkeypatch.setattr(longconv_plan, "BUILT_DENSE_MAX_BYTES", 0)
    if path == "dft":
        monkeypatch.setattr(longconv_plan, "FUSED_MAX_SIGNAL", 0)
    torch.manual_seed(3)
    model = _LogitsOf(create_model("vit5_tiny_hybrid"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(2, 32, 32, 3)
    for _ in range(2):
        fresh = copy.deepcopy(model)
        for module in fresh.modules():
            if hasattr(module, "_spectrum_cache"):
                module._spectrum_cache = None
        model.eval()
        with torch.no_grad():
            cached = model(x)
            assert torch.equal(model(x), cached)  # second call reads the cache
        caches = [m._spectrum_cache for m in model.modules() if hasattr(m, "_spectrum_cache")]
        # [C, T, T] operator, [1, F1', 2, F2 C] spectrum or the fused kernel's [G, F_h F_w / 2 + 2, 4, 8]
        layout = {"dense": (3, None), "dft": (4, 2), "fused": (4, 4)}[path]
        assert caches and all(
            c is not None and (c[2].ndim, c[2].shape[2] if c[2].ndim == 4 else None) == layout for c in caches
        )
        with_grad = model(x)  # eval mode, autograd on: the cache must not be read
        assert with_grad.requires_grad
        with torch.no_grad():
            reference = fresh.eval()(x)
        torch.testing.assert_close(cached, reference, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(with_grad.detach(), reference, rtol=1e-5, atol=1e-5)
        model.train()
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        optimizer.step()  # changes every kernel: the next eval must not see the old cache


class _LogitsOf(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net({"input": x})["logits"]
