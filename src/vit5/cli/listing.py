"""``vit5 list``: presets, published weights, packaged recipes and datasets (imports no data or
training code), and the version string of ``vit5 --version``."""

from __future__ import annotations

import argparse

from vit5.cli.common import DATASET_NAMES

__all__ = ["command_list", "version_text"]

_DATASETS = {
    "digits": "scikit-learn's 8x8 digits, embedded (the default)",
    "fashion-mnist": "Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist, or --download)",
    "cifar10": "CIFAR-10 python batches (--data-dir, or --download)",
    "cifar100": "CIFAR-100 python batches (--data-dir, or --download)",
    "imagefolder": "your images: DIR/<class>/*.png, or DIR/train/<class>/ and DIR/val/<class>/",
    "manifest": "your images listed in a CSV/JSONL file: path,label[,split]",
    "hf": "a Hugging Face datasets table on disk (save_to_disk folder or parquet); pip install 'vit5[hf]'",
}


def version_text() -> str:
    """``vit5 X.Y.Z (torch A.B.C)``: the installed distribution's version."""
    from importlib import metadata

    try:
        version = metadata.version("vit5")
    except metadata.PackageNotFoundError:  # running from a source tree
        from vit5 import __version__ as version
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"vit5 {version} (torch {torch_version})"


def command_list(args: argparse.Namespace) -> int:
    from vit5.hub import list_pretrained
    from vit5.networks.presets import list_models
    from vit5.recipes import list_recipes

    sections = {
        "presets": {name: "" for name in list_models()},
        "published weights": {
            name: "vit5 predict / eval / train --finetune NAME" for name in list_pretrained()
        },
        "recipes": list_recipes(),
        "datasets": {name: _DATASETS.get(name, "") for name in DATASET_NAMES},
    }
    wanted = getattr(args, "what", None)
    for title, items in sections.items():
        if wanted and not title.startswith(wanted):
            continue
        print(f"{title}:")
        width = max((len(name) for name in items), default=0)
        for name, about in items.items():
            print(f"  {name:<{width}}  {about}".rstrip())
    return 0
