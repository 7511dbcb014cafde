"""`vit5 export` and `vit5 predict` on an exported .onnx, end to end through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vit5
from tests.helpers import randomize_
from vit5.cli import main
from vit5.config import to_container
from vit5.convert import save_model
from vit5.export import read_onnx_metadata, read_program_metadata

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TINY = dict(hidden_dim=32, num_heads=2, num_blocks=1, image_size=16, num_classes=4)
NAMES = ["cat", "dog", "owl", "fox"]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def checkpoint(tmp_path):
    """A vit5 .safetensors file with its config and a pretrained_cfg naming the classes."""
    torch.manual_seed(0)
    config = vit5.model_config("vit5_tiny_attention", **TINY)
    model = randomize_(vit5.instantiate(config), seed=3, low=-0.5, high=0.5).eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "class_names": NAMES, "interpolation": "bilinear"}
    return save_model(tmp_path / "model.safetensors", model, to_container(config))


@pytest.fixture
def pictures(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = tmp_path / f"image{i}.png"
        Image.fromarray(rng.integers(0, 256, (20 + 4 * i, 24, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_export_onnx_then_predict_gives_the_checkpoint_predictions(checkpoint, pictures, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    code, stdout, err = run_cli(["export", checkpoint, "--out", out], capsys)
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert (
        summary["format"] == "onnx" and summary["bytes"] == out.stat().st_size and summary["image_size"] == 16
    )
    meta = read_onnx_metadata(out)
    assert (
        meta["class_names"] == NAMES
        and meta["interpolation"] == "bilinear"
        and meta["input_size"] == [3, 16, 16]
    )

    code, stdout, err = run_cli(["predict", checkpoint, *pictures, "--top-k", "4"], capsys)
    assert code == 0, err
    expected = json.loads(stdout.strip().splitlines()[-1])
    code, stdout, err = run_cli(["predict", out, *pictures, "--top-k", "4", "--batch-size", "2"], capsys)
    assert code == 0, err
    got = json.loads(stdout.strip().splitlines()[-1])
    assert [r["image"] for r in got] == pictures
    for a, b in zip(expected, got):
        assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
        assert np.allclose(
            [t["probability"] for t in a["top"]], [t["probability"] for t in b["top"]], atol=1e-5
        )
    assert {t["label"] for t in got[0]["top"]} == set(NAMES)
    for args, message in (
        (["--ema"], "--ema does not apply to an exported .onnx"),
        (["--image-size", "32"], "takes 16 px images"),
    ):
        code, _, err = run_cli(["predict", out, pictures[0], *args], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_export_program_at_another_image_size(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.pt2"
    code, _, err = run_cli(
        ["export", checkpoint, "--format", "pt2", "--out", out, "--image-size", "24"], capsys
    )
    assert code == 0, err
    module, cfg = torch.export.load(str(out)).module(), read_program_metadata(out)
    assert cfg["input_size"] == [3, 24, 24] and cfg["class_names"] == NAMES
    reference = vit5.load_model(checkpoint, image_size=24)
    x = torch.randn(3, 24, 24, 3)
    with torch.no_grad():
        expected, got = reference({"input": x})["logits"], module(x)
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 1e-5


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "x.onnx"], "give either SOURCE"),
        (["SOURCE", "--preset", "vit5_tiny_attention", "--out", "x.onnx"], "give either SOURCE"),
        (["SOURCE", "--out", "x.bin"], "cannot tell the format"),
        (["SOURCE", "--out", "x.pt2", "--opset", "18"], "--opset applies to --format onnx only"),
        (["SOURCE", "--out", "x.onnx", "--opset", "9"], "opset must be an int in 18.."),
        (
            ["--preset", "vit5_tiny_attention", "--ema", "--out", "x.onnx"],
            "--ema and --config need a checkpoint",
        ),
        (
            ["--preset", "vit5_tiny_attention", "--image-size", "30", "--out", "x.pt2"],
            "divisible by patch_size",
        ),
        (["missing.safetensors", "--out", "x.onnx"], "no such file or directory"),
    ],
)
def test_export_errors_are_one_line_and_write_nothing(
    args, message, checkpoint, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    args = [str(checkpoint) if a == "SOURCE" else a for a in args]
    code, _, err = run_cli(["export", *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
