"""Official ViT-5 checkpoints (wangf3014/ViT-5) <-> vit5 state dicts: a pure tensor mapping.

The official model is a DeiT/timm-style ViT with tokens ``[CLS, patches, registers]``, a biased patch
embedding, ``pos_embed`` added to the patches, per-head RMS q/k-norm before EVA-style interleaved 2D
RoPE, biased attention projection and MLP, LayerScale, a final RMSNorm and a biased head
(spec/attention.md, "Official ViT-5 checkpoints"). vit5's ``vit5_small|base|large|xlarge`` presets
have the same parameters with these names:

========================================  =================================================
official                                  vit5
========================================  =================================================
``patch_embed.proj.weight``               ``patch_embed.weight``
``patch_embed.proj.bias``                 folded into ``pos_embed`` (``pos_embed + bias``)
``cls_token``, ``reg_token``, ``pos_embed``  same names
``blocks.i.norm1.weight`` / ``norm2``     ``blocks.i.input_norm.weight`` / ``mlp_norm``
``blocks.i.attn.qkv.weight``              ``blocks.i.sequence_mixer.qkv.weight``
``blocks.i.attn.{q,k}_norm.weight``       ``blocks.i.sequence_mixer.{q,k}_norm.weight``
``blocks.i.attn.proj.{weight,bias}``      ``blocks.i.sequence_mixer.proj.{weight,bias}``
``blocks.i.mlp.fc1.*`` / ``fc2.*``        ``blocks.i.mlp.layer1.*`` / ``layer2.*``
``blocks.i.gamma_1`` / ``gamma_2``        ``blocks.i.ls_attn.gamma`` / ``ls_mlp.gamma``
``norm.weight``                           ``out_norm.weight``
``head.{weight,bias}``                    ``out_proj.{weight,bias}``
========================================  =================================================

Real official checkpoints also hold each block's RoPE frequency tables as persistent buffers
(``blocks.i.attn.rope.freqs`` and ``blocks.i.attn.rope_reg.freqs``, ``[hd / 4]``): derived values,
not weights. :func:`official_rope_bases` checks them and reads the bases back; the conversion to
vit5 drops them (vit5 rebuilds its tables from the bases), the conversion back writes them.

Moving CLS behind the patches changes nothing numerically (no mask, CLS is not rotated, everything
else is per token), so converted weights give the official logits up to fp32 rounding.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "OFFICIAL_VARIANTS",
    "OfficialLayout",
    "official_layout",
    "official_rope_bases",
    "official_to_vit5",
    "official_variant",
    "unwrap_official",
    "vit5_to_official",
]

# (hidden_dim, num_blocks, num_heads) of the published models; all use patch 16, image 224, 4 registers.
OFFICIAL_VARIANTS: dict[str, tuple[int, int, int]] = {
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "xlarge": (1152, 28, 16),
}

_TOP_LEVEL = {
    "cls_token": "cls_token",
    "reg_token": "reg_token",
    "pos_embed": "pos_embed",
    "patch_embed.proj.weight": "patch_embed.weight",
    "norm.weight": "out_norm.weight",
    "head.weight": "out_proj.weight",
    "head.bias": "out_proj.bias",
}
_PER_BLOCK = {
    "norm1.weight": "input_norm.weight",
    "attn.qkv.weight": "sequence_mixer.qkv.weight",
    "attn.q_norm.weight": "sequence_mixer.q_norm.weight",
    "attn.k_norm.weight": "sequence_mixer.k_norm.weight",
    "attn.proj.weight": "sequence_mixer.proj.weight",
    "attn.proj.bias": "sequence_mixer.proj.bias",
    "norm2.weight": "mlp_norm.weight",
    "mlp.fc1.weight": "mlp.layer1.weight",
    "mlp.fc1.bias": "mlp.layer1.bias",
    "mlp.fc2.weight": "mlp.layer2.weight",
    "mlp.fc2.bias": "mlp.layer2.bias",
    "gamma_1": "ls_attn.gamma",
    "gamma_2": "ls_mlp.gamma",
}
_SHORT_NAMES = {"s": "small", "b": "base", "l": "large", "xl": "xlarge"}
_PATCH_BIAS = "patch_embed.proj.bias"
_BLOCK_KEY = re.compile(r"^blocks\.(\d{1,9})\.")
#: The official RoPE buffers of block i (``attn.rope`` rotates patches, ``attn.rope_reg`` registers)
#: and the bases the published models use.
ROPE_BUFFERS = {"attn.rope.freqs": 10000.0, "attn.rope_reg.freqs": 100.0}
#: Relative tolerance for RoPE buffers (fp16-saved tables round to about 5e-4).
ROPE_RTOL = 1e-3


def official_variant(variant: Any) -> str:
    """Normalise a variant name: ``"small"``, ``"vit5_small"``, ``"S"`` (any case) -> ``"small"``."""
    name = variant.lower().removeprefix("vit5_") if isinstance(variant, str) else None
    name = _SHORT_NAMES.get(name, name)
    if name not in OFFICIAL_VARIANTS:
        raise ValueError(
            f"variant must be one of {', '.join(map(repr, OFFICIAL_VARIANTS))} (optionally prefixed 'vit5_'), "
            f"got {variant!r}"
        )
    return name


def unwrap_official(checkpoint: Mapping[str, Any], *, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """The official state dict inside a checkpoint.

    Accepts a bare state dict or one wrapped in ``model`` / ``model_ema`` (DeiT-style training
    checkpoints; ``model`` is used unless ``use_ema``; a checkpoint holding only ``model_ema`` uses
    it) or ``state_dict``; a ``module.`` prefix (DistributedDataParallel) is stripped.

    Raises:
        TypeError: ``checkpoint`` is not a mapping of names to tensors.
        ValueError: ``use_ema`` is set but the checkpoint has no ``model_ema``.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"checkpoint must be a mapping (a state dict), got {type(checkpoint).__name__}")
    if use_ema:
        if "model_ema" not in checkpoint:
            raise ValueError(
                f"use_ema=True but the checkpoint has no 'model_ema' entry; top-level keys: {sorted(checkpoint)[:10]}"
            )
        state = checkpoint["model_ema"]
    elif isinstance(checkpoint.get("model"), Mapping):
        state = checkpoint["model"]
    elif isinstance(checkpoint.get("model_ema"), Mapping):
        state = checkpoint["model_ema"]
    elif isinstance(checkpoint.get("state_dict"), Mapping):
        state = checkpoint["state_dict"]
    else:
        state = checkpoint
    if not isinstance(state, Mapping):
        raise TypeError(
            f"the checkpoint's weights must be a mapping of names to tensors, got {type(state).__name__}"
        )
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"state dict entry {key!r} is a {type(value).__name__}, expected a tensor "
                f"(top-level keys: {sorted(checkpoint)[:10]})"
            )
        out[key.removeprefix("module.")] = value
    return out


