"""``vit5 export`` (ONNX / ``torch.export`` files, :mod:`vit5.export`) and ``predict`` on an exported
``.onnx`` file."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from vit5.cli.common import (
    UsageError,
)
from vit5.cli.inference import _load_source

logger = logging.getLogger("vit5")

# --------------------------------------------------------------------------------------------------
# export: ONNX / torch.export files (vit5.export), and predict on an exported .onnx


def command_export(args: argparse.Namespace) -> int:
    from vit5.export import ExportError, export_onnx, export_program
    from vit5.networks.pretrained_cfg import updated_pretrained_cfg

    out = Path(args.out)
    fmt = args.format or {".onnx": "onnx", ".pt2": "pt2"}.get(out.suffix.lower())
    if fmt is None:
        raise UsageError(f"--out {out}: cannot tell the format from the suffix; pass --format onnx or pt2")
    if fmt == "pt2" and args.opset is not None:
        raise UsageError("--opset applies to --format onnx only")
    if (args.source is None) == (args.preset is None):
        raise UsageError("give either SOURCE (anything `vit5 eval` takes) or --preset NAME")
    if args.preset is not None:
        if args.ema or args.config:
            raise UsageError("--ema and --config need a checkpoint SOURCE, not --preset")
        from vit5.networks import create_model

        model = create_model(args.preset, **({"image_size": args.image_size} if args.image_size else {}))
        changes = {key: value for key, value in (("crop_pct", args.crop_ratio), ("interpolation", args.interpolation))
                   if value is not None}  # fmt: skip
        if changes:
            model.pretrained_cfg = updated_pretrained_cfg(model.pretrained_cfg, **changes)
    else:
        model = _load_source(args).model
    try:
        if fmt == "onnx":
            export_onnx(model, out, opset=args.opset)
        else:
            export_program(model, out)
    except (ExportError, ImportError) as error:
        raise UsageError(str(error)) from error
    size, k = model.image_size, model.num_classes
    print(f"wrote {out} ({fmt}: input [B, {size}, {size}, {model.in_channels}] float32 channels-last -> logits "
          f"[B, {k}], {out.stat().st_size / 1e6:.1f} MB)")  # fmt: skip
    print(json.dumps({"out": str(out), "format": fmt, "bytes": out.stat().st_size, "image_size": size,
                      "num_classes": k, "pretrained_cfg": model.pretrained_cfg}))  # fmt: skip
    return 0
