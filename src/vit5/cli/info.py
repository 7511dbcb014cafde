"""``vit5 info``: parameters, FLOPs, token layout and blocks of a preset, a config or a checkpoint."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from vit5._text import terminal_text
from vit5.cli.common import (
    UsageError,
)
from vit5.cli.inference import _load_source
from vit5.config import ConfigNode, apply_overrides, to_container

logger = logging.getLogger("vit5")

# --------------------------------------------------------------------------------------------------
# info / demo


def describe_model(model: Any) -> list[str]:
    """Parameter count, FLOPs, token layout and each block's type and padding."""
    from vit5.modules.adapter import ViT5HyenaAdapter
    from vit5.modules.attention import ViT5Attention

    params = sum(p.numel() for p in model.parameters())
    lines = [
        f"parameters: {params:,}",
        f"FLOPs per image: {model.flop_count():,} (train), {model.flop_count(inference=True):,} (inference)",
    ]
    g, R, pad = model._grid_w, model.num_registers, model._pad_size
    layout = [f"{model.num_patches} patches ({g}x{g})"]
    if model.use_cls_token:
        layout.append("1 CLS")
    if R:
        layout.append(f"{R} registers")
    if pad:
        layout.append(f"{pad} padding")
    lines.append(f"tokens: [{', '.join(layout)}] = {model._num_non_pad + pad}; readout {model.readout!r}")
    lines.append(
        f"input: [B, {model.image_size}, {model.image_size}, {model.in_channels}] -> logits [B, {model.num_classes}]"
    )
    for index, (block, padded) in enumerate(zip(model.blocks, model._block_needs_padding)):
        mixer = getattr(block, "sequence_mixer", None)
        kind = (
            "Hyena (2D grid)"
            if isinstance(mixer, ViT5HyenaAdapter)
            else "attention"
            if isinstance(mixer, ViT5Attention)
            else type(mixer).__name__
        )
        tokens = model._num_non_pad + (pad if padded else 0)
        lines.append(
            f"  block {index:2d}: {kind:<16} {tokens} tokens{' (sees padding)' if padded and pad else ''}"
        )
    return lines


NVSUBQUADRATIC_HELP = (
    "--config is an nvSubquadratic config file (Python, run as code): its `net` is the network, built from "
    "vit5's classes of the same names (see vit5.load_nvsubquadratic_config); overrides are net.KEY=VALUE"
)


def command_info(args: argparse.Namespace) -> int:
    from vit5.config import LazyConfig
    from vit5.networks.presets import build_vit5, model_config, preset_arguments
    from vit5.train.recipes import build_model, load_python_config

    if args.source:
        if args.preset or args.config:
            raise UsageError("vit5 info takes a CHECKPOINT, --preset NAME or --config FILE, not several")
        return _info_checkpoint(args)
    if bool(args.preset) == bool(args.config):
        raise UsageError("vit5 info needs a CHECKPOINT, --preset NAME or --config FILE")
    if getattr(args, "nvsubquadratic", False):
        from vit5.config.nvsubquadratic import load_nvsubquadratic_config

        if not args.config:
            raise UsageError(
                "--nvsubquadratic reads the network of an nvSubquadratic config: give --config FILE.py"
            )
        cfg = load_nvsubquadratic_config(args.config, overrides=args.overrides)  # net.* overrides
    elif args.preset:
        try:  # the compact form `vit5 train` records, so the same model.* overrides work here
            cfg = LazyConfig(build_vit5)(**preset_arguments(args.preset))
        except ValueError:  # a preset registered elsewhere: its full network config
            cfg = model_config(args.preset)
        cfg = apply_overrides(ConfigNode(model=cfg), args.overrides).model
    else:
        cfg = apply_overrides(load_python_config(args.config, trust_config=args.trust_config), args.overrides)
        if cfg.data.get("num_classes") is None:  # ImageFolder: known once the folders are read
            cfg.data.num_classes = 1000
            print("(the class count comes from the data folders; shown with 1000 classes)")
        cfg = to_container(cfg)["model"]
    model = build_model(cfg)
    print("\n".join(terminal_text(line) for line in describe_model(model)))
    return 0


def _info_checkpoint(args: argparse.Namespace) -> int:
    """Layout, parameters, EMA presence and source of a checkpoint (anything load_model takes)."""
    from vit5.io import CheckpointError
    from vit5.weights import load_model_and_config

    if args.overrides:
        raise UsageError(f"vit5 info CHECKPOINT takes no overrides: {' '.join(args.overrides)}")
    args.ema, args.image_size = False, None
    loaded = _load_source(args)
    try:
        load_model_and_config(args.source, ema=True, trust_config=args.trust_config)
        has_ema = True
    except CheckpointError:
        has_ema = False
    cfg = loaded.model.pretrained_cfg
    print(terminal_text(f"source: {loaded.source} ({loaded.kind} checkpoint), sha256 {cfg['sha256']}"))
    if loaded.origin is not None and loaded.origin.kind != "path":
        print(terminal_text(f"from: {loaded.origin.given}, {loaded.origin.resolved_url}"
                            f"{f', revision {loaded.origin.revision}' if loaded.origin.revision else ''}"))  # fmt: skip
    print(f"EMA weights: {'yes' if has_ema else 'no'}")
    print(terminal_text(f"preprocessing: {cfg['input_size'][1]} px, mean {cfg['mean']}, std {cfg['std']}, "
                        f"{cfg['interpolation']}, crop ratio {cfg['crop_pct']:g}"))  # fmt: skip
    print("\n".join(terminal_text(line) for line in describe_model(loaded.model)))
    return 0
