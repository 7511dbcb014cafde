"""The ``vit5`` command: train, eval, predict, info (and demo, the ``make demo`` job).

Every command parses its arguments, builds what the config describes, and hands it to the library;
the work itself lives in :mod:`vit5.train` and :mod:`vit5.networks`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vit5.config import ConfigNode, apply_overrides, load_config, to_container

logger = logging.getLogger("vit5")


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


def setup_logging(run_dir: Path | None = None, rank: int = 0) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    formatter = logging.Formatter("%(asctime)s %(levelname).1s %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    root.addHandler(stream)
    if run_dir is not None and rank == 0:
        make_directory(run_dir, "the run directory")
        file_handler = logging.FileHandler(run_dir / "log.txt")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)


# --------------------------------------------------------------------------------------------------
# train


def build_run_config(args: argparse.Namespace) -> ConfigNode:
    """The run config of ``vit5 train``'s arguments (see :func:`build_run_config_and_weights`)."""
    return build_run_config_and_weights(args)[0]


def build_run_config_and_weights(args: argparse.Namespace) -> tuple[ConfigNode, Any]:
    """Recipe defaults < ``--config`` file < ``--finetune`` checkpoint < ``--preset`` < flags < dotted overrides.

    With ``--finetune`` (or a config's ``train.finetune``) the network is the checkpoint's, built at
    ``data.image_size`` (default: the checkpoint's), unless ``--preset`` or the config file's own
    ``model`` names another; the loaded weights are returned beside the config.
    """
    from vit5.train.recipes import default_run_config, load_python_config

    if args.config:
        cfg = load_python_config(args.config, trust_config=args.trust_config)
        if args.dataset and args.dataset != cfg.data.dataset:
            cfg.data.dataset = args.dataset
    else:
        cfg = default_run_config(args.dataset or "digits", args.preset)
    config_model = bool(args.config) and to_container(cfg.model) != to_container(
        default_run_config(cfg.data.dataset).model
    )
    if args.preset and args.config:
        cfg.model = default_run_config(cfg.data.dataset, args.preset).model
    args.finetune = args.finetune or cfg.train.get("finetune")
    if args.ema and not args.finetune:
        raise UsageError("--ema picks the EMA weights of --finetune PATH; give --finetune too")
    own_model = bool(args.preset) or config_model
    pretrained = _apply_finetune(cfg, args, own_model) if args.finetune else None
    flags = {
        "data.data_dir": args.data_dir, "schedule.epochs": args.epochs, "data.batch_size": args.batch_size,
        "optim.lr": args.lr, "train.precision": args.precision, "train.seed": args.seed,
        "data.num_workers": args.workers, "data.image_size": args.image_size,
    }  # fmt: skip
    for dotted, value in flags.items():
        if value is not None:
            section, key = dotted.split(".")
            cfg[section][key] = value
    if args.compile:
        cfg.train.compile = True
    if args.download:
        cfg.data.download = True
    if args.skip_nonfinite:
        cfg.train.skip_nonfinite = True
    if args.skip_bad_images:
        cfg.data.skip_bad_images = True
    cfg = apply_overrides(cfg, args.overrides)
    if pretrained is not None and not own_model:
        _rebuild_finetune_model(cfg, pretrained)
    return cfg, pretrained


def _apply_finetune(cfg: ConfigNode, args: argparse.Namespace, own_model: bool) -> Any:
    """Point the run config at ``--finetune``'s weights; the architecture is the checkpoint's unless
    ``own_model`` (``--preset`` or a config file's model; model.* overrides change it either way).
    Returns the loaded weights."""
    from vit5.train.finetune import load_pretrained

    pretrained = load_pretrained(
        args.finetune,
        ema=bool(args.ema or cfg.train.get("finetune_ema")),
        sha256=args.finetune_sha256 or cfg.train.get("finetune_sha256"),
        trust_config=args.trust_config,
    )
    model = pretrained.model
    cfg.train.finetune = pretrained.source
    cfg.train.finetune_ema = bool(args.ema or cfg.train.get("finetune_ema"))
    cfg.train.finetune_sha256 = pretrained.sha256
    cfg.data.in_channels = model.in_channels  # grayscale data is replicated for an RGB checkpoint
    if not (own_model and args.config):  # a config file's model is built at its data.image_size
        cfg.data.image_size = model.image_size
    if not own_model:
        cfg.model = ConfigNode(pretrained.config)
        for key in ("image_size", "in_channels", "num_classes"):
            cfg.model[key] = getattr(model, key)
    return pretrained


