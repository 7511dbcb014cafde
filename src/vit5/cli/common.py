"""What the commands share: one-line usage errors, logging, directories, argument types."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger("vit5")

#: ``vit5.data.DATASETS``, named here so that building the parser (``--help``) imports no data code.
DATASET_NAMES = ("digits", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "manifest", "hf")


class UsageError(Exception):
    """A problem with what the user asked for; printed without a traceback."""


def make_directory(path: Path, what: str) -> None:
    """``mkdir -p path``, as a one-line error when a file is in the way or it is not writable."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"cannot create {what} {path}: a file of that name is in the way")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create {what} {path}: {error.strerror or error}") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"cannot write to {what} {path}: permission denied")


class DataFormatter(logging.Formatter):
    """Log lines whose arguments are data: every non-numeric ``%``-argument of a record (a path, a
    class name, an error message, a URL from a file) is shown through
    :func:`vit5._text.terminal_text`, so it cannot forge a line or steer the terminal. The message
    template is vit5's own and kept as it is."""

    def format(self, record: logging.LogRecord) -> str:
        from vit5._text import terminal_text

        def shown(value: object) -> object:  # numbers stay numbers (%d, %.3f)
            return value if isinstance(value, (int, float)) else terminal_text(value)

        args = record.args
        if args:
            record = logging.makeLogRecord(record.__dict__)
            record.args = ({k: shown(v) for k, v in args.items()} if isinstance(args, dict)
                           else tuple(shown(v) for v in args))  # fmt: skip
        return super().format(record)


def setup_logging(run_dir: Path | None = None, rank: int = 0) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    formatter = DataFormatter("%(asctime)s %(levelname).1s %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    root.addHandler(stream)
    for chatty in ("httpx", "httpcore"):  # huggingface_hub's client logs every request at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if run_dir is not None and rank == 0:
        make_directory(run_dir, "the run directory")
        file_handler = logging.FileHandler(run_dir / "log.txt")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)


def log_traceback(error: BaseException) -> None:
    """Write ``error``'s traceback to the run's ``log.txt`` when the command logs to one (once)."""
    if getattr(error, "_vit5_logged", False):
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            record = logging.LogRecord("vit5", logging.ERROR, __file__, 0, "failed: %s", (error,),
                                       (type(error), error, error.__traceback__))  # fmt: skip
            handler.handle(record)
            with contextlib.suppress(AttributeError):  # built-in exceptions without a __dict__
                error._vit5_logged = True  # type: ignore[attr-defined]


def _int_at_least(minimum: int):
    """An argparse ``type`` accepting integers >= ``minimum`` (the error names the value and the bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


_TRUST_HELP = ("build configs read from files even if they name targets outside vit5's registry "
               "(only for files you wrote: a config target is code that runs)")  # fmt: skip


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """``--max-params`` / ``--max-activation-gib``: budgets for networks described by files (vit5.networks.budget)."""
    parser.add_argument("--max-params", type=_positive_number, help="refuse a network read from a file or download "
                        "with more parameters (default: $VIT5_MAX_PARAMS or 4e9)")  # fmt: skip
    parser.add_argument("--max-activation-gib", type=_positive_number, help="refuse a network read from a file whose "
                        "batch-1 activations exceed this (default: $VIT5_MAX_ACTIVATION_GIB or 32)")  # fmt: skip


def _add_source_arguments(parser: argparse.ArgumentParser, *, inference: bool) -> None:
    """The words every command that reads a trained model shares."""
    add_budget_arguments(parser)
    parser.add_argument("source", help="run directory, checkpoint directory, .safetensors, official .pth, "
                        "nvSubquadratic .ckpt, a published name (vit5_small_patch16_224), "
                        "hf-hub:ORG/REPO[@REV][/FILE] or an https URL")  # fmt: skip
    parser.add_argument("--ema", action="store_true", help="use the EMA weights (an error if there are none)")
    parser.add_argument("--image-size", type=_int_at_least(1),
                        help="evaluate the trained model at this resolution (RoPE at the training grid's scale, "
                        "pos_embed resampled bicubically)")  # fmt: skip
    parser.add_argument("--trust-config", action="store_true", help=_TRUST_HELP)
    parser.add_argument(
        "--config", help="network config for a checkpoint without one (.py is code, .yaml data)"
    )
    if inference:
        parser.add_argument(
            "--crop-ratio", type=float, help="resize to size / ratio, center-crop (default: recorded)"
        )
        parser.add_argument("--interpolation", choices=("bicubic", "bilinear"), help="default: recorded")
        parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
        parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
