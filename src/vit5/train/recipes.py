"""Run configs: the default recipe of each dataset, Python config files, and finalising a config.

A run config is a tree with five sections; every key can be changed with a dotted override
(``optim.lr=1e-3``, ``model.hidden_dim=96``)::

    model     a LazyConfig building the network (by default ``build_vit5(**preset arguments)``,
              whose ``image_size``, ``in_channels`` and ``num_classes`` follow the ``data`` section)
    data      dataset, data_dir, image_size, in_channels, augment, batch_size, eval_batch_size,
              num_workers, ... (``augment``: one of vit5.data.AUGMENTATIONS; ``none`` / null means no
              augmentation), interpolation (bilinear | bicubic), color_jitter, randaugment (a
              timm-style string such as ``rand-m9-mstd0.5-inc1``), random_erasing (probability),
              repeated_aug (k: each image k times per epoch, spread over the ranks; 1 = off)
    optim     name (adamw | lamb), lr, weight_decay, betas, eps, clip_grad, accumulate_steps,
              layer_decay (null = off), param_overrides (list of {pattern, weight_decay, lr_scale})
    schedule  name (cosine | wsd), epochs, warmup_epochs, min_lr_ratio, min_lr (an absolute floor
              that replaces min_lr_ratio when set), stable_fraction (wsd)
    train     seed, precision (fp32 | bf16), compile, loss (ce | bce), label_smoothing, mixup, cutmix,
              ema_decay, freeze (null | backbone), grad_checkpointing, finetune (the pretrained
              weights: path, published name, hf-hub: id or URL), finetune_ema, finetune_sha256 (and the
              recorded finetune_resolved_url / finetune_revision), checkpointing and logging
              intervals, skip_nonfinite, device, log (trackers: tensorboard, wandb, mlflow),
              log_every_steps (how often the trackers get the training scalars)
"""

from __future__ import annotations

import math
import os
import runpy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from vit5.config import (
    TARGET_KEY,
    ConfigNode,
    LazyConfig,
    apply_overrides,
    instantiate,
    load_config,
    resolve,
    set_value,
)
from vit5.data import AUGMENTATIONS, DATASETS, INTERPOLATIONS, dataset_defaults, parse_randaugment
from vit5.networks.presets import build_vit5, preset_arguments
from vit5.train.losses import LOSSES
from vit5.train.optim import SCHEDULES, check_param_overrides

FREEZE_MODES = ("backbone",)

SECTIONS = ("model", "data", "optim", "schedule", "train")

DATASET_PRESETS = {
    "digits": "vit5_tiny_hybrid",
    "fashion-mnist": "vit5_tiny_hybrid",
    "cifar10": "vit5_tiny_hybrid",
    "cifar100": "vit5_tiny_hybrid",
    "imagefolder": "vit5_small",
    "manifest": "vit5_small",
    "hf": "vit5_small",
}

