"""vit5.load_model on the files users have: official training checkpoints as the official code
writes them, Lightning checkpoints with OmegaConf hyper-parameters, vit5 files, and bad input."""

from __future__ import annotations

import json
import os

import pytest
import torch

import vit5
from tests.helpers import assert_parity, randomize_
from tests.official_model import OfficialViT5, finetune_resize, save_training_checkpoint
from vit5.config import TARGET_KEY, to_container
from vit5.convert import convert_checkpoint
from vit5.io import CheckpointError, load_weights
from vit5.weights import load_model_and_config

# (dim, depth, heads, image, patch, registers, classes, channels, mlp_ratio): S and B layouts at
# reduced depth, and small custom layouts of the official code.
LAYOUTS = {
    "S": (384, 2, 6, 32, 16, 4, 7, 3, 4.0),
    "B": (768, 1, 12, 32, 16, 4, 5, 3, 4.0),
    "custom": (64, 3, 2, 24, 4, 1, 4, 3, 2.0),
    "custom-gray": (48, 2, 3, 16, 4, 9, 10, 1, 4.0),
    "no-registers": (32, 2, 2, 16, 4, 0, 3, 3, 4.0),
}


def official(name, seed=0, **kwargs):
    D, depth, heads, size, patch, R, K, C, ratio = LAYOUTS[name]
    return OfficialViT5(D, depth, heads, size, patch, R, K, C, ratio, **kwargs).randomize(seed)


def logits(model, x_nchw):
    with torch.no_grad():
        return model({"input": x_nchw.permute(0, 2, 3, 1)})["logits"]


def images(model, batch=3, seed=1, size=None):
    C, g = model.patch_embed.proj.in_channels, size or model.grid * model.patch_embed.proj.kernel_size[0]
    return torch.randn(batch, C, g, g, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_official_training_checkpoint_loads_by_path_with_the_official_logits(name, tmp_path):
    model, ema = official(name), official(name, seed=5)
    path = save_training_checkpoint(tmp_path / "checkpoint.pth", model, ema)
    x = images(model)
    expected, expected_ema = model(x), ema(x)
    assert expected.abs().max() > 1 and (expected[0] - expected[1]).abs().max() > 1e-2
    net = vit5.load_model(path)
    assert isinstance(net, vit5.ViT5ClassificationNet) and not net.training
    assert_parity(logits(net, x), expected)
    assert_parity(logits(vit5.load_model(path, ema=True), x), expected_ema)
    assert_parity(logits(vit5.load_official_vit5(path), x), expected)  # variant is optional
    cfg = net.pretrained_cfg
    assert cfg["mean"] == ([0.485, 0.456, 0.406] if cfg["input_size"][0] == 3 else [0.5])
    assert (cfg["interpolation"], cfg["crop_pct"], cfg["num_classes"]) == ("bicubic", 1.0, LAYOUTS[name][6])
    assert cfg["input_size"] == [LAYOUTS[name][7], LAYOUTS[name][3], LAYOUTS[name][3]]
    assert cfg["source"] == str(path) and len(cfg["sha256"]) == 64


def test_published_variant_names_check_the_width():
    model = official("S")
    state = model.state_dict()
    for variant in ("small", "vit5_small", "S"):
        assert vit5.load_official_vit5(state, variant).hidden_dim == 384
    with pytest.raises(ValueError, match="it is a 'small' checkpoint"):
        vit5.load_official_vit5(state, "base")


def test_fp16_saved_rope_buffers_pass(tmp_path):
    model = official("S").half().float()  # the values an fp16 file holds
    state = {k: v.half() for k, v in model.state_dict().items()}
    torch.save({"model": state}, tmp_path / "fp16.pth")
    x = images(model)
    assert_parity(logits(vit5.load_model(tmp_path / "fp16.pth"), x), model(x), 1e-4)


def test_rope_buffers_of_another_base_are_adopted_and_garbage_is_refused(tmp_path, caplog):
    model = official("custom", rope_base=5000.0, reg_rope_base=50.0)
    torch.save({"model": model.state_dict()}, tmp_path / "base.pth")
    x = images(model)
    with caplog.at_level("INFO", logger="vit5.weights"):
        net = vit5.load_model(tmp_path / "base.pth")
    assert "RoPE bases 5000 (patches) and 50 (registers)" in caplog.text
    assert_parity(logits(net, x), model(x))
    attention = net.blocks[0].sequence_mixer
    assert (attention.rope_base, attention.reg_rope_base) == pytest.approx((5000.0, 50.0))
    state = model.state_dict()
    state["blocks.1.attn.rope.freqs"] = torch.rand_like(state["blocks.1.attn.rope.freqs"])
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"blocks\.1\.attn\.rope\.freqs.*not RoPE frequencies") as error:
        vit5.load_model(tmp_path / "bad.pth")
    assert "\n" not in str(error.value)