def _rebuild_finetune_model(cfg: ConfigNode, pretrained: Any) -> None:
    """The checkpoint's architecture built at ``data.image_size`` (RoPE at the new grid's integer
    positions, as the official fine-tuning code; :func:`vit5.rebuild_at_resolution`), with the data's
    class count and channels."""
    from vit5.networks.resize import rebuild_config

    size = cfg.data.image_size
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"data.image_size must be an int >= 1, got {size!r}")
    cfg.model = rebuild_config(cfg.model, size)
    cfg.model.image_size = "${data.image_size}"
    cfg.model.in_channels = "${data.in_channels}"
    cfg.model.num_classes = "${data.num_classes}"


# Options of `vit5 train` that shape a run; `--resume` takes the run's own config.yaml instead.
# Only where the data is (--data-dir) and how many loader processes read it (--workers: per-sample
# seeding makes the batches independent of it) may change on resume.
_RUN_OPTIONS = ("config", "preset", "dataset", "download", "out", "epochs", "batch_size", "lr", "precision",
                "compile", "seed", "skip_nonfinite", "skip_bad_images", "finetune", "ema", "finetune_sha256",
                "image_size")  # fmt: skip


@contextlib.contextmanager
def _removed_if_unstarted(created: list[Path]) -> Iterator[None]:
    """If the body fails, delete the run directory ``created[0]`` (and its parents in ``created``,
    the folders this command made) when it holds nothing but the log file: the run failed before it
    started (missing data, a config error), and a typo should leave no empty run behind. A
    directory with anything else in it is kept."""
    try:
        yield
    except BaseException:
        if created:
            _remove_unstarted_run(created)
        raise


def _remove_unstarted_run(created: list[Path]) -> None:
    for handler in list(logging.getLogger().handlers):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            logging.getLogger().removeHandler(handler)
    run_dir = created[0]
    entries = list(run_dir.iterdir()) if run_dir.is_dir() else []
    if not all(entry.name == "log.txt" and entry.is_file() for entry in entries):
        return
    for entry in entries:
        entry.unlink()
    for folder in created:  # the run directory, then the parents made for it while they are empty
        if not folder.is_dir() or any(folder.iterdir()):
            break
        folder.rmdir()