# Small-data recipes: AdamW, short warmup, cosine decay, label smoothing 0.1 (spec/training-recipe.md).
# The ImageFolder recipe is the ViT-5 ImageNet-1k recipe (LAMB 4e-3, 800 epochs, mixup/cutmix, EMA).
_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "digits": {
        "model": {"patch_size": 4},
        "data": {"batch_size": 64},
        "optim": {"lr": 2e-3, "weight_decay": 0.05},
        "schedule": {"epochs": 12, "warmup_epochs": 1},
        "train": {"ema_decay": 0.0},
    },
    # Chosen for a 15-minute CPU budget: no augmentation, registers or extra regularisation, MLP
    # ratio 2, torch.compile (the tiny model is elementwise-bound). The measurements behind each
    # choice: benchmarks/results/2026-12-07-recipe-notes.md.
    "fashion-mnist": {
        "model": {"patch_size": 4, "num_registers": 0, "readout": "gap", "mlp_ratio": 2},
        "data": {"batch_size": 64, "augment": "none"},
        "optim": {"lr": 2e-3, "weight_decay": 0.05},
        "schedule": {"epochs": 5, "warmup_epochs": 0.5},
        "train": {"compile": True},
    },
    "cifar10": {
        "model": {"patch_size": 4},
        "data": {"batch_size": 128},
        "optim": {"lr": 1e-3, "weight_decay": 0.05},
        "schedule": {"epochs": 50, "warmup_epochs": 2},
        "train": {"ema_decay": 0.999},
    },
    "cifar100": {
        "model": {"patch_size": 4},
        "data": {"batch_size": 128},
        "optim": {"lr": 1e-3, "weight_decay": 0.05},
        "schedule": {"epochs": 100, "warmup_epochs": 5},
        "train": {"ema_decay": 0.999, "mixup": 0.8, "cutmix": 1.0},
    },
    "imagefolder": {
        "model": {"max_drop_path_rate": 0.05},
        "data": {"batch_size": 256, "num_workers": 8},
        "optim": {"name": "lamb", "lr": 4e-3, "weight_decay": 0.05},
        "schedule": {"epochs": 800, "warmup_epochs": 5},
        "train": {
            "precision": "bf16",
            "mixup": 0.8,
            "cutmix": 1.0,
            "label_smoothing": 0.0,
            "ema_decay": 0.99996,
        },
    },
}


