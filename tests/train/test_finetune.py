"""`vit5 train --finetune`: official-format checkpoints, head replacement, resolution change, --ema,
URL sources, eval/resume without the original file."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from tests.helpers import assert_parity
from tests.networks.test_official import official_forward
from tests.test_cli import run_cli
from vit5 import load_model
from vit5.networks.official import official_to_vit5
from vit5.networks.resize import resample_pos_embed
from vit5.train.checkpoint import load_checkpoint

D, HEADS, BLOCKS, PATCH, SIZE = 32, 2, 2, 8, 32
QUICK = ["--dataset", "digits", "--epochs", "1", "--batch-size", "32", "data.max_train_images=64",
         "data.max_test_images=32", "train.log_every_seconds=0"]  # fmt: skip


def official_weights(seed: int, num_classes: int = 1000, registers: int = 4) -> dict[str, torch.Tensor]:
    """A random state dict in the official layout (RoPE buffers included), O(1) values."""
    g, hd = SIZE // PATCH, D // HEADS
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.rand(*shape, generator=generator) * 2 - 1) * scale

    def freqs(base):
        return 1.0 / base ** (torch.arange(0, hd // 2, 2).float() / (hd // 2))

    sd = {"cls_token": rand(1, 1, D), "reg_token": rand(1, registers, D), "pos_embed": rand(1, g * g, D),
          "patch_embed.proj.weight": rand(D, 3, PATCH, PATCH, scale=0.1), "patch_embed.proj.bias": rand(D)}  # fmt: skip
    for i in range(BLOCKS):
        p = f"blocks.{i}."
        sd.update({
            p + "norm1.weight": rand(D), p + "attn.qkv.weight": rand(3 * D, D, scale=D**-0.5),
            p + "attn.q_norm.weight": rand(hd), p + "attn.k_norm.weight": rand(hd),
            p + "attn.proj.weight": rand(D, D, scale=D**-0.5), p + "attn.proj.bias": rand(D),
            p + "norm2.weight": rand(D), p + "mlp.fc1.weight": rand(4 * D, D, scale=D**-0.5),
            p + "mlp.fc1.bias": rand(4 * D), p + "mlp.fc2.weight": rand(D, 4 * D, scale=(4 * D) ** -0.5),
            p + "mlp.fc2.bias": rand(D), p + "gamma_1": rand(D), p + "gamma_2": rand(D),
            p + "attn.rope.freqs": freqs(10000.0), p + "attn.rope_reg.freqs": freqs(100.0),
        })  # fmt: skip
    sd.update({"norm.weight": rand(D), "head.weight": rand(num_classes, D), "head.bias": rand(num_classes)})
    return sd


def write_official_checkpoint(path: Path, num_classes: int = 1000) -> tuple[dict, dict]:
    """The DeiT-style training checkpoint the official script writes: model, model_ema, args, ..."""
    model, ema = official_weights(0, num_classes), official_weights(1, num_classes)
    args = argparse.Namespace(model="vit5_custom", input_size=SIZE, lr=4e-3, bce_loss=True, finetune="")
    torch.save({"model": model, "model_ema": ema, "epoch": 799, "args": args}, path)
    return model, ema


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[Path, dict, dict]:
    path = tmp_path_factory.mktemp("official") / "checkpoint.pth"
    model, ema = write_official_checkpoint(path)
    return path, model, ema


def backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("out_proj.") and k != "pos_embed"}


def official_finetuned_logits(sd: dict, run_weights: dict, images: torch.Tensor) -> torch.Tensor:
    """The official fine-tuning model: built at the new size (RoPE at its integer grid), pos_embed
    resampled bicubically from the checkpoint, carrying the run's head."""
    g = images.shape[-1] // PATCH
    sd = {k: v for k, v in sd.items() if not k.endswith(".freqs")}
    sd = {**sd, "pos_embed": resample_pos_embed(sd["pos_embed"], g), "head.weight": run_weights["out_proj.weight"],
          "head.bias": run_weights["out_proj.bias"]}  # fmt: skip
    return official_forward(sd, images, HEADS)


