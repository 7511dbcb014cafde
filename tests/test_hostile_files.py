"""No file a user brings runs code: every entry point refuses hostile files with one line.

Covers ``vit5 eval``, ``predict``, ``info`` and ``train --resume`` against safetensors metadata,
rewritten run directories (checksums recomputed, as an attacker would), YAML configs and pickle
payloads; plus evaluating an official checkpoint on a plain class-folder tree at another size.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.official_model import OfficialViT5, save_training_checkpoint
from tests.test_cli import QUICK, run_cli
from vit5.config import TARGET_KEY
from vit5.io import load_weights, save_weights

HOSTILE_TARGETS = ["os.system", "vit5.cli.main", "subprocess.check_call", "builtins.exec"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("hostile") / "run"
    assert run_cli_plain(["train", "--out", str(run), *QUICK, "--epochs", "1"]) == 0
    return run


def run_cli_plain(args):
    from vit5.cli import main

    return main(args)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(path)
    return path


def poison(tree, target, marker):
    """Put a payload call inside a config tree, as the argument of a registered call."""
    tree = json.loads(json.dumps(tree))
    node = tree.get("model", tree)  # build_vit5 stays the outer target; the payload is an argument
    node["hidden_dim"] = {TARGET_KEY: target, "command": f"touch {marker}", "args": [f"touch {marker}"]}
    return tree


def rewrite_safetensors(path, target, marker):
    tensors, metadata = load_weights(path)
    metadata["config"] = poison(metadata["config"], target, marker)
    save_weights(path, tensors, metadata)  # the checksum an attacker would recompute


def rewrite_run(run, target, marker):
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump(poison(config, target, marker)))
    for checkpoint in (run / "checkpoints").iterdir():
        meta = json.loads((checkpoint / "meta.json").read_text())
        meta["config"] = poison(meta["config"], target, marker)
        for name in list(meta["files"]):
            if name.endswith(".safetensors"):
                rewrite_safetensors(checkpoint / name, target, marker)
            meta["files"][name] = hashlib.sha256((checkpoint / name).read_bytes()).hexdigest()
        (checkpoint / "meta.json").write_text(json.dumps(meta))


def assert_refused(args, marker, capsys, needle="not a registered config target"):
    code, out, err = run_cli(args, capsys)
    assert code == 2, (args, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert not marker.exists()


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_hostile_run_directory_runs_nothing_through_any_command(run_dir, tmp_path, image, capsys, target):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    marker = tmp_path / "pwned"
    rewrite_run(run, target, marker)
    weights = run / "checkpoints" / "last" / "model.safetensors"
    for args in (["eval", str(run)], ["predict", str(run), str(image)], ["eval", str(weights)],
                 ["predict", str(weights), str(image)], ["info", str(run)], ["info", str(weights)],
                 ["info", "--config", str(run / "config.yaml")], ["train", "--resume", str(run)],
                 ["convert", str(run), "--out", str(tmp_path / "c.safetensors")]):  # fmt: skip
        assert_refused(args, marker, capsys)
    assert not (tmp_path / "c.safetensors").exists()


def test_bare_safetensors_with_a_payload_target(tmp_path, image, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    save_weights(path, {"w": torch.zeros(1)}, {"config": {"model": {TARGET_KEY: "os.system",
                                                                    "command": f"touch {marker}"}}})  # fmt: skip
    for args in (["eval", str(path)], ["predict", str(path), str(image)], ["info", str(path)]):
        assert_refused(args, marker, capsys)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


class _OsPayload(_Payload):
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", [_Payload, _OsPayload])
@pytest.mark.parametrize("where", ["top", "args", "hyper_parameters", "state_dict"])
def test_pickle_payloads_run_nothing(tmp_path, image, capsys, payload, where):
    marker = tmp_path / "pwned"
    model = OfficialViT5(64, 1, 2, 16, 4, 1, 3).randomize()
    checkpoint = {"model": model.state_dict(), "epoch": 1}
    if where == "top":
        checkpoint["extra"] = payload(marker)
    elif where == "args":
        import argparse

        checkpoint["args"] = argparse.Namespace(model=payload(marker))
    elif where == "hyper_parameters":
        checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": {"net": payload(marker)}}
    else:
        checkpoint["model"] = {**model.state_dict(), "x": payload(marker)}
    path = tmp_path / "evil.pth"
    torch.save(checkpoint, path)
    for args in (["eval", str(path), "--data-dir", str(tmp_path)], ["predict", str(path), str(image)],
                 ["info", str(path)], ["convert", str(path), "--out", str(tmp_path / "c.safetensors")]):  # fmt: skip
        assert_refused(args, marker, capsys, needle="refused to load")
    assert not (tmp_path / "c.safetensors").exists()


def test_trust_config_is_needed_for_a_users_own_target(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    lrn = "torch.nn.modules.normalization.LocalResponseNorm"  # harmless, but not registered
    config["model"] = {
        TARGET_KEY: "vit5.networks.vit5_classification.ViT5ClassificationNet",
        **json.loads(json.dumps(vit5_model_tree(config))),
    }
    config["model"]["norm_cfg"] = {TARGET_KEY: lrn, "size": 2}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    code, out, err = run_cli(["info", "--config", str(run / "config.yaml")], capsys)
    assert code == 2 and f"'{lrn}' is not a registered" in err
    code, out, err = run_cli(["info", "--config", str(run / "config.yaml"), "--trust-config"], capsys)
    assert code == 0 and "parameters:" in out


def vit5_model_tree(run_config):
    """The expanded network config of a run's compact ``build_vit5`` model section."""
    from vit5.config import to_container
    from vit5.networks.presets import vit5_config

    arguments = {k: v for k, v in run_config["model"].items() if k != TARGET_KEY}
    tree = to_container(vit5_config(**arguments))
    tree.pop(TARGET_KEY)
    return tree