def command_train(args: argparse.Namespace) -> int:
    from vit5.train.loop import train

    rank = int(os.environ.get("RANK", "0"))
    pretrained = None
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise UsageError(f"--resume {run_dir}: not a run directory (no config.yaml)")
        cfg = load_config(run_dir / "config.yaml", trust_config=args.trust_config)
        given = [
            "--" + name.replace("_", "-")
            for name in _RUN_OPTIONS
            if getattr(args, name, None) not in (None, False)
        ]
        if args.overrides or given:
            raise UsageError(
                "--resume continues a run exactly as configured (its config.yaml; only --data-dir and "
                f"--workers may change); remove {' '.join(given + list(args.overrides))}"
            )
        if args.data_dir is not None:
            cfg.data.data_dir = args.data_dir
        if args.workers is not None:
            cfg.data.num_workers = args.workers
    else:
        cfg, pretrained = build_run_config_and_weights(args)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(args.out) if args.out else Path("runs") / f"{cfg.data.dataset}-{stamp}"
        if (run_dir / "checkpoints").exists() or (run_dir / "config.yaml").exists():
            raise UsageError(
                f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out"
            )
    created = [parent for parent in (run_dir, *run_dir.parents) if not parent.exists()]
    setup_logging(run_dir, rank)
    try:
        with _removed_if_unstarted(created if rank == 0 else []):
            summary = train(cfg, run_dir, resume=bool(args.resume), trust_config=args.trust_config,
                            pretrained_state=pretrained.model.state_dict() if pretrained is not None else None)  # fmt: skip
    except KeyboardInterrupt:  # Ctrl-C: every file of the run is whole (atomic writes)
        if os.environ.get("VIT5_DEBUG"):
            raise
        if rank == 0:
            from vit5.train.checkpoint import has_checkpoint

            hint = (f"continue from its last checkpoint with `vit5 train --resume {run_dir}`"
                    if has_checkpoint(run_dir) else "no checkpoint had been written yet")  # fmt: skip
            print(f"vit5 train: interrupted; {hint}", file=sys.stderr)
        return 130
    if rank == 0:
        ema = " --ema" if cfg.train.get("ema_decay") else ""
        logger.info("evaluate: vit5 eval %s%s", run_dir, ema)
        logger.info("predict:  vit5 predict %s%s IMAGE [IMAGE ...]", run_dir, ema)
        logger.info("export:   vit5 export %s%s --format onnx --out %s.onnx", run_dir, ema, run_dir.name)
        print(
            json.dumps(
                {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
            )
        )
    return 0


# --------------------------------------------------------------------------------------------------
# eval / predict / convert: anything vit5.load_model takes


def _load_source(args: argparse.Namespace) -> Any:
    """``vit5.load_model_and_config`` with the shared flags (--ema, --image-size, --trust-config,
    --config), then --crop-ratio / --interpolation applied to the ``pretrained_cfg``."""
    from vit5.networks.pretrained_cfg import updated_pretrained_cfg
    from vit5.weights import load_model_and_config

    config = None
    if getattr(args, "config", None):
        config = _network_config_file(args.config, args.trust_config)
    loaded = load_model_and_config(args.source, ema=args.ema, image_size=args.image_size,
                                   trust_config=args.trust_config, config=config)  # fmt: skip
    changes = {key: value for key, value in (("crop_pct", getattr(args, "crop_ratio", None)),
               ("interpolation", getattr(args, "interpolation", None))) if value is not None}  # fmt: skip
    if changes:
        loaded.model.pretrained_cfg = updated_pretrained_cfg(loaded.model.pretrained_cfg, **changes)
    return loaded


def _network_config_file(path: str, trust_config: bool) -> Any:
    """``--config`` for a checkpoint without one: a Python file (code, run as such) or YAML (data)."""
    from vit5.train.recipes import load_python_config

    if Path(path).suffix.lower() in (".yaml", ".yml"):
        return load_config(path, trust_config=trust_config)
    return load_python_config(path)


def _device(name: str) -> Any:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def _recorded_defaults(loaded: Any) -> bool:
    """Whether the preprocessing is the run's own (its test set is then used exactly as in training)."""
    cfg = loaded.model.pretrained_cfg
    return (loaded.data.get("image_size") == cfg["input_size"][1] and cfg["crop_pct"] == loaded.data.get("crop_ratio", 1.0)
            and cfg["interpolation"] == loaded.data.get("interpolation", "bilinear"))  # fmt: skip


def command_eval(args: argparse.Namespace) -> int:
    import torch

    from vit5.data import build_datasets
    from vit5.data.evaluation import evaluation_set, folder_split
    from vit5.train.distributed import DistributedContext
    from vit5.train.evaluate import evaluate
    from vit5.train.metrics import plot_confusion

    loaded = _load_source(args)
    model, cfg = loaded.model, loaded.model.pretrained_cfg
    dataset = args.dataset or loaded.data.get("name")
    data_dir = args.data_dir or loaded.run_config.get("data", {}).get("data_dir")
    if dataset in (None, "imagefolder"):
        if not data_dir:
            raise UsageError(
                f"{loaded.source} does not name a dataset: pass --data-dir DIR (class folders) or --dataset"
            )
        split = folder_split(data_dir, cfg["class_names"])
        test_set, names = evaluation_set(split, cfg), list(cfg["class_names"] or split.classes)
        dataset = f"{data_dir}"
    else:
        _, test_set, spec = build_datasets(dataset, data_dir, image_size=model.image_size, augment="none",
                                           in_channels=model.in_channels)  # fmt: skip
        if spec.num_classes != model.num_classes:
            raise UsageError(
                f"{dataset} has {spec.num_classes} classes but the model predicts {model.num_classes}"
            )
        if not _recorded_defaults(loaded):
            test_set = evaluation_set(test_set.source, cfg)
        names = spec.class_names or [str(i) for i in range(spec.num_classes)]
    if len(names) > model.num_classes:
        raise UsageError(f"{dataset} has {len(names)} classes but the model predicts {model.num_classes}")
    names = names + [str(i) for i in range(len(names), model.num_classes)]
    device = _device(args.device)
    loader = torch.utils.data.DataLoader(test_set, batch_size=args.batch_size, num_workers=args.workers)
    result = evaluate(model.to(device), loader, model.num_classes, DistributedContext(device=device),
                      precision=args.precision, confusion=True)  # fmt: skip
    source = Path(args.source)
    out = (
        Path(args.out)
        if args.out
        else (source / "eval" if (source / "config.yaml").is_file() else Path("vit5-eval"))
    )
    make_directory(out, "the output directory")
    summary = f"{'EMA ' if loaded.ema else ''}weights {loaded.source}"
    figure = None
    if model.num_classes <= 100:
        figure = plot_confusion(result.confusion, names, out / "confusion.png",
                                title=f"{dataset}, top-1 {result.top1:.4f} ({loaded.source})")  # fmt: skip
    print(f"{dataset} ({result.count} images, {cfg['input_size'][1]} px, {cfg['interpolation']}, crop ratio "
          f"{cfg['crop_pct']:g}, {args.precision} on {device.type}), {summary}")  # fmt: skip
    print(f"top-1 {result.top1:.4f}  top-5 {result.top5:.4f}  loss {result.loss:.4f}")
    per_class = {name: None if math.isnan(acc) else acc for name, acc in zip(names, result.per_class)}
    if len(per_class) <= 100:
        width = max(len(n) for n in names)
        for name, accuracy in per_class.items():
            print(f"  {name:<{width}}  {'n/a (no test images)' if accuracy is None else f'{accuracy:.4f}'}")
    print(json.dumps({"top1": result.top1, "top5": result.top5, "loss": result.loss, "count": result.count,
                      "per_class": per_class, "confusion_png": str(figure) if figure else None}))  # fmt: skip
    return 0


def command_predict(args: argparse.Namespace) -> int:
    import torch
    from PIL import UnidentifiedImageError

    from vit5.data import eval_transform, read_image

    loaded = _load_source(args)
    device = _device(args.device)
    model, cfg = loaded.model.to(device), loaded.model.pretrained_cfg
    channels, size, _ = cfg["input_size"]
    transform = eval_transform(size, cfg["mean"], cfg["std"], channels, cfg["crop_pct"], cfg["interpolation"])
    names = cfg["class_names"] or [str(i) for i in range(model.num_classes)]

    def probabilities(batch: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, K)
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=args.precision == "bf16"):
            return model({"input": batch.permute(0, 2, 3, 1).to(device)})["logits"].float().softmax(-1).cpu()

    return _predict_images(args, transform, probabilities, names, (read_image, UnidentifiedImageError))


