"""Fine-tuning controls: layer decay, tags and overrides, WSD, freezing, gradient checkpointing, BCE,
the repeated-augmentation sampler."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from vit5 import create_model
from vit5.modules.film import KernelFiLMGenerator
from vit5.train.distributed import EpochSampler, RepeatedAugSampler
from vit5.train.finetune import freeze_backbone, init_from_pretrained
from vit5.train.losses import SmoothedBCE
from vit5.train.optim import (
    build_optimizer,
    build_scheduler,
    layer_id,
    parameter_groups,
    warmup_cosine,
    warmup_stable_decay,
)

TINY = dict(hidden_dim=16, num_blocks=4, num_heads=2, siren_hidden_dim=8, image_size=16)


def expected_layer(name: str, num_blocks: int) -> int:
    if name.split(".")[0] in ("patch_embed", "pos_embed", "cls_token", "reg_token"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    assert name.split(".")[0] in ("out_norm", "register_neck", "out_proj"), name
    return num_blocks + 1


@pytest.mark.parametrize("readout", ["cls", "register_concat"])
def test_layer_decay_groups_cover_every_parameter_once_with_the_documented_scales(readout):
    extra = {"neck_compression_ratio": 4} if readout == "register_concat" else {}
    model = create_model("vit5_tiny_hybrid", readout=readout, **TINY, **extra)
    groups = parameter_groups(model, 0.05, lr=1e-3, layer_decay=0.5)
    seen = [name for group in groups for name in group["param_names"]]
    assert sorted(seen) == sorted(name for name, _ in model.named_parameters())  # each exactly once
    params = dict(model.named_parameters())
    for group in groups:
        assert [id(p) for p in group["params"]] == [id(params[n]) for n in group["param_names"]]
        for name in group["param_names"]:
            scale = 0.5 ** (4 + 1 - expected_layer(name, 4))
            assert group["lr_scale"] == pytest.approx(scale), name
            assert group["lr"] == pytest.approx(1e-3 * scale), name
    scales = {name: group["lr_scale"] for group in groups for name in group["param_names"]}
    assert scales["pos_embed"] == pytest.approx(0.5**5) and scales["out_proj.weight"] == 1.0
    film_or_kernel = [n for n in scales if n.startswith("blocks.0.") and "kernel" in n]
    assert film_or_kernel and all(scales[n] == pytest.approx(0.5**4) for n in film_or_kernel)
    with pytest.raises(ValueError, match="layer decay needs a ViT5ClassificationNet"):
        layer_id("encoder.weight", 4)
    with pytest.raises(ValueError, match="layer_decay"):
        parameter_groups(model, 0.05, layer_decay=1.5)


class FiLMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.film = KernelFiLMGenerator(
            cond_dim=4, kernel_hidden_dim=8, num_film_layers=2, no_weight_decay=0.01
        )
        self.linear = nn.Linear(4, 4)
        self.linear.weight._lr_scale = 0.1


def test_weight_decay_and_lr_scale_tags_and_pattern_overrides_reach_their_groups():
    model = FiLMNet()
    optimizer = build_optimizer(model, {"name": "adamw", "lr": 1.0, "weight_decay": 0.05})
    by_name = {n: g for g in optimizer.param_groups for n in g["param_names"]}
    assert by_name["film.mlp.0.weight"]["weight_decay"] == 0.01  # the FiLM tag, not the global 0.05
    assert by_name["film.mlp.2.weight"]["weight_decay"] == 0.01
    assert by_name["film.mlp.0.bias"]["weight_decay"] == 0.0
    assert by_name["linear.weight"]["weight_decay"] == 0.05 and by_name["linear.weight"]["lr"] == 0.1
    assert by_name["linear.bias"]["weight_decay"] == 0.0 and by_name["linear.bias"]["lr"] == 1.0
    overrides = [{"pattern": "film.*.weight", "weight_decay": 0.2}, {"pattern": "linear.*", "lr_scale": 3.0}]
    optimizer = build_optimizer(
        model, {"name": "lamb", "lr": 1.0, "weight_decay": 0.05, "param_overrides": overrides}
    )
    by_name = {n: g for g in optimizer.param_groups for n in g["param_names"]}
    assert by_name["film.mlp.0.weight"]["weight_decay"] == 0.2
    assert by_name["linear.weight"]["lr"] == pytest.approx(0.3) and by_name["linear.bias"]["lr"] == 3.0
    # the tag multiplies with layer decay on a real network
    net = create_model("vit5_tiny_attention", **TINY)
    net.blocks[1].mlp_norm.weight._lr_scale = 2.0
    groups = parameter_groups(net, 0.05, layer_decay=0.5)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    assert scale["blocks.1.mlp_norm.weight"] == pytest.approx(2.0 * 0.5**3)
    with pytest.raises(ValueError, match="match no trainable parameter"):
        parameter_groups(model, 0.05, param_overrides=[{"pattern": "nothing.*", "weight_decay": 0.0}])
    with pytest.raises(ValueError, match="unknown keys"):
        parameter_groups(model, 0.05, param_overrides=[{"pattern": "film.*", "decay": 0.0}])


def test_wsd_and_cosine_follow_their_closed_forms():
    T, W, m = 100, 10, 0.1
    for step in range(T):
        value = warmup_stable_decay(step, T, W, 0.5, m)
        if step < W:
            expected = (step + 1) / W
        elif step < 60:
            expected = 1.0
        else:
            expected = 1 - (1 - m) * (step - 60) / 40
        assert value == pytest.approx(expected), step
        cosine = warmup_cosine(step, T, W, m)
        if step >= W:
            assert cosine == pytest.approx(m + (1 - m) * 0.5 * (1 + math.cos(math.pi * (step - W) / (T - W))))
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, {"lr": 2.0, "weight_decay": 0.0})
    scheduler = build_scheduler(optimizer, T, W, m, name="wsd", stable_fraction=0.5)
    lrs = []
    for _ in range(T):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[59] == 2.0 and lrs[80] == pytest.approx(2.0 * (1 - 0.9 * 20 / 40))
    with pytest.raises(ValueError, match="stable_fraction"):
        build_scheduler(optimizer, T, W, m, name="wsd", stable_fraction=0.95)
    with pytest.raises(ValueError, match="schedule.name"):
        build_scheduler(optimizer, T, W, m, name="step")


@pytest.mark.parametrize("readout", ["cls", "gap"])
def test_gradient_checkpointing_gives_the_same_gradients(readout):
    torch.manual_seed(0)
    model = create_model("vit5_tiny_hybrid", readout=readout, max_drop_path_rate=0.3, **TINY).train()
    checkpointed = copy.deepcopy(model)
    checkpointed.set_grad_checkpointing(True)
    x = torch.randn(4, 16, 16, 3)
    for net in (model, checkpointed):
        torch.manual_seed(1)  # the same DropPath draws
        net({"input": x})["logits"].square().sum().backward()
    for (name, a), b in zip(model.named_parameters(), checkpointed.parameters()):
        assert a.grad is not None and torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7), name
    with pytest.raises(TypeError, match="enable"):
        model.set_grad_checkpointing("yes")


def test_timm_wrapper_set_grad_checkpointing():
    timm = pytest.importorskip("timm")
    import vit5  # noqa: F401

    net = timm.create_model("vit5_tiny_attention_patch4_32", num_classes=3)
    net.set_grad_checkpointing()
    assert net.net.grad_checkpointing
    net.train()(torch.randn(2, 3, 32, 32)).sum().backward()


def test_freeze_backbone_and_head_replacement():
    torch.manual_seed(0)
    source = create_model("vit5_tiny_attention", **TINY)
    model = create_model("vit5_tiny_attention", **{**TINY, "image_size": 24, "num_classes": 5})
    fresh_head = model.out_proj.weight.detach().clone()
    notes = init_from_pretrained(model, source.state_dict())
    assert any("pos_embed resampled 16 -> 36" in n for n in notes) and any(
        "new 5-class head" in n for n in notes
    )
    assert torch.equal(model.out_proj.weight, fresh_head)
    assert torch.equal(model.blocks[2].mlp.layer1.weight, source.blocks[2].mlp.layer1.weight)
    same = create_model("vit5_tiny_attention", **TINY)
    init_from_pretrained(same, source.state_dict())
    assert torch.equal(same.out_proj.weight, source.out_proj.weight)  # the head is kept when equal
    assert freeze_backbone(model) == model.out_proj.weight.numel() == 5 * 16  # no head bias
    groups = parameter_groups(model, 0.05)
    assert [n for g in groups for n in g["param_names"]] == ["out_proj.weight"]
    other = create_model("vit5_tiny_attention", **{**TINY, "hidden_dim": 32})
    with pytest.raises(ValueError, match="wrong shapes"):
        init_from_pretrained(other, source.state_dict())


def test_bce_loss_on_one_hot_targets_with_smoothing():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    targets = torch.full((4, 3), 0.1 / 3) + 0.9 * nn.functional.one_hot(labels, 3)
    expected = -(targets * logits.sigmoid().log() + (1 - targets) * (1 - logits.sigmoid()).log()).mean()
    assert SmoothedBCE(3, 0.1)(logits, labels) == pytest.approx(float(expected), rel=1e-5)


def test_repeated_augmentation_sampler_order_on_one_and_two_ranks():
    N, k, seed = 10, 3, 7
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(seed * 100_003 + 2)).tolist()
    repeated = [p + c * N for p in perm for c in range(k)]
    one = RepeatedAugSampler(N, 4, rank=0, world_size=1, repeats=k, seed=seed)
    one.set_epoch(2)
    assert list(one) == repeated[:8] and len(one) == 8
    assert one.batches_per_epoch() == EpochSampler(N, 4, seed=seed).batches_per_epoch()
    ranks = [RepeatedAugSampler(N, 2, rank=r, world_size=2, repeats=k, seed=seed) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(2)
    assert list(ranks[0]) == repeated[0:8:2] and list(ranks[1]) == repeated[1:8:2]
    # the copies of the first image go to rank 0, rank 1, rank 0: consecutive ranks
    assert [x % N for x in (list(ranks[0])[0], list(ranks[1])[0], list(ranks[0])[1])] == [perm[0]] * 3
    ranks[1].set_epoch(2, start_batch=1)  # resume mid-epoch
    assert list(ranks[1]) == repeated[5:8:2]
    one.set_epoch(3)
    assert list(one) != repeated[:8]
    with pytest.raises(ValueError, match="repeats"):
        RepeatedAugSampler(N, 2, repeats=0)