def test_missing_ema_is_an_error(tmp_path):
    path = save_training_checkpoint(tmp_path / "c.pth", official("S"))
    with pytest.raises(CheckpointError, match="no 'model_ema'"):
        vit5.load_model(path, ema=True)


def test_load_model_image_size_keeps_the_training_rope_scale(tmp_path):
    model = official("custom")
    path = save_training_checkpoint(tmp_path / "c.pth", model)
    net = vit5.load_model(path, image_size=32)
    assert net.image_size == 32 and net.pretrained_cfg["input_size"] == [3, 32, 32]
    # the resized model: pos_embed resampled bicubically, RoPE positions arange(g') * g / g'
    reference = finetune_resize(model, 32)
    x = images(reference)
    assert_parity(logits(net, x), reference(x, train_grid=model.grid))
    # ...which is not the fine-tuning rebuild (RoPE at the new grid's integer positions)
    assert (logits(net, x).double() - reference(x)).abs().max() > 1e-3


def lightning_checkpoint(tmp_path, hyper_parameters, state, ema_state=None):
    checkpoint = {
        "epoch": 4, "global_step": 120, "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"net.{k}": v for k, v in state.items()},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]}],
        "lr_schedulers": [{"last_epoch": 4}], "hyper_parameters": hyper_parameters,
        "callbacks": {"ModelCheckpoint{'monitor': 'val/acc'}": {"best_model_score": torch.tensor(0.5)}},
    }  # fmt: skip
    if ema_state is not None:
        checkpoint["state_dict"].update({f"ema_net.{k}": v for k, v in ema_state.items()})
    path = tmp_path / "epoch=4-step=120.ckpt"
    torch.save(checkpoint, path)
    return path


def test_lightning_checkpoint_with_omegaconf_hyper_parameters(tmp_path):
    from omegaconf import OmegaConf

    from tests.reference import reference_config

    cfg = vit5.model_config("vit5_tiny_hybrid", num_blocks=2, rope_impl="nvsubquadratic")
    hyper = OmegaConf.create({"net": reference_config(cfg), "lr": 1e-3, "optim": {"name": "adamw"}},
                             flags={"allow_objects": True})  # fmt: skip
    assert "nvsubquadratic" in OmegaConf.to_yaml(hyper)
    source = randomize_(vit5.instantiate(cfg), seed=3).eval()
    ema = randomize_(vit5.instantiate(cfg), seed=4).eval()
    path = lightning_checkpoint(tmp_path, hyper, source.state_dict(), ema.state_dict())
    x = torch.randn(2, 3, 32, 32)
    loaded = load_model_and_config(path)
    assert loaded.kind == "nvsubquadratic"
    assert_parity(logits(loaded.model, x), logits(source, x))
    assert_parity(logits(vit5.load_model(path, ema=True), x), logits(ema, x))
    assert loaded.model.pretrained_cfg["source"] == str(path)
    assert to_container(loaded.model_config)[TARGET_KEY].startswith("vit5.")


def test_lightning_hyper_parameters_naming_foreign_targets_are_refused(tmp_path):
    from omegaconf import OmegaConf

    cfg = to_container(vit5.model_config("vit5_tiny_attention", num_blocks=1))
    cfg["norm_cfg"][TARGET_KEY] = "vit5.cli.main"
    hyper = OmegaConf.create({"net": cfg})
    path = lightning_checkpoint(
        tmp_path, hyper, vit5.create_model("vit5_tiny_attention", num_blocks=1).state_dict()
    )
    with pytest.raises(
        ValueError, match=r"hyper-parameters\) at norm_cfg: __target__ 'vit5.cli.main' is not a registered"
    ):
        vit5.load_model(path)


