"""Input checks vs graph capture: eager calls keep every check, capture keeps only static ones."""

from __future__ import annotations

import pytest
import torch

import vit5
from vit5.export import LogitsGraph
from vit5.networks.classification_checks import check_images

SMALL = dict(hidden_dim=32, num_heads=2, num_blocks=2, image_size=16)


def net() -> vit5.ViT5ClassificationNet:
    torch.manual_seed(0)
    return vit5.create_model("vit5_tiny_hybrid", **SMALL).eval()


def test_eager_calls_keep_their_errors():
    model = net()
    x = torch.randn(2, 16, 16, 3)
    with pytest.raises(ValueError, match=r"got \(2, 3, 16, 16\) \(it looks channels-first"):
        model({"input": x.permute(0, 3, 1, 2)})
    with pytest.raises(ValueError, match="floating-point"):
        model({"input": x.to(torch.int64)})
    with pytest.raises(ValueError, match="empty batch"):
        model({"input": x[:0]})
    x[1, 2, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="input contains 1 NaN or infinite values"):
        model({"input": x})
    model.finite_check = "never"
    assert torch.isnan(model({"input": x})["logits"][1]).all()
    model.finite_check = "sometimes"
    with pytest.raises(
        ValueError, match=r"finite_check must be one of \('cpu', 'always', 'never'\), got 'sometimes'"
    ):
        model({"input": x})


def test_finiteness_is_not_read_back_from_an_accelerator(monkeypatch):
    """The default checks CPU inputs only: on another device ``bool(...)`` would sync the host."""
    calls = []
    isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: calls.append(t.device.type) or isfinite(t))
    meta = torch.empty(2, 16, 16, 3, device="meta")  # stands in for a CUDA tensor: no values to read
    assert check_images(meta, 16, 3) is meta and calls == []
    with pytest.raises((RuntimeError, NotImplementedError)):
        check_images(meta, 16, 3, finite_check="always")  # would read the result back
    assert calls == ["meta"]
    check_images(torch.zeros(1, 16, 16, 3), 16, 3)
    assert calls == ["meta", "cpu"]


def test_export_keeps_static_checks_and_drops_data_dependent_ones():
    model = net()
    with pytest.raises(ValueError, match=r"input must have shape \[B, 16, 16, 3\]"):
        torch.export.export(LogitsGraph(model), (torch.randn(2, 3, 16, 16),))
    program = torch.export.export(
        LogitsGraph(model), (torch.randn(2, 16, 16, 3),), dynamic_shapes={"input": {0: torch.export.Dim("b")}}
    )
    x = torch.randn(3, 16, 16, 3)
    x[0, 0, 0, 0] = float("nan")
    out = program.module()(x)  # no check in the graph: NaN flows through, the other samples are fine
    assert torch.isnan(out[0]).all() and torch.isfinite(out[1:]).all()
    ops = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("isfinite" in op or "_assert_async" in op for op in ops), ops


def test_fx_symbolic_trace_of_the_network_with_blocks_as_leaves():
    model = net()

    class BlocksAsLeaves(torch.fx.Tracer):  # blocks and RMSNorms, as vit5's timm notrace list has them
        def is_leaf_module(self, module, name):
            # a traced RMSNorm records the PyTorch ops, where eager runs the fused CPU kernel
            leaf = isinstance(module, (vit5.ViT5ResidualBlock, vit5.modules.RMSNorm))
            return leaf or super().is_leaf_module(module, name)

    graph = BlocksAsLeaves().trace(model)
    traced = torch.fx.GraphModule(model, graph)
    x = torch.randn(2, 16, 16, 3)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x))  # FX runs the full last block
        # the traced glue records PyTorch ops where eager may run fused kernels: fp32 rounding
        torch.testing.assert_close(traced({"input": x})["logits"], expected, rtol=1e-5, atol=1e-5)
    called = [node.target for node in graph.nodes if node.op == "call_module"]
    assert [t for t in called if t.startswith("blocks.")] == ["blocks.0", "blocks.1"]
