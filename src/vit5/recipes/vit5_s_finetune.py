"""ViT-5-S fine-tuning at 224 px from pretrained EMA weights, the official recipe:
`torchrun --nproc_per_node 8 -m vit5 train --config vit5_s_finetune --finetune PRETRAINED.pth --ema
--data-dir /data/imagenet` (PRETRAINED: an official checkpoint, a vit5 run or any file vit5.load_model reads).

Numbers: start from the EMA weights (`--ema`), from 224 px weights (the vit5_s_pretrain recipe); the network is built at
224 px as the official fine-tuning code builds it (RoPE at the new grid's integer positions,
`pos_embed` resampled bicubically; `vit5.rebuild_at_resolution`). AdamW lr 1e-5, batch 64 per GPU
(512 on 8), weight decay 0.1, 20 epochs (5 warmup, cosine), cross-entropy with label smoothing
0.1 (soft targets of mixup 0.8 / cutmix 1.0, DeiT's defaults, which the official command keeps),
RandAugment `rand-m9-mstd0.5-inc1` (timm string; no colour jitter with it, as timm), no repeated
augmentation, no 3-Augment, no random erasing (timm users: `data.random_erasing=0.25`), bicubic,
stochastic depth 0.05 (official), evaluation crop ratio 1.0.
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
data = dict(
    dataset="imagefolder", image_size=224, augment="rrc-randaug", randaugment="rand-m9-mstd0.5-inc1",
    color_jitter=0.0, interpolation="bicubic", random_erasing=0.0, repeated_aug=1, batch_size=512, num_workers=10,
)  # fmt: skip
optim = dict(name="adamw", lr=1e-5, weight_decay=0.1, clip_grad=None)
schedule = dict(name="cosine", epochs=20, warmup_epochs=5)
train = dict(
    precision="bf16", loss="ce", mixup=0.8, cutmix=1.0, label_smoothing=0.1, ema_decay=0.0, finetune_ema=True
)
