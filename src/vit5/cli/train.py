"""``vit5 train`` and ``vit5 demo``: build the run config (recipe, config file, flags, overrides,
fine-tuning source) and hand it to :mod:`vit5.train`."""

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

from vit5.cli.common import (
    _TRUST_HELP,
    DATASET_NAMES,
    UsageError,
    _int_at_least,
    add_budget_arguments,
    log_traceback,
    setup_logging,
)
from vit5.config import ConfigNode, apply_overrides, load_config, to_container
from vit5.config.io import parse_value

logger = logging.getLogger("vit5")

# --------------------------------------------------------------------------------------------------
# train


def build_run_config(args: argparse.Namespace) -> ConfigNode:
    """The run config of ``vit5 train``'s arguments (see :func:`build_run_config_and_weights`)."""
    return build_run_config_and_weights(args)[0]


def build_run_config_and_weights(
    args: argparse.Namespace, config_only: bool = False
) -> tuple[ConfigNode, Any]:
    """Recipe defaults < ``--config`` file < ``--finetune`` checkpoint < ``--preset`` < flags < dotted overrides.

    With ``--finetune`` (or a config's ``train.finetune``) the network is the checkpoint's, built at
    ``data.image_size`` (default: the checkpoint's), unless ``--preset`` or the config file's own
    ``model`` names another; the loaded weights are returned beside the config.
    """
    from vit5.train.recipes import default_run_config, load_python_config

    if getattr(args, "nvsubquadratic", False):
        cfg = _nvsubquadratic_run_config(args)
    elif args.config:
        cfg = load_python_config(args.config, trust_config=args.trust_config)
        if (
            not str(args.config).rstrip().lower().endswith(".py")
        ):  # data read from a file (not code, not flags)
            _check_budget(cfg, args.config)
        if args.dataset and args.dataset != cfg.data.dataset:
            cfg.data.dataset = args.dataset
    else:
        cfg = default_run_config(args.dataset or "digits", args.preset)
        from vit5.data.owndata import OWN_DATASETS

        if cfg.data.dataset in OWN_DATASETS:
            _size_to_data(cfg, args)
    config_model = bool(args.config) and to_container(cfg.model) != to_container(
        default_run_config(cfg.data.dataset).model
    )
    if args.preset and args.config:
        cfg.model = default_run_config(cfg.data.dataset, args.preset).model
    args.finetune_from_config = not args.finetune  # a URL read from a config file needs --trust-config
    args.finetune = args.finetune or cfg.train.get("finetune")
    if args.ema and not args.finetune:
        raise UsageError("--ema picks the EMA weights of --finetune PATH; give --finetune too")
    own_model = bool(args.preset) or config_model
    pretrained = _apply_finetune(cfg, args, own_model, config_only) if args.finetune else None
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
    if args.log is not None:
        cfg.train.log = args.log
    cfg = apply_overrides(cfg, args.overrides)
    if pretrained is not None and not own_model:
        _rebuild_finetune_model(cfg, pretrained)
    return cfg, pretrained


def _nvsubquadratic_run_config(args: argparse.Namespace) -> ConfigNode:
    """The default recipe of ``--dataset`` with the network of an nvSubquadratic config file."""
    from vit5.config.nvsubquadratic import load_nvsubquadratic_config
    from vit5.train.recipes import default_run_config

    if not args.config:
        raise UsageError(
            "--nvsubquadratic reads the network of an nvSubquadratic config: give --config FILE.py"
        )
    cfg = default_run_config(args.dataset or "digits")
    cfg.model = load_nvsubquadratic_config(args.config)
    if "image_size" in cfg.data and "image_size" in cfg.model:  # the data follows the file's network
        cfg.data.image_size = cfg.model.image_size
    return cfg


