"""The default digits run, written out: `vit5 train --config digits_hybrid`.

A config file defines any of the sections model / data / optim / schedule / train (or a whole
`config`); missing sections and keys come from the dataset's default recipe. A `model` written
as a plain dict, e.g. `model = dict(hidden_dim=96)`, edits the default preset's arguments instead.
"""

from vit5 import LazyConfig
from vit5.networks.presets import build_vit5

model = LazyConfig(build_vit5)(
    hidden_dim=64,
    num_blocks=4,
    num_heads=2,
    pattern="HA",  # Hyena and attention blocks alternate
    patch_size=4,
    image_size="${data.image_size}",
    in_channels="${data.in_channels}",
    num_classes="${data.num_classes}",
    num_registers=4,
    readout="cls",
    rope_impl="interleaved",
    layer_scale_init=0.1,
)
data = dict(dataset="digits", image_size=16, batch_size=64)
optim = dict(name="adamw", lr=2e-3, weight_decay=0.05)
schedule = dict(epochs=12, warmup_epochs=1)
train = dict(label_smoothing=0.1, seed=0)
