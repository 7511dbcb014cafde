"""``vit5 export`` (ONNX / ``torch.export`` files, :mod:`vit5.export`) and ``predict`` on an exported
``.onnx`` file."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
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

    out = Path(args.out)
    fmt = args.format or {".onnx": "onnx", ".pt2": "pt2"}.get(out.suffix.lower())
    if fmt is None:
        raise UsageError(f"--out {out}: cannot tell the format from the suffix; pass --format onnx or pt2")
    if fmt == "pt2" and args.opset is not None:
        raise UsageError("--opset applies to --format onnx only")
    if (args.source is None) == (args.preset is None):
        raise UsageError("give either SOURCE (anything `vit5 eval` takes) or --preset NAME")
    with _stages(f"export {out.name}", 2) as stage:
        stage("loading the model")
        model = _export_model(args)
        stage(f"tracing and writing {fmt}")
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


@contextlib.contextmanager
def _stages(description: str, total: int) -> Iterator[Callable[[str], None]]:
    """Progress through a command's stages: a tqdm bar (stage name, elapsed time) when stderr is a
    terminal; otherwise debug-level log lines only (a failed command's stderr stays one line)."""
    from vit5.train.progress import progress_bar, use_bars

    bar = progress_bar(total, description, unit="stage") if use_bars() else None
    started = [False]

    def stage(name: str) -> None:
        if bar is None:
            logger.debug("%s: %s", description, name)
            return
        if started[0]:
            bar.update(1)
        started[0] = True
        bar.set_postfix_str(name)

    try:
        yield stage
        if bar is not None:
            bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def _export_model(args: argparse.Namespace):  # noqa: ANN202
    """The network ``vit5 export`` writes: ``--preset`` (random weights) or a checkpoint SOURCE."""
    from vit5.networks.pretrained_cfg import updated_pretrained_cfg

    if args.preset is not None:
        if args.ema or args.config:
            raise UsageError("--ema and --config need a checkpoint SOURCE, not --preset")
        from vit5.networks import create_model

        model = create_model(args.preset, **({"image_size": args.image_size} if args.image_size else {}))
        changes = {key: value for key, value in (("crop_pct", args.crop_ratio), ("interpolation", args.interpolation))
                   if value is not None}  # fmt: skip
        if changes:
            model.pretrained_cfg = updated_pretrained_cfg(model.pretrained_cfg, **changes)
        return model
    return _load_source(args).model
