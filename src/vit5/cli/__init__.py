"""The ``vit5`` command: train, eval, predict, convert, export, info, push (and demo, the ``make demo`` job).

Every command parses its arguments, builds what the config describes, and hands it to the library;
the work itself lives in :mod:`vit5.train` and :mod:`vit5.networks`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from vit5._extras import MissingExtraError
from vit5._text import terminal_text
from vit5.cli.common import (
    _TRUST_HELP,
    UsageError,
    _add_source_arguments,
    _int_at_least,
    add_budget_arguments,
    log_traceback,
    setup_logging,
)
from vit5.cli.deploy import command_export
from vit5.cli.hub import add_push_arguments, command_push
from vit5.cli.inference import command_convert, command_eval, command_predict
from vit5.cli.info import NVSUBQUADRATIC_HELP, command_info, describe_model
from vit5.cli.listing import command_list, version_text
from vit5.cli.train import _add_train_arguments, command_demo, command_train

__all__ = ["UsageError", "build_parser", "describe_model", "main", "parse_arguments"]

logger = logging.getLogger("vit5")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vit5", description="ViT-5 image classifiers: train, evaluate, predict."
    )
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback (also VIT5_DEBUG=1); "
                        "anywhere on the command line")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train_arguments(commands.add_parser("train", help="train a model (default: tiny hybrid on digits)"))
    _add_train_arguments(commands.add_parser("demo", help="the make-demo job: vit5 train with defaults"))
    evaluate = commands.add_parser(
        "eval", help="evaluate a checkpoint: top-1/top-5, per class, confusion.png"
    )
    _add_source_arguments(evaluate, inference=True)
    evaluate.add_argument(
        "--dataset", help="dataset name (default: the run's); else --data-dir class folders"
    )
    evaluate.add_argument(
        "--data-dir", help="the dataset's files, or a folder of class folders (an ImageNet-val copy)"
    )
    evaluate.add_argument("--out", help="where to write confusion.png")
    evaluate.add_argument("--batch-size", type=_int_at_least(1), default=256)
    evaluate.add_argument("--workers", type=_int_at_least(0), default=0)
    predict = commands.add_parser("predict", help="top-k labels of images (PNG/JPEG)")
    _add_source_arguments(predict, inference=True)
    predict.add_argument("images", nargs="+")
    predict.add_argument(
        "--top-k", type=_int_at_least(1), default=5, help="labels per image (at most the number of classes)"
    )
    predict.add_argument("--batch-size", type=_int_at_least(1), default=32)
    predict.add_argument("--out", help="write the predictions to this .json or .csv file")
    convert = commands.add_parser(
        "convert", help="write any loadable checkpoint as vit5 safetensors (or official)"
    )
    _add_source_arguments(convert, inference=False)
    convert.add_argument(
        "--out", required=True, help="the file to write (.safetensors; .pth for --to official)"
    )
    convert.add_argument("--to", choices=("vit5", "official"), default="vit5",
                         help="vit5 safetensors with its config (default), or the official ViT-5 layout")  # fmt: skip
    export = commands.add_parser("export", help="write a model as ONNX (.onnx) or torch.export (.pt2)")
    export.add_argument("source", nargs="?", help="anything `vit5 eval` takes (or use --preset)")
    export.add_argument("--preset", help="export a preset's freshly initialised network instead")
    export.add_argument("--format", choices=("onnx", "pt2"), help="default: from the --out suffix")
    export.add_argument("--out", required=True, help="the file to write (.onnx or .pt2)")
    export.add_argument("--image-size", type=_int_at_least(1), help="export the trained model evaluated at this "
                        "resolution (the resize of eval --image-size; the file records the resized model)")  # fmt: skip
    export.add_argument("--ema", action="store_true", help="export the EMA weights (an error if none)")
    export.add_argument("--trust-config", action="store_true", help=_TRUST_HELP)
    export.add_argument("--config", help="network config for a checkpoint without one (.py is code)")
    export.add_argument("--crop-ratio", type=float, help="preprocessing recorded in the file")
    export.add_argument("--interpolation", choices=("bicubic", "bilinear"), help="recorded in the file")
    export.add_argument("--opset", type=int, help="ONNX opset (default: torch's)")
    info = commands.add_parser("info", help="parameters, FLOPs, token layout and blocks of a model")
    info.add_argument("source", nargs="?", metavar="CHECKPOINT", help="a checkpoint (anything eval takes)")
    info.add_argument("--preset")
    info.add_argument("--config")
    info.add_argument("--nvsubquadratic", action="store_true", help=NVSUBQUADRATIC_HELP)
    info.add_argument("--trust-config", action="store_true", help=_TRUST_HELP)
    info.add_argument("overrides", nargs="*")
    add_push_arguments(commands.add_parser("push", help="share a run or checkpoint on the Hugging Face Hub"))
    listing = commands.add_parser("list", help="presets, published weights, recipes and datasets")
    listing.add_argument("what", nargs="?", choices=("presets", "published", "recipes", "datasets"),
                         help="one section only (default: all)")  # fmt: skip
    for command in (export, info):
        add_budget_arguments(command)
    return parser


COMMANDS = {"train": command_train, "demo": command_demo, "eval": command_eval, "predict": command_predict,
            "info": command_info, "convert": command_convert, "export": command_export,
            "push": command_push, "list": command_list}  # fmt: skip


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting ``key=value`` overrides sit anywhere among the options."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    stray = [item for item in extras if item.startswith("-") or "=" not in item]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    source = getattr(args, "source", None)
    if args.command == "info" and source and "=" in source and not Path(source).exists():
        args.source, args.overrides = None, [source, *args.overrides]  # `info --preset X model.a=b`
    if extras:
        if not hasattr(args, "overrides"):
            parser.error(f"vit5 {args.command} takes no overrides: {' '.join(extras)}")
        args.overrides = list(args.overrides or []) + extras
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr (the traceback with ``--debug``).

    Exit codes: 0 done; 1 ``predict`` could not read some images (the others were predicted);
    2 an input or usage error, or any other failure reported in one line; 130 interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("VIT5_DEBUG", "") not in ("", "0")
    argv = [item for item in argv if item != "--debug"]
    args = parse_arguments(argv)
    if args.command != "train" and args.command != "demo":
        setup_logging()
    from vit5.networks.budget import budget_limits

    try:
        with budget_limits(getattr(args, "max_params", None), getattr(args, "max_activation_gib", None)):
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"vit5 {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one error path: input, data and library errors alike
        log_traceback(error)
        if debug:
            raise
        print(f"vit5 {args.command}: error: {terminal_text(_one_line(error, args))}", file=sys.stderr)
        return 2


def _one_line(error: BaseException, args: argparse.Namespace) -> str:
    """What went wrong, in one line naming the input when the error itself does not."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = f"missing key {error.args[0]!r}"
    if isinstance(error, MemoryError):
        text = (
            f"out of memory{': ' + text if text else ''} (the input asks for more memory than is available)"
        )
    elif isinstance(error, RecursionError):
        text = "the input is nested too deeply (or refers to itself)"
    elif not isinstance(error, (UsageError, ValueError, TypeError, OSError, MissingExtraError)):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    named = isinstance(error, (UsageError, ValueError)) or (isinstance(error, OSError) and error.filename)
    inputs = [(flag, str(value)) for flag, value in (("", getattr(args, "source", None)),
              ("--config", getattr(args, "config", None)), ("--data-dir", getattr(args, "data_dir", None)),
              ("--resume", getattr(args, "resume", None)), ("--finetune", getattr(args, "finetune", None)))
              if isinstance(value, (str, os.PathLike))]  # fmt: skip
    if named or not inputs or any(value in text for _, value in inputs):
        return text
    if len(inputs) == 1 and not inputs[0][0]:
        return f"{inputs[0][1]}: {text}"
    return f"{text} (reading {', '.join(f'{flag} {value}'.strip() for flag, value in inputs)})"


if __name__ == "__main__":
    sys.exit(main())
