"""ViT-5-S on ImageNet-1k with the paper's recipe (spec/training-recipe.md):
`torchrun --nproc_per_node 8 -m vit5 train --config configs/vit5_s_imagenet.py --data-dir /data/imagenet`.

LAMB lr 4e-3 (global batch 2048), weight decay 0.05, 800 epochs with 5 warmup, gradient clipping 1.0,
bf16, mixup 0.8 / cutmix 1.0, stochastic depth 0.05 (constant), EMA 0.99996, 3-Augment.
"""

from vit5 import LazyConfig
from vit5.networks.presets import build_vit5, preset_arguments

model = LazyConfig(build_vit5)(
    **{
        **preset_arguments("vit5_small"),
        "image_size": "${data.image_size}",
        "num_classes": "${data.num_classes}",
        "max_drop_path_rate": 0.05,
    }
)
data = dict(dataset="imagefolder", image_size=224, augment="rrc-3aug", batch_size=2048, num_workers=10)
optim = dict(name="lamb", lr=4e-3, weight_decay=0.05, clip_grad=1.0)
schedule = dict(epochs=800, warmup_epochs=5)
train = dict(precision="bf16", mixup=0.8, cutmix=1.0, label_smoothing=0.0, ema_decay=0.99996)
