"""The shipped config files: each builds, names only registered vit5 targets, and holds its recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import run_cli
from vit5.config import to_container
from vit5.config.registry import resolve_config_target
from vit5.train.recipes import finalize, load_python_config, validate_run_config

RECIPES = Path(__file__).resolve().parents[2] / "src" / "vit5" / "recipes"
CONFIGS = sorted(p for p in RECIPES.glob("*.py") if p.name != "__init__.py")
# building ViT-5-B / L takes 5-20 s each on 2 cores
PARAMS = [
    pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name.startswith(("vit5_b", "vit5_l")) else [])
    for p in CONFIGS
]


def targets(tree):
    if isinstance(tree, dict):
        if "__target__" in tree:
            yield tree["__target__"]
        for value in tree.values():
            yield from targets(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from targets(value)


@pytest.mark.parametrize("path", PARAMS)
def test_config_builds_and_names_registered_vit5_targets(path, capsys):
    cfg = load_python_config(path)
    if cfg.data.get("num_classes") is None:
        cfg.data.num_classes = 1000
    validate_run_config(finalize(cfg))
    found = list(targets(to_container(cfg)))
    assert found and all(t.startswith("vit5.") for t in found), found
    for target in found:
        resolve_config_target(target, str(path))  # registered as config-buildable
    code, out, err = run_cli(["info", "--config", str(path)], capsys)
    assert code == 0 and "parameters:" in out, err


@pytest.mark.parametrize("size", ["s", "b", "l"])
def test_official_recipes_hold_the_published_numbers(size):
    root = CONFIGS[0].parent
    pre = load_python_config(root / f"vit5_{size}_pretrain.py")
    assert (pre.optim.name, pre.train.loss, pre.train.mixup, pre.train.cutmix) == ("lamb", "bce", 0.8, 1.0)
    assert (pre.data.repeated_aug, pre.data.augment, pre.data.color_jitter) == (3, "rrc-3aug", 0.3)
    assert pre.data.random_erasing == 0.0 and pre.train.label_smoothing == 0.0
    assert pre.data.interpolation == "bicubic" and pre.schedule.epochs == 800
    assert pre.data.image_size == (224 if size == "s" else 192)
    fine = load_python_config(root / f"vit5_{size}_finetune.py")
    assert (fine.optim.lr, fine.optim.weight_decay, fine.schedule.epochs) == (1e-5, 0.1, 20)
    assert (fine.train.loss, fine.train.label_smoothing, fine.data.repeated_aug) == ("ce", 0.1, 1)
    assert fine.data.randaugment == "rand-m9-mstd0.5-inc1" and fine.train.finetune_ema is True
    assert fine.data.image_size == (224 if size == "s" else 384)
