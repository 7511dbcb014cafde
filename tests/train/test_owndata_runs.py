"""Runs on your own images without a config: the sized recipe, --print-config, the summary, split.csv
reused by eval; extending a finished run with --resume RUN --epochs N."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from tests.data.test_owndata import make_flat_folder
from vit5.cli import main
from vit5.config import ConfigNode
from vit5.train.optim import extended_multiplier, warmup_cosine, warmup_stable_decay
from vit5.train.recipes import default_run_config
from vit5.train.sizing import recipe_steps, sized_recipe

QUICK_DIGITS = [
    "--batch-size", "32", "data.max_train_images=128", "data.max_test_images=64", "model.hidden_dim=32",
    "model.num_blocks=2", "model.siren_hidden_dim=8", "train.log_every_seconds=0",
]  # fmt: skip


def test_sized_recipe_follows_the_rule():
    assert recipe_steps(42) == (10, 420) and recipe_steps(9) == (34, 306) and recipe_steps(1000) == (5, 5000)
    cfg = default_run_config("imagefolder")
    chosen = sized_recipe(cfg, 3000, finetune=True, gpu=False)
    assert chosen["batch_size"] == 64 and cfg.optim.name == "adamw"
    assert math.isclose(cfg.optim.lr, 5e-4 * 64 / 512) and cfg.train.ema_decay == 0 and cfg.train.mixup == 0
    assert cfg.data.augment == "crop-flip" and cfg.schedule.epochs == 10 and cfg.train.precision == "fp32"
    sized_recipe(cfg, 20000, finetune=False, gpu=True)
    assert (
        cfg.data.batch_size == 128
        and cfg.data.augment == "crop-flip-randaug"
        and cfg.train.precision == "bf16"
    )
    assert cfg.model.image_size == "${data.image_size}" and cfg.data.image_size == 224


def test_print_config_and_a_run_on_a_flat_folder(tmp_path, capsys, monkeypatch):
    root = make_flat_folder(tmp_path / "pets")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "imagefolder", "--data-dir", str(root), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["name"] == "adamw" and printed["data"]["batch_size"] == 8
    assert (
        printed["schedule"]["epochs"] == 100 and printed["train"]["ema_decay"] == 0.0
    )  # 3 steps/epoch: 300 steps
    assert printed["model"]["image_size"] == 32 and printed["data"]["num_classes"] is None
    assert not (tmp_path / "runs").exists()  # --print-config creates no run directory
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a published name needs only its architecture, not its weights
    args = [
        "train",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(root),
        "--finetune",
        "vit5_small_patch16_224",
    ]
    assert main([*args, "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["hidden_dim"] == 384 and printed["data"]["image_size"] == 224
    assert (
        printed["optim"]["lr"] == pytest.approx(5e-4 * 8 / 512) and printed["train"]["finetune"] == args[-1]
    )
    run = tmp_path / "run"
    code = main(
        ["train", "--dataset", "imagefolder", "--data-dir", str(root), "--out", str(run), "--epochs", "1"]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    for start in ("model      ViT-5 hybrid", "data       imagefolder", "optimizer  adamw, lr 0.000125",
                  "schedule   cosine, warmup 0.05 epochs", "augment    crop-flip", "precision  fp32 on cpu"):  # fmt: skip
        assert start in err, start
    assert err.index("optimizer  adamw") < err.index("train loss")  # before the first step
    split = (run / "split.csv").read_text().splitlines()
    assert split[0] == "path,label,split" and split[1].startswith("cat/0.png,cat,") and len(split) == 32
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["count"] == 3 and "held-out split" in out
    assert main(["eval", str(run), "--data-dir", str(root)]) == 0  # another folder: all of it
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["count"] == 30


def test_extended_multiplier_continues_and_follows_the_shape():
    # cosine, extended at step 60 of 100 to 200 steps: continuous, then down to the floor at the new end
    f = extended_multiplier("cosine", 200, 10, 0.01, 0.8, [[60, 100]])
    assert f(60) == pytest.approx(warmup_cosine(60, 100, 10, 0.01)) and f(200) == pytest.approx(0.01)
    assert f(59) == warmup_cosine(59, 100, 10, 0.01) and f(130) < f(60)
    # WSD before its decay: the new schedule, decay moved to the new end
    g = extended_multiplier("wsd", 200, 10, 0.01, 0.5, [[40, 100]])
    assert all(g(s) == warmup_stable_decay(s, 200, 10, 0.5, 0.01) for s in (40, 100, 150, 199))
    # during warmup: the new cosine
    h = extended_multiplier("cosine", 200, 10, 0.01, 0.8, [[5, 100]])
    assert h(150) == warmup_cosine(150, 200, 10, 0.01)


def test_resume_extends_a_finished_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--epochs", "2", "schedule.warmup_epochs=0", *QUICK_DIGITS]) == 0
    capsys.readouterr()
    code = main(["train", "--resume", str(run), "--epochs", "1"])
    assert code == 2 and "has done 2 epochs already" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["epochs"] == 3
    assert (run / "config.epochs-2.yaml").is_file() and (run / "summary.epochs-2.json").is_file()
    cfg = ConfigNode(yaml.safe_load((run / "config.yaml").read_text()))
    assert cfg.schedule.epochs == 3 and cfg.schedule.extensions == [[8, 8]]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4
    lrs = [float(row.split(",")[2]) for row in rows[1:]]
    assert lrs[2] == pytest.approx(lrs[1])  # finished at the floor: the extension stays there
    code = main(["train", "--resume", str(run), "--lr", "0.1"])
    assert (
        code == 2 and "only --epochs, --log, --data-dir and --workers may change" in capsys.readouterr().err
    )


def test_config_names_and_suffixes(tmp_path):
    from vit5.train.recipes import config_file, load_python_config

    assert config_file("vit5_b_finetune")[0] == "recipe"
    with pytest.raises(ValueError, match="no packaged recipe of that name"):
        config_file("vit5_b_finetun")
    marker = tmp_path / "ran"
    code = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('x')\nmodel = dict(hidden_dim=8)\n"
    for name in ("recipe.json", "config.yaml ", "config.txt", "config"):
        path = tmp_path / name
        path.write_text(code)
        with pytest.raises(ValueError) as error:
            load_python_config(str(path))
        assert "\n" not in str(error.value)
    assert not marker.exists()  # only .py runs
    (tmp_path / "run.JSON").write_text(json.dumps({"optim": {"lr": 0.5}, "data": {"dataset": "digits"}}))
    assert load_python_config(str(tmp_path / "run.JSON")).optim.lr == 0.5  # the YAML form's sections
    (tmp_path / "ok.py").write_text(code)
    assert load_python_config(str(tmp_path / "ok.py")).model.hidden_dim == 8 and marker.exists()
