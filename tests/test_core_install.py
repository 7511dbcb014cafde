"""The core install: with every optional package blocked, `vit5 --help`, `--version`, `list`, `info`,
`predict`, `eval` on a folder and `convert` work, and `train` is a one-line error naming the extra."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import vit5

OPTIONAL = ("timm", "sklearn", "datasets", "tensorboard", "wandb", "mlflow", "onnx", "onnxruntime", "onnxscript",
            "einops", "omegaconf", "nvsubquadratic")  # fmt: skip

SCRIPT = textwrap.dedent(
    """
    import importlib.machinery, json, sys
    BLOCKED = set(sys.argv[1].split(","))

    class NotInstalled(importlib.machinery.PathFinder):  # the path finder, blind to the blocked packages
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                return None
            return super().find_spec(name, path, target)

    sys.meta_path = [NotInstalled if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
    from vit5.cli import main

    codes = {}
    for line in sys.argv[2:]:
        argv = json.loads(line)
        try:
            codes[argv[0]] = main(argv)
        except SystemExit as exit:
            codes[argv[0]] = exit.code
        sys.stdout.flush()
        sys.stderr.flush()
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
    print("CODES " + json.dumps(codes) + " LOADED " + json.dumps(loaded))
    """
)


def test_core_install_without_optional_packages(tmp_path):
    model = vit5.create_model("vit5_tiny_hybrid", num_classes=2, image_size=16, patch_size=4, hidden_dim=16,
                              num_blocks=2, siren_hidden_dim=8)  # fmt: skip
    vit5.save_pretrained(model, tmp_path / "net")
    rng = np.random.RandomState(0)
    for name in ("a", "b"):
        (tmp_path / "pics" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray((rng.rand(16, 16, 3) * 255).astype(np.uint8)).save(
                tmp_path / "pics" / name / f"{i}.png"
            )
    net, pics = str(tmp_path / "net"), tmp_path / "pics"
    commands = [
        ["--version"],
        ["list"],
        ["info", "--preset", "vit5_tiny_hybrid"],
        ["predict", net, str(pics / "a" / "0.png"), "--top-k", "1"],
        ["eval", net, "--data-dir", str(pics), "--out", str(tmp_path / "eval")],
        ["convert", net, "--out", str(tmp_path / "copy.safetensors")],
        ["train", "--out", str(tmp_path / "run"), "--epochs", "1"],
    ]
    done = subprocess.run([sys.executable, "-c", SCRIPT, ",".join(OPTIONAL), *map(json.dumps, commands)],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)  # fmt: skip
    assert "CODES" in done.stdout, done.stderr[-3000:]
    codes = json.loads(done.stdout.split("CODES ")[1].split(" LOADED ")[0])
    assert json.loads(done.stdout.split(" LOADED ")[1]) == []  # no optional package was imported
    assert codes == {
        "--version": 0,
        "list": 0,
        "info": 0,
        "predict": 0,
        "eval": 0,
        "convert": 0,
        "train": 2,
    }, done.stderr[-3000:]
    assert "vit5 0.1.0" in done.stdout and "published weights:" in done.stdout and "top-1" in done.stdout
    assert (tmp_path / "copy.safetensors").is_file() and (tmp_path / "eval" / "confusion.png").is_file()
    error = [line for line in done.stderr.splitlines() if line.startswith("vit5 train: error")]
    assert error == ["vit5 train: error: vit5 train needs the Python package 'timm', which is not installed: "
                     "pip install 'vit5[train]'"]  # fmt: skip
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_fresh_venv_core_install(tmp_path):
    """A real `pip install .` (no extras) into a fresh venv that sees the system site (for torch)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        str(root),
    ]
    subprocess.run(pip, check=True, timeout=600)
    out = subprocess.run(
        [str(venv / "bin" / "vit5"), "list", "recipes"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "vit5_b_finetune" in out.stdout, out.stderr  # recipes are package data
