"""The ViT-5 pre-norm residual block: mixer branch and MLP branch, each with LayerScale and DropPath."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from vit5._validation import positive_float, positive_int, probability
from vit5.config import instantiate
from vit5.modules.drop_path import DropPath
from vit5.modules.layer_scale import LayerScale
from vit5.modules.norms import no_weight_decay


def _flops(module: nn.Module | None, *args: Any) -> int:
    """``module.flop_count(*args)``, or 0 for modules without a cost model (``nn.Identity``)."""
    count = getattr(module, "flop_count", None)
    return int(count(*args)) if count is not None else 0


def accepts_conditioning(module: nn.Module) -> bool:
    """Whether ``module.forward`` takes a ``conditioning`` keyword."""
    try:
        parameters = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return "conditioning" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


class ViT5ResidualBlock(nn.Module):
    """``x += DropPath(ls_attn(mixer(input_norm(x))))``; ``x += DropPath(ls_mlp(mlp(mlp_norm(x))))``.

    With a register-pooling config (and ``num_registers > 0``) the registers of the *normalised*
    input, ``h[:, s:s+R]`` with ``s = register_start_idx``, are pooled into a conditioning vector
    passed to the mixer as ``conditioning=`` (Hyena kernels use it for FiLM). An optional
    GlobalResponseNorm (``grn_cfg``) acts on the mixer output.

    Args:
        sequence_mixer_cfg: Config of the token mixer (``ViT5Attention``, ``ViT5HyenaAdapter``, or any
            module mapping ``[B, T, D] -> [B, T, D]``).
        sequence_mixer_norm_cfg: Config of ``input_norm`` (parameters tagged ``_no_weight_decay``).
        mlp_cfg: Config of the ``MLP``.
        mlp_norm_cfg: Config of ``mlp_norm`` (parameters tagged ``_no_weight_decay``).
        hidden_dim: Width ``D`` (of LayerScale).
        layer_scale_init: LayerScale init value; ``0`` disables LayerScale (``ls_*`` are Identity).
        drop_path_rate: Stochastic-depth probability; one ``DropPath`` serves both branches (with
            independent draws). The network injects the per-layer rate.
        register_pooling_cfg: Config of ``RegisterPooling`` / ``RegisterCompressConcat``; used only when
            ``num_registers > 0``. The mixer must accept ``conditioning``.
        num_registers: Number of register tokens ``R`` (not injected by the network).
        register_start_idx: Index of the first register token; the network injects
            ``num_patches + has_cls``.
        grn_cfg: Config of a ``GlobalResponseNorm`` on the mixer output, or ``None``.

    Shapes:
        ``forward(x, condition=None)``: ``[B, T, D] -> [B, T, D]``; ``condition`` is ignored.
    """

    def __init__(
        self,
        sequence_mixer_cfg: Any,
        sequence_mixer_norm_cfg: Any,
        mlp_cfg: Any,
        mlp_norm_cfg: Any,
        hidden_dim: int,
        layer_scale_init: float = 1e-4,
        drop_path_rate: float = 0.0,
        register_pooling_cfg: Any = None,
        num_registers: int = 0,
        register_start_idx: int = 1,
        grn_cfg: Any = None,
    ) -> None:
        super().__init__()
        self.hidden_dim = positive_int("hidden_dim", hidden_dim)
        positive_float("layer_scale_init", layer_scale_init, allow_zero=True)
        probability("drop_path_rate", drop_path_rate)
        self.num_registers = positive_int("num_registers", num_registers, allow_zero=True)
        self.register_start_idx = positive_int("register_start_idx", register_start_idx, allow_zero=True)

        self.input_norm = no_weight_decay(instantiate(sequence_mixer_norm_cfg))
        self.sequence_mixer = instantiate(sequence_mixer_cfg)
        self.mlp_norm = no_weight_decay(instantiate(mlp_norm_cfg))
        self.mlp = instantiate(mlp_cfg)
        for name in ("input_norm", "sequence_mixer", "mlp_norm", "mlp"):
            if not isinstance(getattr(self, name), nn.Module):
                raise TypeError(
                    f"{name} config must build an nn.Module, got {type(getattr(self, name)).__name__}"
                )
        self.ls_attn = LayerScale(hidden_dim, layer_scale_init) if layer_scale_init > 0 else nn.Identity()
        self.ls_mlp = LayerScale(hidden_dim, layer_scale_init) if layer_scale_init > 0 else nn.Identity()
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.register_pooling = None
        if register_pooling_cfg is not None and num_registers > 0:
            self.register_pooling = instantiate(register_pooling_cfg)
            if not accepts_conditioning(self.sequence_mixer):
                raise TypeError(
                    f"register_pooling_cfg needs a sequence mixer that accepts `conditioning=`, but "
                    f"{type(self.sequence_mixer).__name__}.forward does not (use a ViT5HyenaAdapter mixer, "
                    "or drop register_pooling_cfg)"
                )
            pooled = getattr(self.register_pooling, "num_registers", num_registers)
            if pooled != num_registers:
                raise ValueError(
                    f"register pooling is built for {pooled} registers but num_registers={num_registers}"
                )
        self.grn = instantiate(grn_cfg) if grn_cfg is not None else None

    def forward(self, x: torch.Tensor, condition: Any = None) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.hidden_dim:
            raise ValueError(
                f"ViT5ResidualBlock expects [B, T, {self.hidden_dim}], got shape {tuple(x.shape)}"
            )
        h = self.input_norm(x)  # (B, T, D)
        if self.register_pooling is not None:
            start, stop = self.register_start_idx, self.register_start_idx + self.num_registers
            if stop > x.shape[1]:
                raise ValueError(
                    f"register tokens [{start}, {stop}) lie outside the sequence of {x.shape[1]} tokens "
                    "(check register_start_idx / num_registers)"
                )
            mixed = self.sequence_mixer(h, conditioning=self.register_pooling(h[:, start:stop]))
        else:
            mixed = self.sequence_mixer(h)
        if self.grn is not None:
            mixed = self.grn(mixed)
        x = x + self.drop_path(self.ls_attn(mixed))
        return x + self.drop_path(self.ls_mlp(self.mlp(self.mlp_norm(x))))

    def flop_count(self, num_tokens: int, inference: bool = False) -> int:
        """Norms, mixer, MLP, LayerScale, GRN and register pooling; residual adds are not counted."""
        T = num_tokens
        width = getattr(self.input_norm, "weight", None)
        width = width.shape[0] if isinstance(width, torch.Tensor) else self.hidden_dim
        total = _flops(self.input_norm, T) + _flops(self.sequence_mixer, T, inference)
        if self.register_pooling is not None:
            total += _flops(self.register_pooling, width)
        if self.grn is not None:
            total += _flops(self.grn, T)
        total += (
            _flops(self.ls_attn, T) + _flops(self.mlp_norm, T) + _flops(self.mlp, T) + _flops(self.ls_mlp, T)
        )
        return total
