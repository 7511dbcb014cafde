"""The ViT-5 pre-norm residual block: mixer branch and MLP branch, each with LayerScale and DropPath."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from vit5._validation import positive_float, positive_int, probability
from vit5.config import instantiate
from vit5.modules.attention import ViT5Attention
from vit5.modules.drop_path import DropPath
from vit5.modules.hooks import fast_path_allowed, has_hooks, shares_storage
from vit5.modules.layer_scale import LayerScale
from vit5.modules.mlp import MLP
from vit5.modules.norms import L2Norm, RMSNorm, no_weight_decay
from vit5.ops.route import use_kernel
from vit5.ops.scaled_add import scaled_add, scaled_add_into_branch

#: Norms that act on each token separately (so they can run on a subset of the tokens).
TOKENWISE_NORMS = (RMSNorm, nn.LayerNorm, nn.RMSNorm, nn.Identity)


def _flops(module: nn.Module | None, *args: Any) -> int:
    """``module.flop_count(*args)``, or 0 for modules without a cost model (``nn.Identity``)."""
    count = getattr(module, "flop_count", None)
    return int(count(*args)) if count is not None else 0


def is_tokenwise_norm(module: nn.Module) -> bool:
    """Whether ``module`` normalises each token of ``[B, T, D]`` on its own (no reduction over ``T``)."""
    if isinstance(module, L2Norm):
        return module.dim in (-1, 2)
    return isinstance(module, TOKENWISE_NORMS)


def has_active_dropout(module: nn.Module) -> bool:
    """Whether a dropout inside ``module`` draws random numbers now (training mode and ``p > 0``)."""
    for child in module.modules():
        if isinstance(child, ViT5Attention) and child.training and child.attn_dropout > 0:
            return True
        if isinstance(child, nn.modules.dropout._DropoutNd) and child.training and child.p > 0:
            return True
    return False


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

    ``forward_tokens(x, s)`` computes only the outputs of the tokens ``s`` (keys and values still
    from every token), which is what a network needs when its readout reads a few tokens of the
    last block; ``supports_token_subset()`` says when that equals ``forward(x)[:, s]``.

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
        ``forward_tokens(x, s)``: ``[B, T, D] -> [B, Tq, D]`` for the ``Tq`` tokens of the slice ``s``.
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
        in_place = self._residuals_in_place()
        x = self._residual(x, mixed, self.ls_attn, in_place)
        return self._residual(x, self.mlp(self.mlp_norm(x)), self.ls_mlp, in_place)

    def _residuals_in_place(self) -> bool:
        """Whether the residual adds may run in place on the branch outputs (see ``_residual``):
        no autograd, no hooks in the block, an inactive DropPath and LayerScale or Identity scales."""
        path = self.drop_path
        return (
            type(self.ls_attn) in (LayerScale, nn.Identity)
            and type(self.ls_mlp) in (LayerScale, nn.Identity)
            and (type(path) is nn.Identity or (type(path) is DropPath and path.is_identity()))
            and fast_path_allowed(self)
        )

    def _residual(
        self, x: torch.Tensor, branch: torch.Tensor, scale: nn.Module, in_place: bool
    ) -> torch.Tensor:
        """``x + drop_path(scale(branch))``.

        With ``in_place`` (from ``_residuals_in_place``) the scale and the add run in place on
        ``branch``, a fresh output of the mixer or MLP that nothing else holds: the same bits
        (addition commutes exactly) without two full-size buffers, whose first touch is a
        measurable share of CPU inference time.
        """
        if in_place and branch.dtype == x.dtype and branch.shape == x.shape and not shares_storage(branch, x):
            if isinstance(scale, LayerScale):
                return scaled_add_into_branch(x, branch, scale.gamma)  # one pass on CPUs
            return branch.add_(x)
        path = self.drop_path
        if (
            type(scale) is LayerScale
            and type(path) in (DropPath, nn.Identity)
            and torch.is_grad_enabled()
            and use_kernel("scaled_add", x, branch, scale.gamma)
            and not has_hooks(scale)
            and not has_hooks(path)
        ):
            # One fused pass forward and one backward (vit5.ops.scaled_add); DropPath draws its
            # mask as its forward would.
            mask = path.sample_mask(branch) if type(path) is DropPath else None
            return scaled_add(x, branch, scale.gamma, mask)
        return x + path(scale(branch))

    def supports_token_subset(self) -> bool:
        """Whether ``forward_tokens(x, s)`` equals ``forward(x)[:, s]`` (up to float rounding).

        True for a ``ViT5Attention`` mixer (it takes ``query_slice``) without GlobalResponseNorm
        (which reduces over the tokens), without register pooling, with a tokenwise ``mlp_norm``, a
        vit5 ``MLP`` (with elementwise dropout) or Identity, no dropout drawing random numbers now
        (fewer tokens would draw fewer numbers: other masks and a shifted generator; DropPath draws
        one number per sample either way) and no forward hooks or pre-hooks in the block (they would
        not run, or see other shapes; e.g. ``weight_norm`` recomputes weights in a pre-hook).
        """
        return (
            isinstance(self.sequence_mixer, ViT5Attention)
            and self.grn is None
            and self.register_pooling is None
            and is_tokenwise_norm(self.mlp_norm)
            and (
                isinstance(self.mlp, nn.Identity)
                or (isinstance(self.mlp, MLP) and isinstance(self.mlp.dropout, (nn.Dropout, nn.Identity)))
            )
            and isinstance(self.ls_attn, (LayerScale, nn.Identity))
            and isinstance(self.ls_mlp, (LayerScale, nn.Identity))
            and isinstance(self.drop_path, (DropPath, nn.Identity))
            and not has_active_dropout(self)
            and not has_hooks(self)
        )

    def forward_tokens(self, x: torch.Tensor, token_slice: slice) -> torch.Tensor:
        """``forward(x)[:, token_slice]`` computed for those tokens only.

        Every token is normalised (keys and values need them); the queries, attention output,
        LayerScale, DropPath (the same per-sample draws as ``forward``) and the MLP branch run on
        the selected tokens only.

        Args:
            x: Tokens ``[B, T, D]``.
            token_slice: A contiguous range of token indices (e.g. ``slice(Np, Np + 1)`` for CLS).

        Returns:
            ``[B, Tq, D]``, the block outputs of the ``Tq`` selected tokens.

        Raises:
            ValueError: If ``supports_token_subset()`` is False.
        """
        if not self.supports_token_subset():
            raise ValueError(
                "forward_tokens needs a ViT5Attention mixer, no grn_cfg / register pooling, a tokenwise "
                "mlp_norm, no active dropout and no forward hooks in the block (see supports_token_subset)"
            )
        if x.ndim != 3 or x.shape[-1] != self.hidden_dim:
            raise ValueError(
                f"ViT5ResidualBlock expects [B, T, {self.hidden_dim}], got shape {tuple(x.shape)}"
            )
        mixed = self.sequence_mixer(self.input_norm(x), query_slice=token_slice)  # (B, Tq, D)
        in_place = self._residuals_in_place()
        x = self._residual(x[:, token_slice], mixed, self.ls_attn, in_place)  # (B, Tq, D)
        return self._residual(x, self.mlp(self.mlp_norm(x)), self.ls_mlp, in_place)

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