def test_convert_round_trips_and_records_the_resized_model(tmp_path):
    model = official("custom")
    source = save_training_checkpoint(tmp_path / "c.pth", model, official("custom", seed=2))
    x = images(model)
    out = convert_checkpoint(source, tmp_path / "vit5.safetensors")
    assert_parity(logits(vit5.load_model(out), x), model(x))
    _, metadata = load_weights(out)
    assert metadata["pretrained_cfg"]["interpolation"] == "bicubic"
    assert metadata["config"]["model"][TARGET_KEY] == "vit5.networks.presets.build_vit5"
    resized = convert_checkpoint(source, tmp_path / "big.safetensors", image_size=32, ema=True)
    again = vit5.load_model(resized)
    expected = vit5.load_model(source, ema=True, image_size=32)
    y = torch.randn(2, 3, 32, 32)
    assert again.image_size == 32 and torch.equal(logits(again, y.permute(0, 1, 2, 3)), logits(expected, y))
    back = convert_checkpoint(out, tmp_path / "official.pth", to="official")
    official_again = OfficialViT5(*[LAYOUTS["custom"][i] for i in (0, 1, 2, 3, 4, 5, 6, 7, 8)])
    official_again.load_state_dict(torch.load(back, weights_only=True)["model"], strict=True)
    assert_parity(official_again(x).float(), model(x).float())


def test_vit5_safetensors_and_run_config_round_trip_pretrained_cfg(tmp_path):
    net = vit5.create_model("vit5_tiny_attention", num_blocks=1)
    assert net.pretrained_cfg["source"] is None and net.pretrained_cfg["interpolation"] == "bicubic"
    from vit5.convert import save_model

    net.pretrained_cfg = {
        **net.pretrained_cfg,
        "class_names": [f"c{i}" for i in range(10)],
        "crop_pct": 0.875,
    }
    path = save_model(tmp_path / "m.safetensors", net, to_container(vit5.model_config("vit5_tiny_attention",
                                                                                     num_blocks=1)))  # fmt: skip
    loaded = vit5.load_model(path)
    assert loaded.pretrained_cfg["class_names"][3] == "c3" and loaded.pretrained_cfg["crop_pct"] == 0.875
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(logits(loaded, x), logits(net.eval(), x))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_damaged_files_are_one_line_errors_and_stay_untouched(tmp_path, kind, damage):
    model = official("custom")
    path = tmp_path / f"w.{kind}"
    if kind == "pth":
        save_training_checkpoint(path, model)
    else:
        convert_checkpoint(save_training_checkpoint(tmp_path / "c.pth", model), path)
    data = path.read_bytes()
    broken = {"truncate": data[: len(data) // 2], "garbage": os.urandom(64), "empty": b""}[damage]
    path.write_bytes(broken)
    with pytest.raises(ValueError) as error:
        vit5.load_model(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert path.read_bytes() == broken


def test_directories_and_foreign_architectures_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="a directory without weights"):
        vit5.load_model(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no such file"):
        vit5.load_model(tmp_path / "missing.pth")
    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048)}
    torch.save(resnet, tmp_path / "resnet.pth")
    with pytest.raises(CheckpointError, match="neither an official ViT-5 checkpoint"):
        vit5.load_model(tmp_path / "resnet.pth")
    from safetensors.torch import save_file

    save_file(resnet, str(tmp_path / "resnet.safetensors"))
    with pytest.raises(CheckpointError, match="without a vit5 config"):
        vit5.load_model(tmp_path / "resnet.safetensors")
    with pytest.raises(CheckpointError, match="missing"):
        vit5.load_model(tmp_path / "resnet.pth", config=vit5.model_config("vit5_tiny_attention"))
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list"):
        vit5.load_model(tmp_path / "list.pth")
    assert json.loads(json.dumps(vit5.create_model("vit5_tiny_hybrid").pretrained_cfg))