def _size_to_data(cfg: ConfigNode, args: argparse.Namespace) -> None:
    """Your own images without a config file: the recipe of :mod:`vit5.train.sizing`, sized to the
    number of training images (the data is listed and split here, as the run will split it)."""
    import torch

    from vit5.data.owndata import count_own_data
    from vit5.train.sizing import sized_recipe

    given = dict(item.split("=", 1) for item in args.overrides or [] if "=" in item)
    data_dir = args.data_dir or given.get("data.data_dir")
    options = {key: parse_value(given[f"data.{key}"]) for key in ("val_fraction", "split_seed", "image_column",
               "label_column") if f"data.{key}" in given}  # fmt: skip
    train_images, _, _ = count_own_data(cfg.data.dataset, data_dir, **options)
    gpu = torch.cuda.is_available() and given.get("train.device") != "cpu"
    finetune = bool(args.finetune or args.resume)
    sized_recipe(cfg, train_images, finetune=finetune, gpu=gpu, preset=args.preset)
    if args.epochs:  # the warmup stays 5% of the run
        cfg.schedule.warmup_epochs = round(0.05 * args.epochs, 3)


def _published_architecture(source: str) -> Any:
    """A published name's network config and a weightless (meta-device) network: what --print-config
    needs, without downloading the weights."""
    import torch

    from vit5.config import instantiate
    from vit5.io.sources import published_name
    from vit5.networks.presets import model_config
    from vit5.networks.pretrained_cfg import PUBLISHED
    from vit5.train.finetune import Pretrained

    entry = PUBLISHED[published_name(source)]
    config = model_config(entry.preset, image_size=entry.image_size)
    with torch.device("meta"):
        model = instantiate(config)
    return Pretrained(model, config, source, Path(source), None, False)


def _hub_repo_architecture(source: str, trust_config: bool) -> Any:
    """An ``hf-hub:ORG/REPO[@REV]`` repo's network config (only its ``config.json`` is downloaded)
    and a weightless (meta-device) network: what --print-config needs."""
    import torch

    from vit5.config import instantiate
    from vit5.io.hub_repo import network_config, read_repo_config
    from vit5.io.sources import REPO_CONFIG, hub_file, parse_hub_id
    from vit5.networks.budget import check_network_budget
    from vit5.train.finetune import Pretrained

    repo, revision, _ = parse_hub_id(source)
    config_file = hub_file(repo, REPO_CONFIG, revision, None, label=source)
    config = network_config(read_repo_config(config_file.path.parent, source), source, trust_config)
    check_network_budget(config, source)
    with torch.device("meta"):
        model = instantiate(config)
    return Pretrained(model, config, source, config_file.path.parent, None, False,
                      config_file.resolved_url, config_file.revision)  # fmt: skip


def _is_hub_repo(source: str) -> bool:
    """``hf-hub:ORG/REPO[@REV]`` (a saved model repo), not a file in one, and no local path of that name."""
    from vit5.io.sources import HUB_PREFIX, parse_hub_id

    if not source.startswith(HUB_PREFIX) or Path(source).exists():
        return False
    try:
        return parse_hub_id(source)[2] is None
    except ValueError:
        return False