@pytest.mark.parametrize("size", [48, 16])
def test_finetune_official_checkpoint_keeps_the_backbone_and_matches_the_official_finetuning(
    official, tmp_path, capsys, size
):
    path, weights, _ = official
    run = tmp_path / "run"
    args = [
        "train",
        "--finetune",
        str(path),
        "--image-size",
        str(size),
        "--out",
        str(run),
        *QUICK,
        "optim.lr=1e-30",
    ]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    first = next(line for line in err.splitlines() if " model      " in line)  # the summary's model line
    assert "ViT-5 attention (AA), D=32, 2 blocks, patch 8" in first and f"fine-tuned from {path}" in first
    assert "new 10-class head" in first and "pos_embed resampled 16 -> " in first
    assert "vit5 eval" in err.splitlines()[-3] and "vit5 predict" in err.splitlines()[-2]
    assert "vit5 export" in err.splitlines()[-1]
    last = load_checkpoint(run / "checkpoints" / "last")
    expected = official_to_vit5(weights)
    assert (
        last.model["out_proj.weight"].shape == (10, D)
        and last.model["pos_embed"].shape[1] == (size // PATCH) ** 2
    )
    for key, tensor in backbone(expected).items():
        assert torch.equal(last.model[key], tensor), key  # lr 1e-30: nothing moved
    assert last.meta["data"]["in_channels"] == 3  # grayscale digits replicated to RGB
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    config = (run / "config.yaml").read_text()
    assert str(path) in config and sha in config
    model = load_model(run / "checkpoints" / "last")
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model({"input": images.permute(0, 2, 3, 1)})["logits"]
    reference = official_finetuned_logits(weights, last.model, images)
    assert reference.abs().max() > 1e-2
    assert_parity(ours, reference)


def test_ema_weights_head_kept_and_no_source_needed_afterwards(tmp_path, capsys):
    path = tmp_path / "ten.pth"
    _, ema = write_official_checkpoint(path, num_classes=10)
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "--finetune", str(path), "--ema", "--out", str(run), *QUICK, "optim.lr=1e-30"],
                           capsys)  # fmt: skip
    assert code == 0, err
    assert "(EMA weights)" in err and "new 10-class head" not in err and "10-class head kept" in err
    last = load_checkpoint(run / "checkpoints" / "last")
    expected = official_to_vit5(ema)
    for key in ("out_proj.weight", "out_proj.bias", "blocks.1.mlp.layer1.weight", "pos_embed"):
        assert torch.equal(last.model[key], expected[key]), key  # same resolution, same classes: all kept
    path.unlink()  # eval and resume rebuild the model without the original file
    code, out, err = run_cli(["eval", str(run)], capsys)
    assert code == 0 and "top-1" in out, err
    code, out, err = run_cli(["train", "--resume", str(run)], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "--ema", *QUICK], capsys)
    assert code == 2 and "give --finetune too" in err
    code, _, err = run_cli(["train", "--finetune", str(tmp_path / "missing.pth"), *QUICK], capsys)
    assert code == 2 and "missing.pth" in err


def test_finetune_from_a_vit5_run_with_preset_and_overrides(tmp_path, capsys):
    source = tmp_path / "source"
    small = ["model.hidden_dim=32", "model.num_blocks=2", "model.siren_hidden_dim=8"]
    assert run_cli(["train", "--out", str(source), *QUICK, *small], capsys)[0] == 0
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "--finetune", str(source), "--image-size", "24", "--out", str(run), *QUICK,
                            "optim.lr=1e-30", "train.freeze=backbone"], capsys)  # fmt: skip
    assert code == 0, err
    assert "ViT-5 hybrid (HA), D=32" in err and "24 px, 1 channel" in err and "trainable" in err
    before, after = (
        load_checkpoint(source / "checkpoints" / "last"),
        load_checkpoint(run / "checkpoints" / "last"),
    )
    for key, tensor in backbone(before.model).items():
        assert torch.equal(after.model[key], tensor), key
    assert torch.equal(after.model["out_proj.weight"], before.model["out_proj.weight"])  # 10 classes: kept
    code, _, err = run_cli(["train", "--finetune", str(source), "--out", str(tmp_path / "bad"), *QUICK,
                            "--preset", "vit5_tiny_attention"], capsys)  # fmt: skip
    assert code == 2 and "do not fit the model" in err


def test_image_size_without_finetune_builds_the_model_at_that_size(tmp_path, capsys):
    run = tmp_path / "run"
    small = ["model.hidden_dim=32", "model.num_blocks=2", "model.siren_hidden_dim=8"]
    code, _, err = run_cli(["train", "--image-size", "24", "--out", str(run), *QUICK, *small], capsys)
    assert code == 0, err
    assert "24 px" in err
    last = load_checkpoint(run / "checkpoints" / "last")
    assert last.model["pos_embed"].shape[1] == (24 // 4) ** 2 and last.meta["data"]["image_size"] == 24
    code, _, err = run_cli(
        ["train", "--image-size", "30", "--out", str(tmp_path / "bad"), *QUICK, *small], capsys
    )
    assert code == 2 and "divisible by patch_size" in err


class _Counting(http.server.SimpleHTTPRequestHandler):
    requests = 0

    def do_GET(self):  # noqa: N802
        type(self).requests += 1
        super().do_GET()

    def log_message(self, *args):
        pass


def test_finetune_from_a_loopback_url_is_downloaded_once_and_checked(official, tmp_path, capsys, monkeypatch):
    path, _, _ = official
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # downloads go to $HF_HOME/vit5/urls
    handler = lambda *a, **k: _Counting(*a, directory=str(path.parent), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        code, _, err = run_cli(["train", "--finetune", url, "--finetune-sha256", "0" * 64,
                                "--out", str(tmp_path / "bad"), *QUICK], capsys)  # fmt: skip
        assert code == 2 and "expected " + "0" * 64 in err
        assert not list((tmp_path / "hf").rglob("*.pth"))  # nothing half-trusted left behind
        for name in ("a", "b"):
            args = [
                "train",
                "--finetune",
                url,
                "--finetune-sha256",
                sha,
                "--out",
                str(tmp_path / name),
                *QUICK,
            ]
            code, _, err = run_cli(args, capsys)
            assert code == 0, err
        assert _Counting.requests == 3  # the mismatching download and its one retry, then one for both runs
        assert url in (tmp_path / "a" / "config.yaml").read_text()
    finally:
        server.shutdown()