def default_run_config(dataset: str = "digits", preset: str | None = None) -> ConfigNode:
    """The default run config for ``dataset`` (one of :data:`vit5.data.DATASETS`).

    For your own images (``imagefolder``, ``manifest``, ``hf``) this is the ImageNet-1k recipe, the
    base of config files; ``vit5 train`` without ``--config`` sizes it to the data instead
    (:mod:`vit5.train.sizing`)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {dataset!r}")
    recipe = _RECIPES["imagefolder" if dataset in ("manifest", "hf") else dataset]
    defaults = dataset_defaults(dataset)
    model_args = preset_arguments(preset or DATASET_PRESETS[dataset])
    if preset is None:  # the recipe's model settings are tuned for the dataset's default preset
        model_args.update(recipe["model"])
    model_args.update(
        image_size="${data.image_size}", in_channels="${data.in_channels}", num_classes="${data.num_classes}"
    )
    data = dict(
        dataset=dataset,
        data_dir=None,
        image_size=defaults["image_size"],
        in_channels=defaults["in_channels"],
        num_classes=defaults["num_classes"] or None,
        augment=defaults["augment"],
        batch_size=64,
        eval_batch_size=256,
        num_workers=0,
        download=False,
        skip_bad_images=False,
        max_train_images=None,
        max_test_images=None,
        interpolation="bilinear",
        color_jitter=None,
        randaugment=None,
        random_erasing=0.0,
        repeated_aug=1,
        val_fraction=0.1,
        split_seed=0,
        image_column="image",
        label_column="label",
    )
    optim = dict(
        name="adamw",
        lr=1e-3,
        weight_decay=0.05,
        betas=[0.9, 0.999],
        eps=1e-8,
        clip_grad=1.0,
        accumulate_steps=1,
        layer_decay=None,
        param_overrides=None,
    )
    schedule = dict(
        name="cosine", epochs=10, warmup_epochs=1, min_lr_ratio=0.01, min_lr=None, stable_fraction=0.8
    )
    train = dict(
        seed=0,
        device=None,
        precision="fp32",
        compile=False,
        loss="ce",
        label_smoothing=0.1,
        mixup=0.0,
        cutmix=0.0,
        mixup_switch_prob=0.5,
        ema_decay=0.0,
        checkpoint_every_steps=0,
        checkpoint_every_seconds=60.0,
        log_every_seconds=10.0,
        skip_nonfinite=False,
        freeze=None,
        grad_checkpointing=False,
        finetune=None,
        finetune_ema=False,
        finetune_sha256=None,
        finetune_resolved_url=None,  # recorded: the URL downloaded for train.finetune (after redirects)
        finetune_revision=None,  # recorded: the Hub commit of train.finetune
        log=None,
        log_every_steps=10,
    )
    for section, values in (("data", data), ("optim", optim), ("schedule", schedule), ("train", train)):
        values.update(recipe[section])
    return ConfigNode(
        model=LazyConfig(build_vit5)(**model_args), data=data, optim=optim, schedule=schedule, train=train
    )


CONFIG_SUFFIXES = (".py", ".yaml", ".yml", ".json")


def config_file(value: str | os.PathLike) -> tuple[str, Path]:
    """What a ``--config`` value names: ``("recipe" | "py" | "yaml" | "json", file)``.

    A value with no ``/`` and no suffix names a packaged recipe (:mod:`vit5.recipes`); anything else
    is a path whose final suffix (case-insensitive) is ``.py`` (code: it runs), ``.yaml``/``.yml`` or
    ``.json`` (data: the YAML form's sections). Only ``.py`` files execute.

    Raises:
        ValueError: another suffix, trailing whitespace, or an unknown recipe name (one line).
    """
    text = os.fspath(value)
    if text != text.rstrip() or text != text.lstrip():
        raise ValueError(f"--config {text!r}: the name has leading or trailing whitespace")
    path = Path(text)
    if "/" not in text and os.sep not in text and path.suffix == "":
        from vit5.recipes import recipe_path

        return "recipe", recipe_path(text)
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ValueError(
            f"--config {text!r}: expected a packaged recipe name (`vit5 list`) or a .py, .yaml, .yml or .json "
            f"file, got the suffix {path.suffix or '(none)'!r}"
        )
    return {".py": "py", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}[suffix], path


def read_data_config(kind: str, path: Path, *, trust_config: bool = False) -> ConfigNode:
    """A ``.yaml``/``.yml``/``.json`` config file as a tree (data: never executed)."""
    if kind == "yaml":
        return load_config(path, trust_config=trust_config)
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a valid JSON config ({error})") from None
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{path}: a config file must hold a mapping at the top level, got {type(data).__name__}"
        )
    from vit5.config.registry import check_config_targets

    return ConfigNode(check_config_targets(data, str(path), trust_config=trust_config))


def load_python_config(path: str | os.PathLike, *, trust_config: bool = False) -> ConfigNode:
    """Read a run config: a packaged recipe name, a Python file, or YAML / JSON (``.yaml``/``.yml``/
    ``.json``, e.g. a run's ``config.yaml``); the rule is :func:`config_file`'s.

    A YAML or JSON file holds the sections as top-level keys (as :func:`vit5.config.save_config` writes
    them). A Python file defines ``config`` (a full run config) or any of the sections ``model``, ``data``,
    ``optim``, ``schedule``, ``train`` as module-level names; missing sections come from the default
    recipe of ``data["dataset"]`` (default digits) and given sections are merged over it key by key
    (a ``model`` given as a ``LazyConfig`` call replaces the default model entirely; a plain dict
    such as ``model = dict(hidden_dim=96)`` changes the default preset's arguments).

    A Python config file is code and runs as such (as in detectron2): only use files you trust. A
    YAML or JSON file is data: its ``__target__`` entries must be registered config targets
    (:mod:`vit5.io.registry`) unless ``trust_config``.
    """
    kind, path = config_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    if kind in ("yaml", "json"):
        namespace = {"config": read_data_config(kind, path, trust_config=trust_config)}
    else:
        try:
            namespace = runpy.run_path(str(path))
        except SyntaxError as error:  # other errors raised by the file keep their traceback into it
            raise ValueError(f"{path}, line {error.lineno}: invalid Python: {error.msg}") from None
    if "config" in namespace:
        given = namespace["config"]
        if not isinstance(given, Mapping):
            raise TypeError(f"{path}: `config` must be a mapping of sections, got {type(given).__name__}")
    else:
        given = {name: namespace[name] for name in SECTIONS if name in namespace}
        if not given:
            raise ValueError(f"{path}: defines none of `config`, {', '.join(f'`{s}`' for s in SECTIONS)}")
    unknown = set(given) - set(SECTIONS)
    if unknown:
        raise ValueError(f"{path}: unknown config sections {sorted(unknown)}; expected {list(SECTIONS)}")
    data = given.get("data") or {}
    base = default_run_config(data.get("dataset", "digits"))
    for section, value in given.items():
        if section == "model" and not (isinstance(value, Mapping) and TARGET_KEY not in value):
            base[section] = value  # a recorded call (LazyConfig) or a built module replaces the default
            continue
        if not isinstance(value, Mapping):
            raise TypeError(f"{path}: section `{section}` must be a mapping, got {type(value).__name__}")
        for key, item in value.items():
            if section == "model":  # preset arguments: any keyword build_vit5 accepts
                set_value(base, f"model.{key}", item, str(path))
                continue
            if key not in base[section]:
                raise ValueError(f"{path}: unknown key {section}.{key}; known: {sorted(base[section])}")
            base[section][key] = item
    return base


def build_model(model_cfg: Any) -> nn.Module:
    """Instantiate a run config's ``model`` section, which must build a ``torch.nn.Module``."""
    model = instantiate(model_cfg)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"the model section must build a torch.nn.Module (e.g. LazyConfig(build_vit5)(...)); "
            f"it gave {type(model).__name__} {model!r:.80}"
        )
    return model


def with_overrides(cfg: ConfigNode, overrides: list[str]) -> ConfigNode:
    """``cfg`` with dotted ``key=value`` overrides applied (unknown keys are errors)."""
    return apply_overrides(cfg, overrides) if overrides else cfg


def finalize(cfg: Mapping, num_classes: int | None = None) -> ConfigNode:
    """Fill in what the data decided (ImageFolder's class count) and resolve every interpolation."""
    cfg = ConfigNode(cfg)
    if num_classes and not cfg.data.get("num_classes"):
        cfg.data.num_classes = num_classes
    return resolve(cfg)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_randaugment(value: Any) -> bool:
    try:
        parse_randaugment(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_trackers(value: Any) -> bool:
    from vit5.train.tracking import parse_trackers

    try:
        parse_trackers(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_param_overrides(value: Any) -> bool:
    try:
        check_param_overrides(value)
    except ValueError:
        return False
    return True


# key -> (check, what is expected); None values are allowed where the default is None.
_SCHEMA: dict[str, dict[str, tuple[Any, str]]] = {
    "data": {
        "batch_size": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
        "eval_batch_size": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
        "num_workers": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
        "image_size": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
        "augment": (lambda v: v is None or v in AUGMENTATIONS, f"none or one of {', '.join(AUGMENTATIONS)}"),
        "max_train_images": (lambda v: v is None or (_is_int(v) and v >= 1), "None or an int >= 1"),
        "max_test_images": (lambda v: v is None or (_is_int(v) and v >= 1), "None or an int >= 1"),
        "download": (lambda v: isinstance(v, bool), "true or false"),
        "skip_bad_images": (lambda v: isinstance(v, bool), "true or false"),
        "interpolation": (lambda v: v in INTERPOLATIONS, " or ".join(INTERPOLATIONS)),
        "color_jitter": (lambda v: v is None or (_is_number(v) and v >= 0), "None or a number >= 0"),
        "randaugment": (
            lambda v: v is None or _is_randaugment(v),
            "None or a timm string like 'rand-m9-mstd0.5-inc1'",
        ),
        "random_erasing": (lambda v: _is_number(v) and 0 <= v <= 1, "a probability in [0, 1]"),
        "repeated_aug": (lambda v: _is_int(v) and v >= 1, "an int >= 1 (1: off)"),
        "val_fraction": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
        "split_seed": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
        "image_column": (lambda v: isinstance(v, str) and v != "", "a column name"),
        "label_column": (lambda v: isinstance(v, str) and v != "", "a column name"),
    },
    "optim": {
        "lr": (lambda v: _is_number(v) and v > 0, "a positive number"),
        "weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
        "eps": (lambda v: _is_number(v) and v > 0, "a positive number"),
        "clip_grad": (lambda v: v is None or (_is_number(v) and v >= 0), "None or a number >= 0"),
        "accumulate_steps": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
        "layer_decay": (lambda v: v is None or (_is_number(v) and 0 < v <= 1), "None or a number in (0, 1]"),
        "param_overrides": (_is_param_overrides, "None or a list of {pattern, weight_decay, lr_scale}"),
        "betas": (
            lambda v: (
                isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v)
            ),
            "two numbers in [0, 1)",
        ),  # fmt: skip
    },
    "schedule": {
        "epochs": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
        "warmup_epochs": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
        "min_lr_ratio": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
        "min_lr": (
            lambda v: v is None or (_is_number(v) and v >= 0),
            "None or a number >= 0 (at most optim.lr)",
        ),
        "name": (lambda v: v in SCHEDULES, " or ".join(SCHEDULES)),
        "stable_fraction": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    },
    "train": {
        "seed": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
        "precision": (lambda v: v in ("fp32", "bf16"), "'fp32' or 'bf16'"),
        "compile": (lambda v: isinstance(v, bool), "true or false"),
        "label_smoothing": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        "mixup": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
        "cutmix": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
        "mixup_switch_prob": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
        "ema_decay": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        "checkpoint_every_steps": (lambda v: _is_int(v) and v >= 0, "an int >= 0 (0: off)"),
        "checkpoint_every_seconds": (lambda v: _is_number(v) and v >= 0, "a number >= 0 (0: off)"),
        "log_every_seconds": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
        "skip_nonfinite": (lambda v: isinstance(v, bool), "true or false"),
        "loss": (lambda v: v in LOSSES, " or ".join(LOSSES)),
        "freeze": (lambda v: v is None or v in FREEZE_MODES, "None or " + " or ".join(FREEZE_MODES)),
        "grad_checkpointing": (lambda v: isinstance(v, bool), "true or false"),
        "finetune": (lambda v: v is None or (isinstance(v, str) and v != ""), "None or a path or URL"),
        "finetune_ema": (lambda v: isinstance(v, bool), "true or false"),
        "log": (_is_trackers, "None or tracker names: tensorboard, wandb, mlflow (comma-separated)"),
        "log_every_steps": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
        "finetune_sha256": (
            lambda v: (
                v is None
                or (isinstance(v, str) and len(v) == 64 and set(v.lower()) <= set("0123456789abcdef"))
            ),
            "None or 64 hex digits",
        ),
    },
}


def validate_run_config(cfg: Mapping) -> None:
    """Check the value of every known key of a (resolved) run config.

    Raises:
        ValueError: a section is missing, or a value has the wrong type or range (the message names
            the key, the value and what was expected).
    """
    for section in SECTIONS:
        if section not in cfg:
            raise ValueError(f"the run config has no `{section}` section")
    for section, rules in _SCHEMA.items():
        for key, (check, expected) in rules.items():
            if key in cfg[section] and not check(cfg[section][key]):
                raise ValueError(f"{section}.{key} must be {expected}, got {cfg[section][key]!r}")
    min_lr = cfg["schedule"].get("min_lr")
    if min_lr is not None and min_lr > cfg["optim"]["lr"]:
        raise ValueError(f"schedule.min_lr={min_lr!r} is above optim.lr={cfg['optim']['lr']!r}")
    if cfg["data"]["dataset"] not in DATASETS:
        raise ValueError(f"data.dataset must be one of {', '.join(DATASETS)}; got {cfg['data']['dataset']!r}")