def _apply_finetune(
    cfg: ConfigNode, args: argparse.Namespace, own_model: bool, config_only: bool = False
) -> Any:
    """Point the run config at ``--finetune``'s weights; the architecture is the checkpoint's unless
    ``own_model`` (``--preset`` or a config file's model; model.* overrides change it either way).
    Returns the loaded weights."""
    from vit5.io.sources import published_name
    from vit5.train.finetune import load_pretrained

    if config_only and published_name(args.finetune) and not Path(args.finetune).exists():
        pretrained = _published_architecture(args.finetune)
    elif config_only and _is_hub_repo(args.finetune):
        pretrained = _hub_repo_architecture(args.finetune, args.trust_config)
    else:
        pretrained = load_pretrained(
            args.finetune,
            ema=bool(args.ema or cfg.train.get("finetune_ema")),
            sha256=args.finetune_sha256 or cfg.train.get("finetune_sha256"),
            trust_config=args.trust_config,
            from_config_file=getattr(args, "finetune_from_config", False),
        )
    model = pretrained.model
    cfg.train.finetune = pretrained.source
    cfg.train.finetune_ema = bool(args.ema or cfg.train.get("finetune_ema"))
    cfg.train.finetune_sha256 = pretrained.sha256
    cfg.train.finetune_resolved_url = pretrained.resolved_url
    cfg.train.finetune_revision = pretrained.revision
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
# Only where the data is (--data-dir), how many loader processes read it (--workers: per-sample
# seeding makes the batches independent of it), the trackers (--log) and the length (--epochs, which
# extends the schedule from the resume step) may change on resume.
_RUN_OPTIONS = ("config", "preset", "dataset", "download", "out", "batch_size", "lr", "precision",
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
    except BaseException as error:
        log_traceback(error)  # into log.txt while its handler is open (a kept run keeps it)
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
    if not all(entry.name in ("log.txt", "split.csv") and entry.is_file() for entry in entries):
        return
    for entry in entries:
        entry.unlink()
    for folder in created:  # the run directory, then the parents made for it while they are empty
        if not folder.is_dir() or any(folder.iterdir()):
            break
        folder.rmdir()


def _check_budget(cfg: ConfigNode, source: Any) -> None:
    """Size the ``model`` section of a config read from a file (YAML / JSON / a run's config.yaml)."""
    from vit5.config import resolve
    from vit5.networks.budget import check_network_budget

    if "model" in cfg:
        check_network_budget(resolve(cfg)["model"], str(source))


def print_config(args: argparse.Namespace) -> int:
    """``--print-config``: the resolved run config as YAML; no run directory is created."""
    import yaml

    from vit5.train.recipes import finalize

    if args.resume:
        cfg = load_config(Path(args.resume) / "config.yaml", trust_config=args.trust_config)
    else:
        cfg = build_run_config_and_weights(args, config_only=True)[0]
    plain = to_container(finalize(cfg))
    sys.stdout.write(yaml.safe_dump(plain, sort_keys=False, default_flow_style=False))
    return 0


def command_train(args: argparse.Namespace) -> int:
    from vit5.train.loop import train

    if getattr(args, "print_config", False):
        return print_config(args)
    rank = int(os.environ.get("RANK", "0"))
    pretrained = None
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise UsageError(f"--resume {run_dir}: not a run directory (no config.yaml)")
        cfg = load_config(run_dir / "config.yaml", trust_config=args.trust_config)
        _check_budget(cfg, run_dir / "config.yaml")  # a received run: sized before anything is built
        given = [
            "--" + name.replace("_", "-")
            for name in _RUN_OPTIONS
            if getattr(args, name, None) not in (None, False)
        ]
        if args.overrides or given:
            raise UsageError(
                "--resume continues a run as configured (its config.yaml; only --epochs, --log, --data-dir and "
                f"--workers may change); remove {' '.join(given + list(args.overrides))}"
            )
        if args.data_dir is not None:
            cfg.data.data_dir = args.data_dir
        from vit5.io.run import has_checkpoint
        from vit5.io.run_origin import check_recorded_data_dir, check_recorded_finetune

        try:  # a received run does not choose what is read (vit5.io.run_origin)
            if args.data_dir is None:
                check_recorded_data_dir(cfg.data.get("data_dir"), run_dir, str(run_dir / "config.yaml"))
            if not has_checkpoint(run_dir):  # with a checkpoint, train.finetune is not read again
                check_recorded_finetune(cfg.train.get("finetune"), run_dir, str(run_dir / "config.yaml"))
        except ValueError as error:
            raise UsageError(str(error)) from None
        if args.workers is not None:
            cfg.data.num_workers = args.workers
        if args.log is not None:
            cfg.train.log = args.log
    else:
        cfg, pretrained = build_run_config_and_weights(args)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(args.out) if args.out else Path("runs") / f"{cfg.data.dataset}-{stamp}"
        if (run_dir / "checkpoints").exists() or (run_dir / "config.yaml").exists():
            raise UsageError(
                f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out"
            )
    _check_trackers(cfg.train.get("log"))
    created = [parent for parent in (run_dir, *run_dir.parents) if not parent.exists()]
    setup_logging(run_dir, rank)
    try:
        with _removed_if_unstarted(created if rank == 0 else []):
            summary = train(cfg, run_dir, resume=bool(args.resume), trust_config=args.trust_config,
                            epochs=args.epochs if args.resume else None,
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


def _check_trackers(value: Any) -> None:
    """Unknown tracker names and missing tracker packages are one-line errors before anything starts."""
    from vit5._extras import require
    from vit5.train.tracking import parse_trackers

    for name in parse_trackers(value):
        require(name, name, f"--log {name}")


def command_demo(args: argparse.Namespace) -> int:
    """``make demo``: train the default tiny hybrid on the embedded digits."""
    args.overrides = args.overrides or []
    return command_train(args)


# --------------------------------------------------------------------------------------------------


RECIPE = "from the recipe (see --print-config)"


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_budget_arguments(parser)  # --finetune / --resume / a received config read from files
    parser.add_argument(
        "--config",
        help="a packaged recipe (`vit5 list`), or a .py (code: it runs), .yaml/.yml or .json (data) config file; "
        "default: the dataset's recipe, sized to the data for your own images",
    )
    parser.add_argument(
        "--preset", help=f"model preset (`vit5 list`), e.g. vit5_tiny_hybrid; default: {RECIPE}"
    )
    parser.add_argument(
        "--nvsubquadratic",
        action="store_true",
        help="--config is an nvSubquadratic config file (Python, run as code): its `net` is the model",
    )
    parser.add_argument(
        "--finetune",
        metavar="PATH",
        help="start from these weights (a vit5 run or .safetensors, an official .pth, an nvSubquadratic .ckpt, "
        "a published name (vit5_small_patch16_224), hf-hub:ORG/REPO[/FILE] or an http(s) URL, downloaded once and "
        "checked); the architecture is the checkpoint's unless "
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
        f"bicubically, as the official fine-tuning code); default: {RECIPE}",
    )
    parser.add_argument("--dataset", choices=DATASET_NAMES, help="default: digits (embedded); your own images: "
                        "imagefolder (class folders), manifest (CSV/JSONL), hf (a datasets folder on disk)")  # fmt: skip
    parser.add_argument(
        "--data-dir", help="where the data is: a folder, a manifest file, or a datasets folder"
    )
    parser.add_argument(
        "--download", action="store_true", help="download Fashion-MNIST/CIFAR if missing (internet)"
    )
    parser.add_argument("--out", help="run directory (default: runs/<dataset>-<time>)")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run (only --epochs, larger to extend it, --log, --data-dir and --workers may change)",
    )
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved run config as YAML and exit (creates no run directory)")  # fmt: skip
    parser.add_argument("--log", metavar="TRACKERS", help="also log to tensorboard, wandb and/or mlflow "
                        "(comma-separated); metrics.csv is always written; default: none")  # fmt: skip
    parser.add_argument("--epochs", type=int, help=f"default: {RECIPE}")
    parser.add_argument("--batch-size", type=int,
                        help=f"global batch size (split over DDP processes); default: {RECIPE}")  # fmt: skip
    parser.add_argument("--lr", type=float, help=f"peak learning rate; default: {RECIPE}")
    parser.add_argument("--precision", choices=("fp32", "bf16"), help=f"default: {RECIPE}")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the training forward (the first step compiles: about 40 s for the "
        "Fashion-MNIST default, minutes for ViT-S; evaluation stays eager); default: " + RECIPE,
    )
    parser.add_argument("--seed", type=int, help="default: 0")
    parser.add_argument("--workers", type=int, help=f"data-loader worker processes; default: {RECIPE}")
    parser.add_argument("--skip-nonfinite", action="store_true", help="skip batches whose loss is NaN/inf")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip images that fail to decode")
    parser.add_argument("--trust-config", action="store_true", help=_TRUST_HELP)
    parser.add_argument(
        "overrides",
        nargs="*",
        help="dotted overrides such as model.hidden_dim=96 optim.lr=1e-3 (see --print-config)",
    )