def _predict_images(args: argparse.Namespace, transform: Any, probabilities: Any, names: list[str],
                    reader: tuple[Any, type]) -> int:  # fmt: skip
    """Top-k labels of ``args.images`` in batches of ``--batch-size``; printed, and written to --out."""
    import torch

    read_image, decode_error = reader
    k = min(args.top_k, len(names))
    results, failed, batch, paths = [], 0, [], []

    def flush() -> None:
        if not batch:
            return
        top = probabilities(torch.stack(batch)).topk(k)
        for path, values, indices in zip(paths, top.values.tolist(), top.indices.tolist()):
            labels = [(names[i], p) for p, i in zip(values, indices)]
            print(f"{path}: " + ", ".join(f"{name} ({p:.3f})" for name, p in labels))
            results.append({"image": str(path), "top": [{"label": n, "probability": p} for n, p in labels]})
        batch.clear()
        paths.clear()

    for path in args.images:
        try:
            batch.append(transform(read_image(path)))
            paths.append(path)
        except (FileNotFoundError, decode_error, OSError, ValueError) as error:
            print(f"{path}: cannot read image ({error})", file=sys.stderr)
            failed += 1
        if len(batch) == args.batch_size:
            flush()
    flush()
    if args.out:
        _write_predictions(Path(args.out), results)
    else:
        print(json.dumps(results))
    return 1 if failed else 0


def _write_predictions(path: Path, results: list[dict[str, Any]]) -> None:
    """Predictions as JSON (``.json``) or CSV (``.csv``: image, rank, label, probability), atomically."""
    import csv
    import io

    from vit5._io import atomic_write_text

    if path.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["image", "rank", "label", "probability"])
        for row in results:
            for rank, item in enumerate(row["top"], 1):
                writer.writerow([row["image"], rank, item["label"], f"{item['probability']:.6f}"])
        atomic_write_text(path, buffer.getvalue())
    else:
        atomic_write_text(path, json.dumps(results, indent=1))
    print(f"wrote {len(results)} predictions to {path}", file=sys.stderr)


