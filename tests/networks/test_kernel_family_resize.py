"""The kernels_nd family in networks: resize (resample / stretch / extend) and rebuild at a new size."""

from __future__ import annotations

import pytest
import torch

from tests.networks.test_resize import SMALL, logits, trained
from vit5.config import TARGET_KEY, target_path
from vit5.modules import BlockDiagonalLearnableOmegaSIRENKernelND, MultiOmegaSIRENKernelND
from vit5.networks.presets import model_config
from vit5.networks.resize import rebuild_at_resolution, resize_model


def _with_kernel(cls, **arguments):
    cfg = model_config("vit5_tiny_hybrid", **SMALL)

    def visit(node):
        if isinstance(node, dict):
            if str(node.get(TARGET_KEY, "")).endswith("SIRENKernelND"):
                node[TARGET_KEY] = target_path(cls)
                del node["omega_0"]
                for key, value in arguments.items():
                    node[key] = value
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(cfg)
    return cfg


@pytest.mark.parametrize(
    ("cls", "arguments"),
    [(MultiOmegaSIRENKernelND, dict(omega_0_per_row=[float(i + 1) for i in range(8)])),
     (BlockDiagonalLearnableOmegaSIRENKernelND, dict(num_blocks=2))],
)  # fmt: skip
@pytest.mark.parametrize("mode", ["resample", "stretch", "extend"])
def test_resize_keeps_the_kernel_class_and_weights(cls, arguments, mode):
    cfg = _with_kernel(cls, **arguments)
    model = trained(cfg)
    kinds = {type(module) for module in model.modules()}
    assert cls in kinds
    same = resize_model(model, 16, config=cfg, hyena_kernel=mode)
    assert torch.equal(logits(same, 16), logits(model, 16))  # same size: a no-op
    resized = resize_model(model, 24, config=cfg, hyena_kernel=mode)
    assert cls in {type(module) for module in resized.modules()}
    out = logits(resized, 24)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    if mode == "resample":
        rebuilt = rebuild_at_resolution(model, 24, config=cfg)  # a fine-tune's start at a new size
        assert cls in {type(module) for module in rebuilt.modules()}
        assert torch.isfinite(logits(rebuilt, 24)).all()
        # same size: a no-op
        assert torch.equal(logits(rebuild_at_resolution(model, 16, config=cfg), 16), logits(model, 16))


@pytest.mark.slow
def test_export_of_a_network_with_a_learnable_omega_kernel(tmp_path):
    import vit5

    cfg = _with_kernel(BlockDiagonalLearnableOmegaSIRENKernelND, num_blocks=2)
    model = trained(cfg).eval()
    x = torch.randn(2, 16, 16, 3)
    with torch.no_grad():
        expected = model({"input": x})["logits"]
    program = torch.export.load(str(vit5.export_program(model, tmp_path / "m.pt2"))).module()
    assert torch.allclose(program(x), expected, atol=1e-5)
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(vit5.export_onnx(model, tmp_path / "m.onnx")))
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert abs(out - expected.numpy()).max() < 1e-5
