"""The ``vit5`` command."""

from __future__ import annotations

import argparse
import sys


def demo(args: argparse.Namespace) -> int:
    import torch
    import torch.nn.functional as F

    from vit5.data import build_datasets
    from vit5.networks.presets import create_model

    train, _, spec = build_datasets("digits", augment="none")
    images = torch.stack([train[i][0] for i in range(32)]).permute(0, 2, 3, 1)  # (B, H, W, C)
    labels = torch.tensor([train[i][1] for i in range(32)])
    model = create_model("vit5_tiny_hybrid", in_channels=spec.in_channels, image_size=spec.image_size)
    logits = model({"input": images})["logits"]
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    params = sum(p.numel() for p in model.parameters())
    print(f"model vit5_tiny_hybrid: {params:,} parameters, {model.flop_count():,} FLOPs/image (train), "
          f"{model.flop_count(inference=True):,} (inference)")
    print(f"digits batch {tuple(images.shape)} -> logits {tuple(logits.shape)}, loss {loss.item():.4f}, "
          f"grad norm {torch.cat([p.grad.flatten() for p in model.parameters()]).norm():.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vit5", description="ViT-5 image classifiers")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="forward + backward of the tiny hybrid preset on a digits batch")
    args = parser.parse_args(argv)
    return {"demo": demo}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