def make_folder(root, classes, size=20, per_class=3):
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            pixels = np.full((size, size + 4, 3), 40 * index + 10 * j, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{j}.png")
    return root


def test_eval_of_an_official_checkpoint_on_a_class_folder_at_another_size(tmp_path, capsys):
    model = OfficialViT5(64, 2, 2, 16, 4, 1, 3).randomize()
    path = save_training_checkpoint(
        tmp_path / "official.pth", model, OfficialViT5(64, 2, 2, 16, 4, 1, 3).randomize(1)
    )
    folder = make_folder(tmp_path / "val", ["n01", "n02", "n03"])
    before = path.read_bytes()
    for extra in (
        [],
        ["--image-size", "24", "--ema", "--interpolation", "bilinear", "--crop-ratio", "0.875"],
    ):
        code, out, err = run_cli(["eval", str(path), "--data-dir", str(folder), "--batch-size", "4",
                                  "--out", str(tmp_path / "eval"), *extra], capsys)  # fmt: skip
        assert code == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert (
            result["count"] == 9
            and 0 <= result["top1"] <= 1
            and set(result["per_class"]) == {"n01", "n02", "n03"}
        )
    assert "24 px, bilinear, crop ratio 0.875" in out and "EMA weights" in out
    assert path.read_bytes() == before
    images = sorted(folder.rglob("*.png"))
    for suffix in ("json", "csv"):
        target = tmp_path / f"pred.{suffix}"
        code, _, err = run_cli(["predict", str(path), *map(str, images), "--top-k", "2", "--batch-size", "4",
                                "--image-size", "24", "--out", str(target)], capsys)  # fmt: skip
        assert code == 0, err
        text = target.read_text()
        if suffix == "json":
            rows = json.loads(text)
            assert len(rows) == 9 and len(rows[0]["top"]) == 2
        else:
            assert text.splitlines()[0] == "image,rank,label,probability" and len(text.splitlines()) == 19