def command_convert(args: argparse.Namespace) -> int:
    from vit5.convert import convert_checkpoint

    out = convert_checkpoint(args.source, args.out, to=args.to, ema=args.ema, image_size=args.image_size,
                             trust_config=args.trust_config,
                             config=_network_config_file(args.config, args.trust_config) if args.config else None)  # fmt: skip
    print(json.dumps({"out": str(out), "format": args.to}))
    return 0


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
    if args.preset:
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
    print("\n".join(describe_model(model)))
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
    print(f"source: {loaded.source} ({loaded.kind} checkpoint), sha256 {cfg['sha256']}")
    print(f"EMA weights: {'yes' if has_ema else 'no'}")
    print(f"preprocessing: {cfg['input_size'][1]} px, mean {cfg['mean']}, std {cfg['std']}, {cfg['interpolation']}, "
          f"crop ratio {cfg['crop_pct']:g}")  # fmt: skip
    print("\n".join(describe_model(loaded.model)))
    return 0


def command_demo(args: argparse.Namespace) -> int:
    """``make demo``: train the default tiny hybrid on the embedded digits."""
    args.overrides = args.overrides or []
    return command_train(args)


# --------------------------------------------------------------------------------------------------


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from vit5.data import DATASETS

    parser.add_argument(
        "--config",
        help="Python config file defining `config` or model/data/optim/schedule/train, or a run's config.yaml",
    )
    parser.add_argument("--preset", help="model preset (see `vit5 info --preset`), e.g. vit5_tiny_hybrid")
    parser.add_argument(
        "--finetune",
        metavar="PATH",
        help="start from these weights (a vit5 run or .safetensors, an official .pth, an nvSubquadratic .ckpt, "
        "or an http(s) URL, downloaded once into $VIT5_CACHE); the architecture is the checkpoint's unless "
        "--preset / model.* say otherwise; the head is replaced when the class count differs",
    )
    parser.add_argument("--ema", action="store_true", help="with --finetune: start from its EMA weights")
    parser.add_argument(
        "--finetune-sha256", metavar="HEX", help="with --finetune: the file's expected sha256"
    )
    parser.add_argument(
        "--image-size",
        type=_int_at_least(1),
        help="build the model at this resolution (with --finetune: RoPE at the new grid, pos_embed resampled "
        "bicubically, as the official fine-tuning code)",
    )
    parser.add_argument("--dataset", choices=DATASETS, help="dataset (default: digits, embedded)")
    parser.add_argument("--data-dir", help="where the dataset files are")
    parser.add_argument(
        "--download", action="store_true", help="download Fashion-MNIST/CIFAR if missing (internet)"
    )
    parser.add_argument("--out", help="run directory (default: runs/<dataset>-<time>)")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run exactly (only --data-dir, --workers may change)",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="global batch size (split over DDP processes)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--precision", choices=("fp32", "bf16"))
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the training forward (the first step compiles: about 40 s for the "
        "Fashion-MNIST default, minutes for ViT-S; evaluation stays eager)",
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int, help="data-loader worker processes")
    parser.add_argument("--skip-nonfinite", action="store_true", help="skip batches whose loss is NaN/inf")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip images that fail to decode")
    parser.add_argument("--trust-config", action="store_true", help=_TRUST_HELP)
    parser.add_argument(
        "overrides", nargs="*", help="dotted overrides such as model.hidden_dim=96 optim.lr=1e-3"
    )


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


def _add_source_arguments(parser: argparse.ArgumentParser, *, inference: bool) -> None:
    """The words every command that reads a trained model shares."""
    parser.add_argument("source", help="run directory, checkpoint directory, .safetensors, official .pth or "
                        "nvSubquadratic .ckpt")  # fmt: skip
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vit5", description="ViT-5 image classifiers: train, evaluate, predict."
    )
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
    info = commands.add_parser("info", help="parameters, FLOPs, token layout and blocks of a model")
    info.add_argument("source", nargs="?", metavar="CHECKPOINT", help="a checkpoint (anything eval takes)")
    info.add_argument("--preset")
    info.add_argument("--config")
    info.add_argument("--trust-config", action="store_true", help=_TRUST_HELP)
    info.add_argument("overrides", nargs="*")
    return parser


COMMANDS = {"train": command_train, "demo": command_demo, "eval": command_eval, "predict": command_predict,
            "info": command_info, "convert": command_convert}  # fmt: skip


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
    args = parse_arguments(argv)
    if args.command != "train" and args.command != "demo":
        setup_logging()
    from vit5.train.loop import NonFiniteLossError

    try:
        return COMMANDS[args.command](args)
    except (UsageError, FileNotFoundError, ValueError, TypeError, KeyError, NonFiniteLossError) as error:
        # Configuration and data mistakes (unknown override keys, bad values, missing or damaged
        # files) are reported in one line; VIT5_DEBUG=1 shows the traceback.
        if os.environ.get("VIT5_DEBUG"):
            raise
        print(f"vit5 {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
