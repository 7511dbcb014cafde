"""``vit5 eval``, ``predict`` and ``convert``: anything :func:`vit5.load_model` takes."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from vit5._io import contained_path
from vit5._text import csv_field, terminal_text
from vit5.cli.common import (
    UsageError,
    make_directory,
)

logger = logging.getLogger("vit5")

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
    from vit5.train.recipes import config_file, load_python_config, read_data_config

    kind, file = config_file(path)
    if kind in ("yaml", "json"):
        if not file.is_file():
            raise FileNotFoundError(f"config file {file} does not exist")
        return read_data_config(kind, file, trust_config=trust_config)
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


def _eval_out_dir(args: argparse.Namespace) -> Path:
    """``--out``, else ``RUN/eval`` for a run directory (kept inside it: no symlink out), else ``vit5-eval``."""
    source = Path(args.source)
    if args.out:
        return Path(args.out)
    if not (source / "config.yaml").is_file():
        return Path("vit5-eval")
    out = source / "eval"
    try:  # a received run may not choose where eval writes
        for path in (out, out / "confusion.png"):
            if path.is_symlink():
                raise ValueError(f"{path} is a symlink")
        contained_path(source, "eval", "the run's eval directory")
    except ValueError as error:
        raise UsageError(f"{error}: refusing to write outside the run; pass --out DIR") from None
    return out


def _recorded_data_dir(args: argparse.Namespace, loaded: Any) -> Any:
    """The run's recorded ``data.data_dir`` when vit5's rule lets it be used (:mod:`vit5.io.run_origin`)."""
    from vit5.io.run_origin import check_recorded_data_dir, run_directory_of

    recorded = loaded.run_config.get("data", {}).get("data_dir")
    local = loaded.origin is None or loaded.origin.kind == "path"
    run_dir = run_directory_of(args.source) if local and Path(args.source).exists() else None
    where = run_dir / "config.yaml" if run_dir is not None else loaded.source
    try:
        return check_recorded_data_dir(recorded, run_dir, str(where))
    except ValueError as error:
        raise UsageError(str(error)) from None


def command_eval(args: argparse.Namespace) -> int:
    import torch

    from vit5.data import build_datasets
    from vit5.data.evaluation import evaluation_set, own_data_split
    from vit5.train.distributed import DistributedContext
    from vit5.train.evaluate import evaluate
    from vit5.train.metrics import plot_confusion
    from vit5.train.report import MATRIX_CLASSES, classification_report, write_report

    _eval_out_dir(args)  # refused before the work when a received run would redirect the output
    loaded = _load_source(args)
    model, cfg = loaded.model, loaded.model.pretrained_cfg
    dataset = args.dataset or loaded.data.get("name")
    data_dir = args.data_dir or _recorded_data_dir(args, loaded)
    if dataset in (None, "imagefolder", "manifest", "hf"):
        if not data_dir:
            raise UsageError(
                f"{loaded.source} does not name a dataset: pass --data-dir DIR (class folders) or --dataset"
            )
        run_data = loaded.run_config.get("data", {})
        split_file = contained_path(args.source, "split.csv", "the run's split file")
        own_run = not args.data_dir and split_file.is_file()  # the run's own held-out images
        split = own_data_split(dataset or "imagefolder", data_dir, cfg["class_names"],
                               split_file=split_file if own_run else None,
                               image_column=run_data.get("image_column", "image"),
                               label_column=run_data.get("label_column", "label"))  # fmt: skip
        test_set, names = evaluation_set(split, cfg), list(cfg["class_names"] or split.classes)
        dataset = f"{data_dir}" + (" (the run's held-out split)" if own_run else "")
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
                      precision=args.precision, confusion=True, progress="eval")  # fmt: skip
    out = _eval_out_dir(args)
    make_directory(out, "the output directory")
    origin = (
        loaded.origin.given if loaded.origin is not None and loaded.origin.kind != "path" else loaded.source
    )
    summary = f"{'EMA ' if loaded.ema else ''}weights {origin}"
    figure = None
    report = classification_report(result.confusion, names)
    if model.num_classes <= MATRIX_CLASSES:
        figure = plot_confusion(result.confusion, names, out / "confusion.png",
                                title=f"{dataset}, top-1 {result.top1:.4f} ({loaded.source})")  # fmt: skip
    files = write_report(out, report, {"top1": result.top1, "top5": result.top5, "loss": result.loss,
                                       "source": str(loaded.source), "data": str(dataset)})  # fmt: skip
    print(terminal_text(f"{dataset} ({result.count} images, {cfg['input_size'][1]} px, {cfg['interpolation']}, "
                        f"crop ratio {cfg['crop_pct']:g}, {args.precision} on {device.type}), {summary}"))  # fmt: skip
    macro = report["macro"]
    print(f"top-1 {result.top1:.4f}  top-5 {result.top5:.4f}  loss {result.loss:.4f}  macro F1 "
          f"{_fmt(macro['f1'])}  (precision {_fmt(macro['precision'])}, recall {_fmt(macro['recall'])})")  # fmt: skip
    per_class = {name: None if math.isnan(acc) else acc for name, acc in zip(names, result.per_class)}
    if len(per_class) <= MATRIX_CLASSES:
        shown = {name: terminal_text(name) for name in names}
        width = max(5, *(len(n) for n in shown.values()))
        print(f"  {'class':<{width}}  precision  recall  f1      images")
        for row in report["classes"]:
            print(f"  {shown[row['class']]:<{width}}  {_fmt(row['precision']):<9}  {_fmt(row['recall']):<6}  "
                  f"{_fmt(row['f1']):<6}  {row['support']}")  # fmt: skip
    else:
        print("most confused (true -> predicted: images):")
        for pair in report["most_confused"][:10]:
            print(f"  {terminal_text(pair['true'])} -> {terminal_text(pair['predicted'])}: {pair['count']}")
    print(json.dumps({"top1": result.top1, "top5": result.top5, "loss": result.loss, "count": result.count,
                      "per_class": per_class, "macro_f1": macro["f1"], "report": [str(f) for f in files],
                      "confusion_png": str(figure) if figure else None}))  # fmt: skip
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def command_predict(args: argparse.Namespace) -> int:
    import torch
    from PIL import UnidentifiedImageError

    from vit5.data import eval_transform, read_image

    if Path(args.source).suffix.lower() == ".onnx":
        return _predict_onnx(args)
    loaded = _load_source(args)
    device = _device(args.device)
    model, cfg = loaded.model.to(device), loaded.model.pretrained_cfg
    channels, size, _ = cfg["input_size"]
    transform = eval_transform(size, cfg["mean"], cfg["std"], channels, cfg["crop_pct"], cfg["interpolation"])
    names = _display_names(cfg, model.num_classes)

    def probabilities(batch: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, K)
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=args.precision == "bf16"):
            return model({"input": batch.permute(0, 2, 3, 1).to(device)})["logits"].float().softmax(-1).cpu()

    return _predict_images(args, transform, probabilities, names, (read_image, UnidentifiedImageError))


def _display_names(cfg: dict[str, Any], num_classes: int) -> list[str]:
    """Class labels to print: ``"<id> <readable name>"`` (``n01631663 eft``: the first synonym of the
    description) when the model records descriptions, else the ids, else the class indices."""
    names = cfg.get("class_names") or [str(i) for i in range(num_classes)]
    descriptions = cfg.get("class_descriptions")
    if descriptions and len(descriptions) == len(names):
        return [f"{name} {text.split(',')[0].strip()}" if text and text != name else name
                for name, text in zip(names, descriptions)]  # fmt: skip
    return list(names)


def _predict_images(args: argparse.Namespace, transform: Any, probabilities: Any, names: list[str],
                    reader: tuple[Any, type]) -> int:  # fmt: skip
    """Top-k labels of ``args.images`` in batches of ``--batch-size``; printed, and written to --out."""
    import torch
    from PIL.Image import DecompressionBombError

    read_image, decode_error = reader
    k = min(args.top_k, len(names))
    results, failed, batch, paths = [], 0, [], []

    def flush() -> None:
        if not batch:
            return
        top = probabilities(torch.stack(batch)).topk(k)
        for path, values, indices in zip(paths, top.values.tolist(), top.indices.tolist()):
            labels = [(names[i], p) for p, i in zip(values, indices)]
            print(terminal_text(f"{path}: " + ", ".join(f"{name} ({p:.3f})" for name, p in labels)))
            results.append({"image": str(path), "top": [{"label": n, "probability": p} for n, p in labels]})
        batch.clear()
        paths.clear()

    for path in args.images:
        try:
            batch.append(transform(read_image(path)))
            paths.append(path)
        except (decode_error, OSError, ValueError, TypeError, RuntimeError, MemoryError, DecompressionBombError) as error:  # fmt: skip  # this image only
            print(terminal_text(f"{path}: cannot read image ({_first_line(error)})"), file=sys.stderr)
            failed += 1
        if len(batch) == args.batch_size:
            flush()
    flush()
    if args.out:
        _write_predictions(Path(args.out), results)
    else:
        print(json.dumps(results))
    return 1 if failed else 0


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


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
                writer.writerow(
                    [csv_field(row["image"]), rank, csv_field(item["label"]), f"{item['probability']:.6f}"]
                )
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


def _predict_onnx(args: argparse.Namespace) -> int:
    """``vit5 predict model.onnx ...``: ONNX Runtime on the CPU, preprocessing from the file's metadata."""
    import torch
    from PIL import UnidentifiedImageError

    from vit5.data import eval_transform, read_image
    from vit5.export import open_onnx
    from vit5.networks.pretrained_cfg import updated_pretrained_cfg

    for flag, value in (("--ema", args.ema), ("--config", args.config), ("--precision bf16", args.precision == "bf16"),
                        ("--device cuda", args.device == "cuda")):  # fmt: skip
        if value:
            raise UsageError(f"{flag} does not apply to an exported .onnx file (ONNX Runtime, CPU, fp32)")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UsageError("an .onnx file needs onnxruntime (pip install vit5[export])") from None
    session, cfg = open_onnx(args.source)
    channels, size, _ = cfg["input_size"]
    if args.image_size not in (None, size):
        raise UsageError(f"{args.source} takes {size} px images; export it again with --image-size")
    changes = {key: value for key, value in (("crop_pct", args.crop_ratio), ("interpolation", args.interpolation))
               if value is not None}  # fmt: skip
    if changes:
        cfg = updated_pretrained_cfg(cfg, **changes)
    if isinstance(session.get_inputs()[0].shape[0], int):  # exported with a fixed batch
        args.batch_size = session.get_inputs()[0].shape[0]
    transform = eval_transform(size, cfg["mean"], cfg["std"], channels, cfg["crop_pct"], cfg["interpolation"])
    names = _display_names(cfg, cfg["num_classes"])

    def probabilities(batch: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, K)
        try:
            (logits,) = session.run(["logits"], {"input": batch.permute(0, 2, 3, 1).contiguous().numpy()})
        except Exception as error:  # onnxruntime's errors derive from Exception only
            raise ValueError(f"{args.source}: onnxruntime failed to run it ({_first_line(error)})") from None
        return torch.from_numpy(logits).float().softmax(-1)

    return _predict_images(args, transform, probabilities, names, (read_image, UnidentifiedImageError))