@dataclass(frozen=True)
class OfficialLayout:
    """Architecture read from an official state dict (everything except the RoPE/eps constants)."""

    hidden_dim: int
    num_blocks: int
    num_heads: int
    num_registers: int
    patch_size: int
    grid: int
    in_channels: int
    num_classes: int
    mlp_ratio: float

    @property
    def image_size(self) -> int:
        return self.grid * self.patch_size

    def official_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter of the official model with this layout."""
        D, hd, P = self.hidden_dim, self.hidden_dim // self.num_heads, self.patch_size
        Hm = int(D * self.mlp_ratio)
        shapes = {
            "cls_token": (1, 1, D),
            "pos_embed": (1, self.grid * self.grid, D),
            "patch_embed.proj.weight": (D, self.in_channels, P, P),
            _PATCH_BIAS: (D,),
            "norm.weight": (D,),
            "head.weight": (self.num_classes, D),
            "head.bias": (self.num_classes,),
        }
        block = {
            "norm1.weight": (D,), "attn.qkv.weight": (3 * D, D), "attn.q_norm.weight": (hd,),
            "attn.k_norm.weight": (hd,), "attn.proj.weight": (D, D), "attn.proj.bias": (D,),
            "norm2.weight": (D,), "mlp.fc1.weight": (Hm, D), "mlp.fc1.bias": (Hm,), "mlp.fc2.weight": (D, Hm),
            "mlp.fc2.bias": (D,), "gamma_1": (D,), "gamma_2": (D,),
        }  # fmt: skip
        if self.num_registers:
            shapes["reg_token"] = (1, self.num_registers, D)
        for i in range(self.num_blocks):
            shapes.update({f"blocks.{i}.{name}": shape for name, shape in block.items()})
        return shapes


def _shape(state_dict: Mapping[str, torch.Tensor], key: str, ndim: int) -> tuple[int, ...]:
    if key not in state_dict:
        raise ValueError(
            f"not an official ViT-5 state dict: key {key!r} is missing (found {len(state_dict)} keys, e.g. "
            f"{sorted(state_dict)[:6]})"
        )
    shape = tuple(state_dict[key].shape)
    if len(shape) != ndim:
        raise ValueError(f"official state dict entry {key!r} has shape {shape}, expected {ndim} dims")
    return shape


def _block_count(state_dict: Mapping[str, Any]) -> int:
    """The number of blocks: indices 0, 1, ... present without a gap (bounded by the number of keys).

    A key with a larger index (``blocks.100000000.x``) is left for :func:`official_layout` to list as
    unexpected; no structure is ever sized by an index read from a key.
    """
    present = {int(m.group(1)) for key in state_dict if (m := _BLOCK_KEY.match(key))}
    depth = 0
    while depth in present:
        depth += 1
    return depth


def official_layout(state_dict: Mapping[str, torch.Tensor]) -> OfficialLayout:
    """Read the architecture from an official state dict and check every key and shape.

    Raises:
        ValueError: keys are missing or unexpected, or shapes disagree (all of them are listed).
    """
    _, _, D = _shape(state_dict, "cls_token", 3)
    # The official model registers no reg_token (and no rope_reg buffers) without registers.
    R = _shape(state_dict, "reg_token", 3)[1] if "reg_token" in state_dict else 0
    _, Np, _ = _shape(state_dict, "pos_embed", 3)
    _, C, P, _ = _shape(state_dict, "patch_embed.proj.weight", 4)
    K, _ = _shape(state_dict, "head.weight", 2)
    (hd,) = _shape(state_dict, "blocks.0.attn.q_norm.weight", 1)
    Hm, _ = _shape(state_dict, "blocks.0.mlp.fc1.weight", 2)
    grid = int(round(Np**0.5))
    if grid * grid != Np:
        raise ValueError(f"official pos_embed has {Np} positions, which is not a square patch grid")
    if hd == 0 or D % hd:
        raise ValueError(f"q_norm width (head dim) {hd} does not divide the hidden dim {D}")
    depth = _block_count(state_dict)
    layout = OfficialLayout(D, depth, D // hd, R, P, grid, C, K, Hm / D)
    expected = layout.official_shapes()
    rope = {f"blocks.{i}.{name}": (hd // 4,) for i in range(depth) for name in ROPE_BUFFERS}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected) - set(rope))
    expected = {**expected, **{key: shape for key, shape in rope.items() if key in state_dict}}
    wrong = [
        f"{key}: {tuple(state_dict[key].shape)} (expected {shape})"
        for key, shape in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != shape
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            "the state dict does not match the official ViT-5 layout "
            f"(D={D}, depth={depth}, heads={D // hd}, registers={R}, patch={P}, grid={grid}): "
            f"missing keys {_listed(missing)}; unexpected keys {_listed(unexpected)}; wrong shapes {_listed(wrong)}"
        )
    return layout


def _listed(items: list[str], limit: int = 20) -> str:
    return str(items) if len(items) <= limit else f"{items[:limit]} and {len(items) - limit} more"


def _rope_frequencies(head_dim: int, base: float) -> torch.Tensor:
    n = head_dim // 2
    return 1.0 / (base ** (torch.arange(0, n, 2, dtype=torch.float64) / n))


def official_rope_bases(state_dict: Mapping[str, torch.Tensor]) -> tuple[float, float]:
    """The RoPE bases ``(patches, registers)`` an official state dict's RoPE buffers were built with.

    Each buffer must hold ``1 / base ** (arange(0, n, 2) / n)`` (``n = hd / 2``) for one base, the
    same in every block. Values matching the published bases (10000 and 100) within a relative
    1e-3 (fp16-saved files pass) give those; values that follow the formula with another base give
    that base (read back from the first frequency below 1). A state dict without the buffers gives
    the published bases.

    Raises:
        ValueError: a buffer does not follow the formula, or the blocks disagree (the message names
            the key and the values expected).
    """
    bases = []
    for name, default in ROPE_BUFFERS.items():
        keys = sorted((key for key in state_dict if key.endswith("." + name) and _BLOCK_KEY.match(key)),
                      key=lambda key: int(_BLOCK_KEY.match(key).group(1)))  # fmt: skip
        base = default
        for key in keys:
            values = state_dict[key].detach().to(torch.float64).flatten()
            head_dim = 4 * values.numel()
            found = _base_of(values, head_dim, default)
            if found is None:
                raise ValueError(
                    f"official checkpoint entry {key!r} holds {values[:4].tolist()}..., which are not RoPE "
                    f"frequencies 1 / base ** (arange(0, {head_dim // 2}, 2) / {head_dim // 2}) for any base"
                )
            if key != keys[0] and not math.isclose(found, base, rel_tol=ROPE_RTOL):
                raise ValueError(
                    f"official checkpoint entry {key!r} uses RoPE base {found:g}, {keys[0]!r} {base:g}"
                )
            base = found if key == keys[0] else base
        bases.append(base)
    return bases[0], bases[1]


def _base_of(values: torch.Tensor, head_dim: int, default: float) -> float | None:
    def matches(base: float) -> bool:
        expected = _rope_frequencies(head_dim, base)
        return bool(((values - expected).abs() <= ROPE_RTOL * expected.abs()).all())

    if values.numel() == 0 or not torch.isfinite(values).all():
        return None
    if matches(default):
        return default
    if values.numel() < 2 or not 0 < float(values[1]) < 1:
        return None
    n = head_dim // 2
    base = float(values[1]) ** (-n / 2)  # freqs[1] = base ** (-2 / n)
    return base if matches(base) else None


def official_to_vit5(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official ViT-5 state dict to vit5's keys and fold the patch-embedding bias.

    The result loads with ``strict=True`` into the matching ``vit5_small|base|large|xlarge`` preset
    (``num_blocks``, ``num_classes``, ``image_size`` and ``in_channels`` as in the checkpoint, see
    :func:`official_layout`). ``pos_embed`` becomes ``pos_embed + patch_embed.proj.bias`` in fp32
    (exact: the bias is added to every patch token right before ``pos_embed``).
    """
    layout = official_layout(state_dict)
    out = {}
    for official, ours in _TOP_LEVEL.items():
        if official in state_dict:  # reg_token is absent without registers
            out[ours] = state_dict[official]
    bias = state_dict[_PATCH_BIAS].float()
    out["pos_embed"] = state_dict["pos_embed"].float() + bias[None, None, :]
    for i in range(layout.num_blocks):
        for official, ours in _PER_BLOCK.items():
            out[f"blocks.{i}.{ours}"] = state_dict[f"blocks.{i}.{official}"]
    return out


