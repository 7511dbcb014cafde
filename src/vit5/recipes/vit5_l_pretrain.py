"""ViT-5-L ImageNet-1k pretraining, the official recipe (ViT-5 README / paper, DeiT-III style):
`torchrun --nproc_per_node 8 -m vit5 train --config vit5_l_pretrain --data-dir /data/imagenet`.

Numbers: 800 epochs, 5 warmup, cosine; global batch 2048 (256 x 8 GPUs); LAMB, lr not scaled by
the batch size: 3e-3 (DeiT-III's value for B/L; S uses 4e-3); weight decay 0.05 (none on norms,
LayerScale, tokens, biases); gradient clipping 1.0; bf16. Loss: binary cross-entropy
(`--bce-loss`) on mixup 0.8 / cutmix 1.0 targets, no label smoothing. Data: B and L pretrain at
192 px (then fine-tune with the vit5_l_finetune recipe): random-resized crop + flip, 3-Augment
(grayscale / solarize / blur), colour jitter 0.3, repeated augmentation (3 copies), no
RandAugment, no random erasing, bicubic. Stochastic depth 0.4 (DeiT-III's value for this size;
S uses 0.05); EMA 0.99996.
"""

from vit5 import LazyConfig
from vit5.networks.presets import build_vit5, preset_arguments

model = LazyConfig(build_vit5)(
    **{
        **preset_arguments("vit5_large"),
        "image_size": "${data.image_size}",
        "num_classes": "${data.num_classes}",
        "max_drop_path_rate": 0.4,
    }
)
data = dict(
    dataset="imagefolder", image_size=192, augment="rrc-3aug", color_jitter=0.3, interpolation="bicubic",
    random_erasing=0.0, repeated_aug=3, batch_size=2048, num_workers=10,
)  # fmt: skip
optim = dict(name="lamb", lr=3e-3, weight_decay=0.05, clip_grad=1.0)
schedule = dict(name="cosine", epochs=800, warmup_epochs=5, min_lr_ratio=0.0)
train = dict(precision="bf16", loss="bce", mixup=0.8, cutmix=1.0, label_smoothing=0.0, ema_decay=0.99996)
