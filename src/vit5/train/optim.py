"""Optimizer parameter groups (weight decay, layer-wise LR decay, tags, per-pattern overrides),
optimizers (AdamW, LAMB) and the learning-rate schedules (warmup + cosine, warmup-stable-decay).

Every trainable parameter gets a weight decay and an LR scale; parameters sharing both share a group.
Weight decay, from the first rule that applies:

1. the last ``optim.param_overrides`` entry whose ``pattern`` (``fnmatch`` on the parameter name)
   matches and that sets ``weight_decay``;
2. ``_no_weight_decay`` tag (norm gains, LayerScale gammas, tokens, SIREN parameters, ...) -> 0;
3. ``_weight_decay`` tag (the reference's per-parameter decay, e.g. FiLM weights) -> its value;
4. fewer than 2 dimensions (biases, gains) -> 0;
5. ``optim.weight_decay``.

LR scale = layer decay x the ``_lr_scale`` tag x every matching override's ``lr_scale``. Layer decay
follows BEiT/timm: on a network with ``N`` blocks, the patch embedding, ``pos_embed``, CLS and register
tokens are layer 0, everything in block ``i`` is layer ``i + 1``, and ``out_norm``, the readout neck
and the head are layer ``N + 1``; the scale is ``layer_decay ** (N + 1 - layer)``.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("adamw", "lamb")
SCHEDULES = ("cosine", "wsd")

_EMBEDDING_NAMES = ("patch_embed", "pos_embed", "cls_token", "reg_token")
_HEAD_NAMES = ("out_norm", "register_neck", "out_proj")


def layer_id(name: str, num_blocks: int) -> int:
    """The layer-decay layer of parameter ``name`` of a ViT5ClassificationNet with ``num_blocks`` blocks.

    Raises:
        ValueError: ``name`` belongs to none of the documented parts (a model of another layout).
    """
    root = name.split(".", 1)[0]
    if root in _EMBEDDING_NAMES:
        return 0
    if root == "blocks":
        parts = name.split(".")
        if len(parts) > 2 and parts[1].isdigit() and int(parts[1]) < num_blocks:
            return int(parts[1]) + 1
    if root in _HEAD_NAMES:
        return num_blocks + 1
    raise ValueError(
        f"optim.layer_decay: parameter {name!r} is not part of the embedding ({', '.join(_EMBEDDING_NAMES)}), "
        f"blocks.0..{num_blocks - 1} or the head ({', '.join(_HEAD_NAMES)}); layer decay needs a "
        "ViT5ClassificationNet"
    )


def check_param_overrides(overrides: Any) -> list[dict[str, Any]]:
    """Validate ``optim.param_overrides``: a list of ``{pattern, weight_decay?, lr_scale?}`` mappings."""
    if overrides is None:
        return []
    if isinstance(overrides, (Mapping, str)) or not isinstance(overrides, Sequence):
        raise ValueError(
            "optim.param_overrides must be a list of {pattern: '<fnmatch pattern>', weight_decay: x, lr_scale: y}, "
            f"got {overrides!r}"
        )
    out = []
    for entry in overrides:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("pattern"), str):
            raise ValueError(f"optim.param_overrides entries need a string `pattern`, got {entry!r}")
        unknown = set(entry) - {"pattern", "weight_decay", "lr_scale"}
        if unknown:
            raise ValueError(
                f"optim.param_overrides entry {entry!r}: unknown keys {sorted(unknown)}; "
                "known: pattern, weight_decay, lr_scale"
            )
        for key in ("weight_decay", "lr_scale"):
            value = entry.get(key)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"optim.param_overrides entry {entry!r}: {key} must be a number >= 0")
        out.append(dict(entry))
    return out


def parameter_settings(
    model: nn.Module,
    weight_decay: float,
    *,
    layer_decay: float | None = None,
    param_overrides: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, tuple[float, float]]:
    """``name -> (weight_decay, lr_scale)`` of every trainable parameter (rules in the module docstring).

    Raises:
        ValueError: layer decay on a model whose parameters do not follow the ViT-5 layout, an
            invalid ``layer_decay`` or ``param_overrides``, or an override pattern matching nothing.
    """
    overrides = check_param_overrides(param_overrides)
    use_layers = layer_decay is not None and float(layer_decay) != 1.0
    if layer_decay is not None and (
        isinstance(layer_decay, bool) or not isinstance(layer_decay, (int, float)) or not 0 < layer_decay <= 1
    ):
        raise ValueError(f"optim.layer_decay must be None or a number in (0, 1], got {layer_decay!r}")
    num_blocks = len(getattr(model, "blocks", ())) if use_layers else 0
    matched = [False] * len(overrides)
    settings: dict[str, tuple[float, float]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if getattr(parameter, "_no_weight_decay", False):
            decay = 0.0
        elif getattr(parameter, "_weight_decay", None) is not None:
            decay = float(parameter._weight_decay)
        elif parameter.ndim < 2:
            decay = 0.0
        else:
            decay = float(weight_decay)
        scale = float(getattr(parameter, "_lr_scale", 1.0))
        if use_layers:
            scale *= float(layer_decay) ** (num_blocks + 1 - layer_id(name, num_blocks))
        for index, entry in enumerate(overrides):
            if fnmatch.fnmatchcase(name, entry["pattern"]):
                matched[index] = True
                if entry.get("weight_decay") is not None:
                    decay = float(entry["weight_decay"])
                if entry.get("lr_scale") is not None:
                    scale *= float(entry["lr_scale"])
        settings[name] = (decay, scale)
    unmatched = [entry["pattern"] for entry, hit in zip(overrides, matched) if not hit]
    if unmatched:
        raise ValueError(f"optim.param_overrides: pattern(s) {unmatched} match no trainable parameter name")
    return settings


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    lr: float | None = None,
    layer_decay: float | None = None,
    param_overrides: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Optimizer groups of the trainable parameters, one per distinct ``(weight_decay, lr_scale)``.

    Each group has ``params``, ``param_names`` (same order), ``weight_decay``, ``lr_scale`` and, when
    ``lr`` is given, ``lr = lr * lr_scale``. Groups are sorted by decreasing weight decay, then
    decreasing LR scale, so the same model and config always give the same groups (resume relies on
    it). Frozen parameters are left out.
    """
    settings = parameter_settings(
        model, weight_decay, layer_decay=layer_decay, param_overrides=param_overrides
    )
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if name not in settings:
            continue
        decay, scale = settings[name]
        group = groups.setdefault(
            (decay, scale),
            {"params": [], "param_names": [], "weight_decay": decay, "lr_scale": scale},
        )
        if lr is not None:
            group["lr"] = lr * scale
        group["params"].append(parameter)
        group["param_names"].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters (is everything frozen?)")
    return [groups[key] for key in sorted(groups, key=lambda key: (-key[0], -key[1]))]


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW (``torch.optim.AdamW``) or LAMB (timm's ``Lamb``) over :func:`parameter_groups`.

    ``cfg`` keys: ``name``, ``lr``, ``weight_decay``, ``betas``, ``eps``, ``layer_decay`` (None: off),
    ``param_overrides`` (see the module docstring).

    AdamW uses PyTorch's fused kernel when every parameter is a floating-point CPU or CUDA tensor
    (one kernel per parameter instead of a dozen elementwise passes); the update is the same AdamW
    formula.
    """
    name = cfg.get("name", "adamw")
    if name not in OPTIMIZERS:
        raise ValueError(f"optim.name must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
    lr, weight_decay = float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
    if lr <= 0 or not math.isfinite(lr):
        raise ValueError(f"optim.lr must be a positive number, got {cfg['lr']!r}")
    betas = tuple(float(b) for b in cfg.get("betas", (0.9, 0.999)))
    eps = float(cfg.get("eps", 1e-8))
    groups = parameter_groups(
        model,
        weight_decay,
        lr=lr,
        layer_decay=cfg.get("layer_decay"),
        param_overrides=cfg.get("param_overrides"),
    )
    if name == "adamw":
        fused = all(
            p.is_floating_point() and p.device.type in ("cpu", "cuda")
            for group in groups
            for p in group["params"]
        )
        return torch.optim.AdamW(
            groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused or None
        )
    from timm.optim import Lamb

    return Lamb(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warmup from ``1 / warmup_steps`` to 1, then cosine to ``min_lr_ratio``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def stable_steps(total_steps: int, warmup_steps: int, stable_fraction: float) -> int:
    """Steps at the peak LR of :func:`warmup_stable_decay`: ``round(stable_fraction * total_steps)``.

    Raises:
        ValueError: warmup and the stable phase together are longer than the run.
    """
    stable = int(round(float(stable_fraction) * total_steps))
    if warmup_steps + stable > total_steps:
        raise ValueError(
            f"schedule.stable_fraction={stable_fraction} gives {stable} stable steps, which with {warmup_steps} "
            f"warmup steps exceed the run's {total_steps} steps; lower it or schedule.warmup_epochs"
        )
    return stable


def warmup_stable_decay(
    step: int, total_steps: int, warmup_steps: int, stable_fraction: float, min_lr_ratio: float
) -> float:
    """LR multiplier of the warmup-stable-decay (WSD) schedule.

    Linear warmup ``(step + 1) / W`` for ``W`` steps, then 1 for ``S = round(stable_fraction * T)``
    steps, then a linear decay ``1 - (1 - min_lr_ratio) * (step - W - S) / (T - W - S)`` over the rest
    of the ``T`` steps (it reaches ``min_lr_ratio`` at step ``T``, one past the last step, as
    :func:`warmup_cosine` does).
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_start = warmup_steps + stable_steps(total_steps, warmup_steps, stable_fraction)
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / max(1, total_steps - decay_start))
    return 1.0 - (1.0 - min_lr_ratio) * progress


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    min_lr_ratio: float,
    name: str = "cosine",
    stable_fraction: float = 0.8,
    extensions: list | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-optimizer-step :class:`LambdaLR`: :func:`warmup_cosine` (``"cosine"``) or
    :func:`warmup_stable_decay` (``"wsd"``); each group's LR is its own ``lr`` (with its
    ``lr_scale``) times the multiplier."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule.name must be one of {', '.join(SCHEDULES)}; got {name!r}")
    if name == "wsd":
        stable_steps(total_steps, warmup_steps, stable_fraction)  # fail before the first step

        def multiplier(step: int) -> float:
            return warmup_stable_decay(step, total_steps, warmup_steps, stable_fraction, min_lr_ratio)
    else:

        def multiplier(step: int) -> float:
            return warmup_cosine(step, total_steps, warmup_steps, min_lr_ratio)

    if extensions:
        multiplier = extended_multiplier(
            name, total_steps, warmup_steps, min_lr_ratio, stable_fraction, extensions
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def extended_multiplier(name: str, total_steps: int, warmup_steps: int, min_lr_ratio: float, stable_fraction: float,
                        extensions: list) -> Any:  # fmt: skip
    """The multiplier of a run extended (``--resume RUN --epochs N``) at steps ``s0`` whose schedule then
    ended at ``T_old`` (``extensions``: ``[[s0, T_old], ...]`` in order): the LR continues from its value
    at ``s0`` and follows the same shape to the new end. Where the new schedule already passes through
    that value (warmup; WSD before its decay) it is the new schedule, so WSD moves its decay to the new
    end; otherwise cosine decays from there to the floor (WSD: linearly)."""

    def base(step: int, total: int) -> float:
        if name == "wsd":
            return warmup_stable_decay(step, total, warmup_steps, stable_fraction, min_lr_ratio)
        return warmup_cosine(step, total, warmup_steps, min_lr_ratio)

    ends = [int(total) for _, total in extensions[1:]] + [total_steps]
    first = int(extensions[0][1])
    function = lambda step: base(step, first)  # noqa: E731
    for (start, _), end in zip(extensions, ends):
        start = int(start)
        value = function(start)
        if abs(base(start, end) - value) <= 1e-12 and function(max(0, start - 1)) == base(
            max(0, start - 1), end
        ):
            function = lambda step, end=end: base(step, end)  # noqa: E731
            continue

        def tail(step: int, previous=function, start=start, end=end, value=value) -> float:
            if step < start:
                return previous(step)
            progress = min(1.0, (step - start) / max(1, end - start))
            shape = 1.0 - progress if name == "wsd" else 0.5 * (1.0 + math.cos(math.pi * progress))
            return min_lr_ratio + (value - min_lr_ratio) * shape

        function = tail
    return function
