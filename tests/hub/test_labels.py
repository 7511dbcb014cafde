"""Labels by name: an official (ImageNet-1k) checkpoint evaluated on wnid folders holding a subset
of its classes scores each folder against its own class; predict prints ``n01631663 eft``."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from tests.hub.conftest import official_training_file
from vit5.cli import main
from vit5.io import torch_load_safely
from vit5.io.imagenet import imagenet_class_names

EFT = "n01631663"


@pytest.fixture(scope="module")
def eft_checkpoint(tmp_path_factory):
    """A tiny official checkpoint whose head always says 'eft' (class 27 of ImageNet-1k)."""
    data, model, _ = official_training_file(3)
    path = tmp_path_factory.mktemp("eft") / "vit5_eft.pth"
    path.write_bytes(data)
    checkpoint = torch_load_safely(path)  # the official training dict (args as argparse.Namespace)
    index = imagenet_class_names().index(EFT)
    for state in (checkpoint["model"], checkpoint["model_ema"]):
        state["head.weight"].zero_()
        state["head.bias"].zero_()
        state["head.bias"][index] = 10.0
    torch.save(checkpoint, path)
    return path, index


def _images(folder, count=2):
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (40, 40), (30 * i, 90, 160)).save(folder / f"{i}.png")


def test_eval_maps_wnid_folders_to_their_classes_for_a_subset(eft_checkpoint, tmp_path, capsys):
    path, index = eft_checkpoint
    assert index == 27
    data = tmp_path / "val"
    _images(data / "n01440764")  # tench: class 0
    _images(data / EFT)  # eft: class 27; sorted position 1, which a positional mapping would use
    code = main(["eval", str(path), "--data-dir", str(data), "--out", str(tmp_path / "eval")])
    out, err = capsys.readouterr()
    assert code == 0, err
    per_class = json.loads(out.strip().splitlines()[-1])["per_class"]
    assert per_class[EFT] == 1.0 and per_class["n01440764"] == 0.0
    assert json.loads(out.strip().splitlines()[-1])["top1"] == 0.5
    _images(data / "not_a_class")
    code = main(["eval", str(path), "--data-dir", str(data), "--out", str(tmp_path / "eval2")])
    err = capsys.readouterr().err
    assert code == 2 and "not_a_class" in err and len(err.strip().splitlines()) == 1


def test_predict_names_the_class(eft_checkpoint, tmp_path, capsys):
    path, _ = eft_checkpoint
    Image.new("RGB", (40, 40), (10, 200, 30)).save(tmp_path / "newt.png")
    code = main(["predict", str(path), str(tmp_path / "newt.png"), "--top-k", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"newt.png: {EFT} eft (" in out
