"""Sampler, optimizer groups, schedule, recipes, metrics files."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from vit5.config import instantiate
from vit5.train.distributed import EpochSampler
from vit5.train.evaluate import evaluate
from vit5.train.metrics import MetricsLog, plot_confusion, plot_curves
from vit5.train.optim import build_optimizer, parameter_groups, warmup_cosine
from vit5.train.recipes import default_run_config, finalize, load_python_config


@pytest.mark.parametrize("world", [1, 2, 4])
def test_sampler_shards_union_is_the_global_batch(world):
    per_rank = 3
    samplers = [EpochSampler(50, per_rank, rank, world, seed=5) for rank in range(world)]
    single = EpochSampler(50, per_rank * world, 0, 1, seed=5)
    for epoch in (0, 3):
        for s in samplers + [single]:
            s.set_epoch(epoch)
        shards = [list(s) for s in samplers]
        whole = list(single)
        assert all(len(shard) == len(shards[0]) for shard in shards)
        for b in range(single.batches_per_epoch()):
            union = sorted(i for shard in shards for i in shard[b * per_rank : (b + 1) * per_rank])
            assert union == sorted(whole[b * per_rank * world : (b + 1) * per_rank * world])


def test_sampler_resumes_mid_epoch_and_differs_between_epochs():
    sampler = EpochSampler(40, 4, seed=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start_batch=3)
    assert list(sampler) == full[12:] and len(sampler) == len(full) - 12
    sampler.set_epoch(3)
    assert list(sampler) != full


def test_parameter_groups_exempt_tagged_and_one_dimensional_parameters():
    model = instantiate(
        default_run_config("digits").model | {"image_size": 16, "in_channels": 1, "num_classes": 10}
    )
    groups = parameter_groups(model, 0.05)
    decayed = {id(p) for p in groups[0]["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    for parameter in model.parameters():
        exempt = getattr(parameter, "_no_weight_decay", False) or parameter.ndim < 2
        assert (id(parameter) in decayed) != exempt, names[id(parameter)]
    assert groups[1]["weight_decay"] == 0.0
    assert any(names[id(p)] == "pos_embed" for p in groups[1]["params"])
    assert any("qkv.weight" in names[id(p)] for p in groups[0]["params"])


def test_optimizer_choices():
    model = nn.Linear(3, 2)
    assert isinstance(build_optimizer(model, {"name": "adamw", "lr": 1e-3}), torch.optim.AdamW)
    assert type(build_optimizer(model, {"name": "lamb", "lr": 1e-3})).__name__ == "Lamb"
    with pytest.raises(ValueError, match="optim.name"):
        build_optimizer(model, {"name": "sgd", "lr": 1e-3})
    with pytest.raises(ValueError, match="optim.lr"):
        build_optimizer(model, {"name": "adamw", "lr": -1})


def test_adamw_is_fused_and_computes_the_adamw_update():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 3))
    reference, initial = copy.deepcopy(model), copy.deepcopy(model)
    cfg = {"name": "adamw", "lr": 1e-2, "weight_decay": 0.1, "betas": [0.9, 0.95]}
    optimizer = build_optimizer(model, cfg)
    assert all(group["fused"] for group in optimizer.param_groups)
    plain = torch.optim.AdamW(
        parameter_groups(reference, 0.1), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, foreach=False
    )
    for _ in range(5):
        x = torch.randn(8, 5)
        for net, opt in ((model, optimizer), (reference, plain)):
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(model[0].weight, initial[0].weight, atol=1e-3)  # it trained


def test_warmup_cosine_shape():
    values = [warmup_cosine(s, 100, 10, 0.01) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[-1] == pytest.approx(0.01, abs=1e-3)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert warmup_cosine(55, 100, 10, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_default_recipe_resolves_model_from_data():
    cfg = finalize(default_run_config("digits"))
    assert cfg.model.image_size == cfg.data.image_size == 16 and cfg.model.in_channels == 1
    model = instantiate(cfg.model)
    assert model.num_classes == 10 and model.layer_pattern is not None
    cfg = default_run_config("digits")
    cfg.data.image_size = 24
    assert instantiate(finalize(cfg).model).image_size == 24
    assert default_run_config("imagefolder").optim.name == "lamb"


def test_evaluate_counts_per_class_and_leaves_absent_classes_undefined():
    class Oracle(torch.nn.Module):  # predicts the class written in the image's first pixel
        def forward(self, batch):
            return {"logits": torch.nn.functional.one_hot(batch["input"][:, 0, 0, 0].long(), 4).float()}

    predicted = torch.tensor([0, 0, 1, 2, 2, 0])
    labels = torch.tensor([0, 0, 1, 2, 1, 1])  # class 3 has no images
    images = predicted.float()[:, None, None, None].expand(6, 1, 2, 2)
    loader = torch.utils.data.DataLoader(list(zip(images, labels)), batch_size=4)
    result = evaluate(Oracle(), loader, num_classes=4, confusion=True)
    assert result.top1 == pytest.approx(4 / 6) and result.count == 6
    assert result.per_class[:3] == [1.0, pytest.approx(1 / 3), 1.0] and math.isnan(result.per_class[3])
    assert result.confusion.tolist() == [[2, 0, 0, 0], [1, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def test_python_config_file(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text("data = dict(dataset='digits', batch_size=32)\noptim = dict(lr=5e-4)\n")
    cfg = load_python_config(path)
    assert cfg.data.batch_size == 32 and cfg.optim.lr == 5e-4 and cfg.schedule.epochs == 12
    path.write_text("optim = dict(learning_rate=1)\n")
    with pytest.raises(ValueError, match="unknown key optim.learning_rate"):
        load_python_config(path)
    path.write_text("x = 1\n")
    with pytest.raises(ValueError, match="defines none of"):
        load_python_config(path)
    path.write_text("model = dict(hidden_dim=32, mlp_ratio=2)\n")  # a dict edits the default preset
    model = instantiate(finalize(load_python_config(path)).model)
    default = instantiate(finalize(default_run_config("digits")).model)
    assert model.hidden_dim == 32 and model.num_blocks == default.num_blocks
    assert model.blocks[0].mlp.layer1.out_features == 64
    path.write_text("model = dict(num_blockz=2)\n")
    with pytest.raises(
        ValueError, match=r"exp.py: model has no key 'num_blockz'; available: \[.*'num_blocks'"
    ):
        load_python_config(path)
    path.write_text("data = dict(dataset='digits')\noptim = dict(lr=(1e-3\n")
    with pytest.raises(ValueError, match=r"exp.py, line 2: invalid Python: '\(' was never closed"):
        load_python_config(path)


def test_metrics_log_truncate_and_plots(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv")
    for epoch in (1, 2, 3):
        log.append({"epoch": epoch, "step": epoch * 10, "train_loss": 1.0 / epoch, "test_acc": 0.5 + epoch / 10,
                    "train_acc": 0.4, "test_loss": 0.9})  # fmt: skip
    log.truncate(2)
    again = MetricsLog(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in again.rows] == ["1", "2"] and again.column("test_acc") == [0.6, 0.7]
    png = plot_curves(again, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    confusion = plot_confusion(torch.tensor([[3, 1], [0, 4]]).numpy(), ["a", "b"], tmp_path / "c.png")
    assert confusion.stat().st_size > 1000


@pytest.mark.parametrize("value", ["none", "null"])
def test_augment_none_override_means_no_augmentation(tmp_path, value):
    # `data.augment=none` parses to None; it used to fall back to the dataset's default augmentation.
    from vit5.config import apply_overrides
    from vit5.train.loop import Trainer

    cfg = apply_overrides(default_run_config("digits"), [f"data.augment={value}", "schedule.epochs=1"])
    trainer = Trainer(cfg, tmp_path / "run")
    train_set, test_set = trainer.train_set, trainer.test_set
    first = torch.stack([train_set[i][0] for i in range(8)])
    train_set.set_epoch(1)
    assert torch.equal(first, torch.stack([train_set[i][0] for i in range(8)]))  # no random transform
    rng = np.random.default_rng(0)
    raw = torch.stack([test_set.transform(train_set.source.images[i], rng) for i in range(8)])
    assert torch.equal(first, raw)


def test_unknown_augmentation_is_a_config_error():
    from vit5.config import apply_overrides
    from vit5.train.recipes import validate_run_config

    with pytest.raises(ValueError, match=r"data.augment must be none or one of .*crop-flip.*got 'flips'"):
        validate_run_config(finalize(apply_overrides(default_run_config("digits"), ["data.augment=flips"])))


def test_progress_eta_and_rate_leave_out_the_first_step(tmp_path, monkeypatch, caplog):
    """The first step pays one-off costs (torch.compile takes minutes): the ETA and img/s of the
    progress lines count from its end, or they would stay inflated for most of the run."""
    import logging
    import re
    import time

    from vit5.config import apply_overrides
    from vit5.train.loop import Trainer

    overrides = ["schedule.epochs=2", "data.batch_size=32", "data.max_train_images=256", "data.max_test_images=32",
                 "model.hidden_dim=16", "model.num_blocks=2", "train.log_every_seconds=0"]  # fmt: skip
    trainer = Trainer(apply_overrides(default_run_config("digits"), overrides), tmp_path / "run")
    real_step = trainer._optimizer_step
    first_step_cost = 6.0  # well above 14 ordinary steps even on a loaded 2-core machine

    def step(*args):
        if trainer.step == 0:
            time.sleep(first_step_cost)
        return real_step(*args)

    monkeypatch.setattr(trainer, "_optimizer_step", step)
    with caplog.at_level(logging.INFO, logger="vit5"):
        trainer.fit()
    progress = [
        r.getMessage() for r in caplog.records if " step " in r.getMessage() and "ETA" in r.getMessage()
    ]
    assert len(progress) >= 10  # 8 steps per epoch, a line after every step but each epoch's last
    for line in progress[1:]:
        minutes, seconds = re.search(r"ETA (\d+)m(\d+)s", line).groups()
        assert int(minutes) * 60 + int(seconds) < first_step_cost, line  # 14 fast steps remain at most
        assert float(re.search(r"([\d.]+) img/s", line).group(1)) > 32 / first_step_cost, line


def test_compile_without_a_cxx_compiler_trains_eagerly_with_a_warning(monkeypatch, caplog):
    import torch

    from vit5.train import loop

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(loop.shutil, "which", lambda name: None)
    with caplog.at_level("WARNING", logger="vit5.train"):
        assert not loop._can_compile(torch.device("cpu"))
    assert "no C++ compiler" in caplog.text
    assert loop._can_compile(torch.device("cuda"))
    monkeypatch.setattr(loop.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert loop._can_compile(torch.device("cpu"))


def test_schedule_min_lr_is_an_absolute_floor_for_cosine_and_wsd(tmp_path):
    import pytest

    from vit5.config import apply_overrides
    from vit5.train.loop import Trainer

    base = ["data.max_train_images=256", "data.batch_size=32", "data.max_test_images=32", "model.hidden_dim=16",
            "model.num_blocks=2", "optim.lr=1e-3", "schedule.min_lr=2e-5", "schedule.epochs=2",
            "schedule.warmup_epochs=0.25", "schedule.stable_fraction=0.5"]  # fmt: skip
    for name in ("cosine", "wsd"):
        trainer = Trainer(apply_overrides(default_run_config("digits"), [*base, f"schedule.name={name}"]),
                          tmp_path / name)  # fmt: skip
        floor = trainer.scheduler.lr_lambdas[0](trainer.total_steps) * 1e-3
        assert floor == pytest.approx(2e-5, rel=1e-9), name
    with pytest.raises(ValueError, match="schedule.min_lr=0.01 is above optim.lr=0.001"):
        Trainer(
            apply_overrides(default_run_config("digits"), [*base, "schedule.min_lr=1e-2"]), tmp_path / "bad"
        )
