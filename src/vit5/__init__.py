"""vit5: ViT-5 image classifiers (attention, 2D Hyena and hybrid) in PyTorch."""

from vit5.config import PLACEHOLDER, ConfigNode, LazyConfig, instantiate

__version__ = "0.1.0"
