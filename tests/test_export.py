"""vit5.export_onnx / vit5.export_program: the graph's signature, parity, metadata, errors.

Parity is ``max|a - b| / max|a|`` of the logits at batch 3 (the example batch is 2), with random
O(1) weights. The default suite exports two small networks; ``-m slow`` runs every preset and mode
(ViT-5-S presets at full depth, larger presets at reduced depth).
"""

from __future__ import annotations

import json

import pytest
import torch

import vit5
from tests.helpers import randomize_
from vit5.export import ExportError, pretrained_cfg_of, read_program_metadata

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SMALL = dict(hidden_dim=32, num_heads=2, image_size=16)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a - b| / max|a|`` (``a`` the eager logits)."""
    return ((a.double() - b.double()).abs().max() / a.double().abs().max()).item()


def network(preset: str, seed: int = 0, **overrides) -> vit5.ViT5ClassificationNet:
    torch.manual_seed(seed)
    return randomize_(vit5.create_model(preset, **overrides), seed=seed).eval()


def images(net: vit5.ViT5ClassificationNet, batch: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, net.image_size, net.image_size, net.in_channels, generator=generator)


def eager_logits(net: vit5.ViT5ClassificationNet, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net({"input": x})["logits"]


def onnx_logits(path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"input": x.numpy()})[0])


def check_onnx(net, path, tolerance: float = 1e-4) -> float:
    vit5.export_onnx(net, path)
    x = images(net)
    error = relative(eager_logits(net, x), onnx_logits(path, x))
    assert error <= tolerance, f"ONNX Runtime relative error {error:.3g} > {tolerance:g}"
    return error


def check_program(net, path, tolerance: float = 1e-5) -> float:
    vit5.export_program(net, path)
    x = images(net)
    with torch.no_grad():
        out = torch.export.load(str(path)).module()(x)
    assert isinstance(out, torch.Tensor)
    error = relative(eager_logits(net, x), out)
    assert error <= tolerance, f".pt2 relative error {error:.3g} > {tolerance:g}"
    return error


# --------------------------------------------------------------------------------------------------
# Default suite


def test_onnx_file_signature_metadata_and_parity(tmp_path):
    net = network("vit5_tiny_attention", num_blocks=1, num_classes=5, **SMALL).train()
    path = tmp_path / "model.onnx"
    check_onnx(net, path)
    assert net.training  # the model's mode is left as it was
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == "input" and graph_output.name == "logits"
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [16, 16, 3]
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in graph_output.type.tensor_type.shape.dim][1:] == [5]
    meta = {entry.key: json.loads(entry.value) for entry in model.metadata_props}
    assert meta["input_size"] == [3, 16, 16] and meta["num_classes"] == 5
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["interpolation"] == "bicubic"
    assert meta == vit5.export.read_onnx_metadata(path) == pretrained_cfg_of(net)
    for batch in (1, 7):  # the dynamic batch
        assert onnx_logits(path, images(net, batch)).shape == (batch, 5)


def test_program_parity_module_call_and_metadata(tmp_path):
    net = network("vit5_tiny_hybrid", num_blocks=2, num_classes=4, **SMALL)
    path = tmp_path / "model.pt2"
    check_program(net, path)
    module, cfg = torch.export.load(str(path)).module(), read_program_metadata(path)
    assert cfg == pretrained_cfg_of(net) and cfg["input_size"] == [3, 16, 16]
    x = images(net, 5)
    assert torch.allclose(
        module(x), eager_logits(net, x), rtol=0, atol=1e-5 * eager_logits(net, x).abs().max()
    )


def test_pretrained_cfg_of_a_loaded_model_is_carried(tmp_path):
    net = network("vit5_tiny_attention", num_blocks=1, **SMALL)
    net.pretrained_cfg = dict(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], interpolation="bilinear",
                              crop_pct=1.0, class_names=[f"c{i}" for i in range(10)], input_size=(3, 99, 99))  # fmt: skip
    vit5.export_program(net, tmp_path / "m.pt2")
    cfg = read_program_metadata(tmp_path / "m.pt2")
    assert cfg["class_names"] == [f"c{i}" for i in range(10)] and cfg["interpolation"] == "bilinear"
    assert cfg["input_size"] == [3, 16, 16]  # what the file takes, whatever the dict said


def test_bad_arguments_are_one_line_errors(tmp_path):
    net = network("vit5_tiny_attention", num_blocks=1, **SMALL)
    for opset in (11, 99, "18", True):
        with pytest.raises(ValueError, match=r"opset must be an int in 18\.\.") as error:
            vit5.export_onnx(net, tmp_path / "m.onnx", opset=opset)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="multiple of its patch size 4"):
        vit5.export_program(net, tmp_path / "m.pt2", image_size=18)
    with pytest.raises(ValueError, match="is a directory"):
        vit5.export_program(net, tmp_path)
    with pytest.raises(TypeError, match="must be a ViT5ClassificationNet"):
        vit5.export_program(torch.nn.Linear(2, 2), tmp_path / "m.pt2")
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    net = network("vit5_tiny_attention", num_blocks=1, **SMALL)
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous file")

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::foo\nlong traceback text")

    monkeypatch.setattr(torch.onnx, "export", broken)
    monkeypatch.setattr(torch.export, "export", broken)
    with pytest.raises(
        ExportError, match="ONNX export of ViT5ClassificationNet failed: RuntimeError: unsupported"
    ) as e:
        vit5.export_onnx(net, target)
    assert "\n" not in str(e.value)
    with pytest.raises(ExportError, match="torch.export of ViT5ClassificationNet failed"):
        vit5.export_program(net, tmp_path / "m.pt2")
    assert target.read_bytes() == b"previous file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_read_metadata_of_foreign_files(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="not a readable ONNX file"):
        vit5.export.read_onnx_metadata(tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="not a readable torch.export archive"):
        read_program_metadata(tmp_path / "x.onnx")
    import json
    import zipfile

    from vit5.networks.pretrained_cfg import default_pretrained_cfg

    cfg = default_pretrained_cfg(image_size=8, in_channels=3, num_classes=10)
    with zipfile.ZipFile(tmp_path / "x.pt2", "w") as archive:  # metadata is read as JSON, nothing unpickled
        archive.writestr("archive/data/constants/tensor_0", b"\x80\x04cos\nsystem\n.")
        archive.writestr("archive/extra/pretrained_cfg.json", json.dumps(cfg))
    assert read_program_metadata(tmp_path / "x.pt2")["input_size"] == [3, 8, 8]
    with zipfile.ZipFile(tmp_path / "y.pt2", "w") as archive:
        archive.writestr("archive/models/model.json", "{}")
    with pytest.raises(ValueError, match="carries no vit5 pretrained_cfg"):
        read_program_metadata(tmp_path / "y.pt2")


def test_model_code_imports_no_onnx():
    import subprocess
    import sys

    code = (
        "import sys, vit5, vit5.networks.timm_models; "
        "vit5.create_model('vit5_tiny_hybrid')({'input': __import__('torch').zeros(1, 32, 32, 3)}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime', 'onnxscript')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------------
# Every preset and mode (slow)

MODES = {
    "attention_cls_registers": ("vit5_tiny_attention", {}),
    "attention_gap": ("vit5_tiny_attention", dict(readout="gap", num_registers=0)),
    "attention_register_concat": (
        "vit5_tiny_attention",
        dict(readout="register_concat", neck_compression_ratio=4),
    ),
    "attention_reference_rope": ("vit5_tiny_attention", dict(rope_impl="nvsubquadratic")),
    "hyena_padding": ("vit5_tiny_hyena", {}),  # 64 + 1 + 4 tokens: 3 padding tokens
    "hyena_no_padding": ("vit5_tiny_hyena", dict(readout="gap", num_registers=0)),
    "hyena_register_concat": ("vit5_tiny_hyena", dict(readout="register_concat", neck_compression_ratio=4)),
    "hybrid": ("vit5_tiny_hybrid", {}),
    "hybrid_gap": ("vit5_tiny_hybrid", dict(readout="gap")),
    "vit5_small_ref": ("vit5_small_ref", {}),
    "vit5_small": ("vit5_small", {}),
    "vit5_small_hyena_gap": ("vit5_small_hyena_gap", {}),
    "vit5_small_hybrid": ("vit5_small_hybrid", {}),
    "vit5_base_2_blocks": ("vit5_base", dict(num_blocks=2)),
    "vit5_large_2_blocks": ("vit5_large", dict(num_blocks=2)),
    "vit5_xlarge_2_blocks": ("vit5_xlarge", dict(num_blocks=2)),
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_exports_with_parity(mode, tmp_path):
    preset, overrides = MODES[mode]
    net = network(preset, **overrides)
    check_onnx(net, tmp_path / "m.onnx")
    check_program(net, tmp_path / "m.pt2")
    if preset.startswith("vit5_small"):  # 224 px: FFTs, not a dense [C, T, T] operator per block
        weights = 4 * sum(p.numel() for p in net.parameters())
        assert (tmp_path / "m.onnx").stat().st_size < 1.1 * weights + 2e6


@pytest.mark.slow
@pytest.mark.parametrize("opset", [18, 21])
def test_static_batch_and_opsets(opset, tmp_path):
    net = network("vit5_tiny_hybrid", num_blocks=2, **SMALL)
    path = tmp_path / "m.onnx"
    vit5.export_onnx(net, path, opset=opset, dynamic_batch=False)
    model = onnx.load(str(path))
    assert {o.domain: o.version for o in model.opset_import}[""] == opset
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    x = images(net, 1)
    assert relative(eager_logits(net, x), onnx_logits(path, x)) <= 1e-4
