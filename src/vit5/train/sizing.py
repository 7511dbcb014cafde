"""The recipe of a run on your own images without a config file: sized to the data, not ImageNet.

``vit5 train --dataset imagefolder|manifest|hf --data-dir ...`` (with or without ``--finetune``)
starts from :func:`sized_recipe`, the issue's rule with these changes:

* steps = clamp(10 epochs, 300, 5000), rounded up to whole epochs (the schedule counts epochs);
* batch = min(64, N / 10) on a CPU (at least 8), 128 on a GPU (at most N / 4, so that an epoch
  has several steps);
* AdamW, weight decay 0.05; lr = 5e-4 x batch / 512 when fine-tuning. From scratch the rule's
  1e-3 x batch / 512 (1.25e-4 at batch 64) leaves the small network under-trained in a few hundred
  steps: scratch uses 1e-3 x batch / 64 (the linear scaling of the tiny hybrid's measured 1e-3 at
  batch 64, the digits and CIFAR recipes' value), capped at 2e-3;
* warmup 5% of the steps, cosine decay to 1% of the lr; label smoothing 0.1;
* augmentation: random crop (translation by 1/8 of the side) + flip; RandAugment only above
  5,000 training images; no mixup / cutmix; no EMA unless asked (``train.ema_decay=...``);
* precision bf16 on a GPU, fp32 on a CPU; loader processes 0 on a CPU (the two cores train), 4 on a GPU;
* the network: with ``--finetune`` the checkpoint's, at its resolution; from scratch
  ``vit5_tiny_hybrid`` at 32 px on a CPU (trains in minutes on 2 cores) and ``vit5_small`` at
  224 px on a GPU (``--preset`` / ``--image-size`` choose another).
"""

from __future__ import annotations

import math
from typing import Any

from vit5.config import ConfigNode, LazyConfig
from vit5.networks.presets import build_vit5, preset_arguments

__all__ = ["recipe_steps", "sized_recipe"]

MIN_STEPS, MAX_STEPS, EPOCHS = 300, 5000, 10
RANDAUGMENT_ABOVE = 5000


def recipe_steps(steps_per_epoch: int) -> tuple[int, int]:
    """``(epochs, steps)``: 10 epochs clamped to [300, 5000] steps, rounded up to whole epochs."""
    steps = min(max(EPOCHS * steps_per_epoch, MIN_STEPS), MAX_STEPS)
    epochs = max(1, math.ceil(steps / steps_per_epoch))
    return epochs, epochs * steps_per_epoch


def sized_recipe(cfg: ConfigNode, train_images: int, *, finetune: bool, gpu: bool, preset: str | None = None
                 ) -> dict[str, Any]:  # fmt: skip
    """Set ``cfg``'s data, optim, schedule and train sections (and, from scratch without a preset,
    the network) for ``train_images`` training images; returns the numbers chosen."""
    if train_images < 1:
        raise ValueError(f"the training part has no images (got {train_images})")
    batch = min(128, max(1, train_images // 4)) if gpu else max(8, min(64, train_images // 10))
    batch = min(batch, train_images)
    steps_per_epoch = max(1, train_images // batch)
    epochs, steps = recipe_steps(steps_per_epoch)
    lr = 5e-4 * batch / 512 if finetune else min(1e-3 * batch / 64, 2e-3)
    data, optim, schedule, train = cfg.data, cfg.optim, cfg.schedule, cfg.train
    data.batch_size = batch
    data.num_workers = 4 if gpu else 0
    data.augment = "crop-flip-randaug" if train_images > RANDAUGMENT_ABOVE else "crop-flip"
    optim.update(name="adamw", lr=lr, weight_decay=0.05, layer_decay=None)
    schedule.update(name="cosine", epochs=epochs, warmup_epochs=round(0.05 * epochs, 3), min_lr_ratio=0.01,
                    min_lr=None)  # fmt: skip
    train.update(precision="bf16" if gpu else "fp32", mixup=0.0, cutmix=0.0, label_smoothing=0.1,
                 ema_decay=0.0, compile=False)  # fmt: skip
    if not finetune:
        name = preset or ("vit5_small" if gpu else "vit5_tiny_hybrid")
        arguments = preset_arguments(name)
        if name == "vit5_tiny_hybrid" and preset is None:
            arguments["patch_size"] = 4
        arguments.update(image_size="${data.image_size}", in_channels="${data.in_channels}",
                         num_classes="${data.num_classes}")  # fmt: skip
        cfg.model = LazyConfig(build_vit5)(**arguments)
        if preset is None:
            data.image_size = 224 if gpu else 32
    return {
        "batch_size": batch,
        "steps_per_epoch": steps_per_epoch,
        "epochs": epochs,
        "steps": steps,
        "lr": lr,
    }