def vit5_to_official(
    state_dict: Mapping[str, torch.Tensor], *, rope_base: float = 10000.0, reg_rope_base: float = 100.0
) -> dict[str, torch.Tensor]:
    """The inverse mapping, for a vit5 network in the official layout (the official presets).

    The patch-embedding bias is written as zeros (vit5 keeps it folded in ``pos_embed``), which
    gives the same logits. Each block's RoPE buffers are written from ``rope_base`` /
    ``reg_rope_base`` (fp32), so the result loads with ``strict=True`` into the official model.

    Raises:
        ValueError: a key of the official layout has no vit5 counterpart in ``state_dict`` or
            ``state_dict`` has keys the official layout does not (both are listed).
    """
    inverse_top = {ours: official for official, ours in _TOP_LEVEL.items()}
    inverse_block = {ours: official for official, ours in _PER_BLOCK.items()}
    out, unexpected = {}, []
    for key, value in state_dict.items():
        match = _BLOCK_KEY.match(key)
        if key in inverse_top:
            out[inverse_top[key]] = value
        elif match and key[match.end() :] in inverse_block:
            out[f"blocks.{match.group(1)}.{inverse_block[key[match.end() :]]}"] = value
        else:
            unexpected.append(key)
    if unexpected:
        raise ValueError(
            f"these vit5 keys have no counterpart in the official ViT-5 layout: {sorted(unexpected)}"
        )
    if "pos_embed" not in state_dict:
        raise ValueError("the vit5 state dict has no 'pos_embed'; is it a ViT5ClassificationNet state dict?")
    pos_embed = state_dict["pos_embed"]
    out[_PATCH_BIAS] = torch.zeros(pos_embed.shape[-1], dtype=pos_embed.dtype)
    layout = official_layout(out)  # lists anything missing (e.g. biases of a non-official network)
    head_dim = layout.hidden_dim // layout.num_heads
    for i in range(layout.num_blocks):
        for name, base in zip(ROPE_BUFFERS, (rope_base, reg_rope_base)):
            if layout.num_registers or name == "attn.rope.freqs":
                out[f"blocks.{i}.{name}"] = _rope_frequencies(head_dim, base).float()
    return out
