"""ViT-5 multi-head self-attention with QK-norm and 2D RoPE over patches and registers."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from vit5._validation import boolean, choice, positive_float, positive_int, probability
from vit5.config import build_callable, instantiate
from vit5.ops.rope import ROPE_IMPLS, apply_rope, rope_angles_2d


class ViT5Attention(nn.Module):
    """Self-attention over ``[patches (Nh*Nw), CLS (0|1), registers (R)]`` tokens.

    ``qkv -> q_norm/k_norm (per head, over hd) -> 2D RoPE on q and k -> softmax attention -> proj``.

    RoPE: patches sit on the ``Nh x Nw`` grid with base ``rope_base``; the CLS token is not rotated;
    registers sit on an ``r x r`` grid (``r = sqrt(R)``, so ``R`` must be a perfect square) with base
    ``reg_rope_base``. The cos/sin tables are non-persistent fp32 buffers ``rope_cos``/``rope_sin``
    of shape ``[T, hd]``; they stay fp32 after ``model.to(torch.bfloat16)`` and the rotation is
    computed in fp32.

    Args:
        hidden_dim: Model width ``D``.
        num_heads: Number of heads ``H``; ``hd = D / H`` must be divisible by 4 (2D RoPE pairs).
        num_patches_h: Patch-grid height ``Nh``.
        num_patches_w: Patch-grid width ``Nw``.
        num_registers: Number of register tokens ``R`` (0 or a perfect square).
        has_cls: Whether a CLS token follows the patches.
        qk_norm: Config of the per-head norm applied to q and k (two independent instances,
            e.g. ``RMSNorm(hd)``, whose weight is shared across heads); ``None`` disables it.
        rope_base: RoPE frequency base of the patch grid.
        reg_rope_base: RoPE frequency base of the register grid.
        attn_dropout: Dropout on the attention probabilities (training only).
        proj_dropout: Dropout after the output projection.
        qkv_bias: Bias in the ``qkv`` projection.
        out_proj_bias: Bias in the ``proj`` projection.
        scale: Softmax scale; ``None`` means ``hd ** -0.5``.
        init_fn_qkv_proj: ``fn(weight)`` applied to ``qkv.weight`` after PyTorch's default init
            (the bias is then zeroed); a callable or a LazyConfig of a factory returning one.
        init_fn_out_proj: The same for ``proj.weight``.
        rope_impl: ``"nvsubquadratic"`` (default; the reference's rotate-half pairing, for its
            checkpoints) or ``"interleaved"`` (a true rotation; official ViT-5 weights and the
            recommended choice for new models). See :mod:`vit5.ops.rope`.
        rope_ref_grid: Interleaved mode only: the patch grid ``L0`` (int or ``(h, w)``) that
            positions are expressed in; at grid ``L`` patch positions are ``arange(L) * L0 / L``.
            ``None`` means the construction grid (integer positions). The nvsubquadratic mode always
            uses the integer positions of the current grid.

    Shapes:
        ``forward(x)``: ``[B, T, D] -> [B, T, D]`` with ``T = Nh * Nw + has_cls + R``;
        ``forward(x, query_slice=s)``: ``[B, T, D] -> [B, Tq, D]``, the outputs of the ``Tq`` tokens
        ``s`` only (keys and values from all tokens; used for a readout of a few tokens).
    """

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        num_patches_h: int,
        num_patches_w: int,
        num_registers: int = 4,
        has_cls: bool = True,
        qk_norm: Any = None,
        rope_base: float = 10000.0,
        reg_rope_base: float = 100.0,
        attn_dropout: float = 0.0,
        proj_dropout: float = 0.0,
        qkv_bias: bool = False,
        out_proj_bias: bool = False,
        scale: float | None = None,
        init_fn_qkv_proj: Any = None,
        init_fn_out_proj: Any = None,
        rope_impl: str = "nvsubquadratic",
        rope_ref_grid: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.hidden_dim = positive_int("hidden_dim", hidden_dim)
        self.num_heads = positive_int("num_heads", num_heads)
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})")
        self.head_dim = hidden_dim // num_heads
        if self.head_dim % 4:
            raise ValueError(
                f"head_dim = hidden_dim / num_heads = {self.head_dim} must be divisible by 4 for 2D RoPE "
                f"(hidden_dim={hidden_dim}, num_heads={num_heads})"
            )
        self.num_patches_h = positive_int("num_patches_h", num_patches_h)
        self.num_patches_w = positive_int("num_patches_w", num_patches_w)
        self.num_registers = positive_int("num_registers", num_registers, allow_zero=True)
        self.reg_rope_h = self.reg_rope_w = math.isqrt(num_registers)
        if self.reg_rope_h**2 != num_registers:
            raise ValueError(
                f"num_registers must be a perfect square (registers sit on an r x r RoPE grid), got {num_registers}"
            )
        self.has_cls = boolean("has_cls", has_cls)
        self.rope_base = positive_float("rope_base", rope_base)
        self.reg_rope_base = positive_float("reg_rope_base", reg_rope_base)
        self.attn_dropout = probability("attn_dropout", attn_dropout, allow_one=False)
        probability("proj_dropout", proj_dropout, allow_one=False)
        self.scale = self.head_dim**-0.5 if scale is None else positive_float("scale", scale)
        self.rope_impl = choice("rope_impl", rope_impl, ROPE_IMPLS)
        self.rope_ref_grid = self._reference_grid(rope_ref_grid)

        self.qkv = nn.Linear(hidden_dim, 3 * hidden_dim, bias=boolean("qkv_bias", qkv_bias))
        self.proj = nn.Linear(hidden_dim, hidden_dim, bias=boolean("out_proj_bias", out_proj_bias))
        for layer, init_fn, name in (
            (self.qkv, init_fn_qkv_proj, "init_fn_qkv_proj"),
            (self.proj, init_fn_out_proj, "init_fn_out_proj"),
        ):
            init_fn = build_callable(init_fn, name)
            if init_fn is not None:
                init_fn(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
        self.qk_norm = qk_norm is not None
        self.q_norm = instantiate(qk_norm) if self.qk_norm else None
        self.k_norm = instantiate(qk_norm) if self.qk_norm else None
        if self.qk_norm:
            self._check_norm_width(self.q_norm)
        self.proj_drop = nn.Dropout(proj_dropout) if proj_dropout > 0 else nn.Identity()
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self._build_rope_tables()

    # ------------------------------------------------------------------------------------------
    # RoPE tables

    def _reference_grid(self, rope_ref_grid: Any) -> tuple[int, int]:
        if rope_ref_grid is None:
            return (self.num_patches_h, self.num_patches_w)
        if self.rope_impl != "interleaved":
            raise ValueError(
                "rope_ref_grid is only used with rope_impl='interleaved'; got rope_impl='nvsubquadratic'"
            )
        if isinstance(rope_ref_grid, int) and not isinstance(rope_ref_grid, bool):
            rope_ref_grid = (rope_ref_grid, rope_ref_grid)
        try:
            h, w = rope_ref_grid
        except (TypeError, ValueError):
            raise TypeError(f"rope_ref_grid must be None, an int or (h, w), got {rope_ref_grid!r}") from None
        return (positive_int("rope_ref_grid[0]", h), positive_int("rope_ref_grid[1]", w))

    def _check_norm_width(self, norm: nn.Module) -> None:
        weight = getattr(norm, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim == 1 and weight.shape[0] != self.head_dim:
            raise ValueError(
                f"qk_norm must normalise head_dim = {self.head_dim} channels (it acts per head), "
                f"but its weight has {weight.shape[0]}"
            )

    def _patch_positions(self, length: int, reference: int) -> torch.Tensor:
        positions = torch.arange(length, dtype=torch.float32)
        if self.rope_impl == "interleaved" and length != reference:
            positions = positions * (reference / length)
        return positions

    def _build_rope_tables(self, device: torch.device | None = None) -> None:
        hd = self.head_dim
        angles = [
            rope_angles_2d(
                self._patch_positions(self.num_patches_h, self.rope_ref_grid[0]),
                self._patch_positions(self.num_patches_w, self.rope_ref_grid[1]),
                hd,
                self.rope_base,
            )
        ]
        if self.has_cls:
            angles.append(torch.zeros(1, hd))
        if self.num_registers:
            grid = torch.arange(self.reg_rope_h, dtype=torch.float32)
            angles.append(rope_angles_2d(grid, grid, hd, self.reg_rope_base))
        table = torch.cat(angles)  # (T, hd)
        device = self.rope_cos.device if device is None else device
        self.rope_cos = table.cos().to(device)
        self.rope_sin = table.sin().to(device)

    def set_patch_grid(self, num_patches_h: int, num_patches_w: int) -> None:
        """Rebuild the RoPE tables for a new patch grid (e.g. a new input resolution)."""
        self.num_patches_h = positive_int("num_patches_h", num_patches_h)
        self.num_patches_w = positive_int("num_patches_w", num_patches_w)
        self._build_rope_tables()

    def _apply(self, fn: Any, recurse: bool = True) -> ViT5Attention:
        super()._apply(fn, recurse)
        if self.rope_cos.dtype != torch.float32:  # keep the tables fp32 under .to(dtype)
            self._build_rope_tables(self.rope_cos.device)
        return self

    @property
    def num_tokens(self) -> int:
        """``Nh * Nw + has_cls + R``: the sequence length this layer accepts."""
        return self.num_patches_h * self.num_patches_w + int(self.has_cls) + self.num_registers

    # ------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, query_slice: slice | None = None) -> torch.Tensor:
        """Attention outputs of every token, or only of the queries ``x[:, query_slice]``.

        Args:
            x: Tokens ``[B, T, D]``.
            query_slice: A contiguous range of tokens whose outputs are wanted (e.g. the CLS token
                for a CLS readout); keys and values still come from all ``T`` tokens, so the result
                equals ``forward(x)[:, query_slice]`` up to float rounding at about ``Tq / T`` of the
                query, score and output cost. ``None`` computes every token.

        Returns:
            ``[B, T, D]``, or ``[B, Tq, D]`` for the ``Tq`` tokens of ``query_slice``.
        """
        if x.ndim != 3 or x.shape[1] != self.num_tokens or x.shape[2] != self.hidden_dim:
            raise ValueError(
                f"ViT5Attention expects [B, T={self.num_tokens}, D={self.hidden_dim}] "
                f"(T = {self.num_patches_h}x{self.num_patches_w} patches + {int(self.has_cls)} CLS + "
                f"{self.num_registers} registers), got shape {tuple(x.shape)}"
            )
        if query_slice is not None:
            return self._forward_queries(x, self._query_rows(query_slice, x.shape[1]))
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim)  # (B, T, 3, H, hd)
        # q, k and v from one view op: its backward stacks the three gradients in one pass
        # (separate views would each fill a zero buffer of the projection's size, then add up)
        q, k, v = qkv.unbind(dim=2)  # each (B, T, H, hd)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q, self.rope_cos, self.rope_sin, self.rope_impl)
        k = apply_rope(k, self.rope_cos, self.rope_sin, self.rope_impl)
        return self._attend(q, k, v)

    def _forward_queries(self, x: torch.Tensor, rows: slice) -> torch.Tensor:
        """``forward(x)[:, rows]``: k/v of every token, q (norm + RoPE at their positions) of ``rows`` only."""
        B, T, D = x.shape
        weight, bias = self.qkv.weight, self.qkv.bias  # q | k | v row blocks of (3D, D)
        kv = F.linear(x, weight[D:], None if bias is None else bias[D:])
        kv = kv.view(B, T, 2, self.num_heads, self.head_dim)  # (B, T, 2, H, hd)
        q = F.linear(x[:, rows], weight[:D], None if bias is None else bias[:D])
        q = q.view(B, -1, self.num_heads, self.head_dim)  # (B, Tq, H, hd)
        k, v = kv.unbind(dim=2)  # (B, T, H, hd) each, one view op (see forward)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q, self.rope_cos[rows], self.rope_sin[rows], self.rope_impl)
        k = apply_rope(k, self.rope_cos, self.rope_sin, self.rope_impl)
        return self._attend(q, k, v)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Softmax attention of ``q`` ``[B, Tq, H, hd]`` over ``k, v`` ``[B, T, H, hd]``, then ``proj``."""
        B, Tq = q.shape[:2]
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            dropout_p=self.attn_dropout if self.training else 0.0,
            scale=self.scale,
        )  # (B, H, Tq, hd)
        out = out.transpose(1, 2).reshape(B, Tq, self.hidden_dim)  # (B, Tq, D)
        return self.proj_drop(self.proj(out))

    @staticmethod
    def _query_rows(query_slice: slice, num_tokens: int) -> slice:
        if not isinstance(query_slice, slice):
            raise TypeError(f"query_slice must be a slice of token indices or None, got {query_slice!r}")
        start, stop, step = query_slice.indices(num_tokens)
        if step != 1 or start >= stop:
            raise ValueError(
                f"query_slice must select a non-empty contiguous range of the {num_tokens} tokens, "
                f"got {query_slice!r}"
            )
        return slice(start, stop)

    def flop_count(self, num_tokens: int, inference: bool = False) -> int:
        """``8TD^2 + 4T^2D + 4TD`` plus the q/k norms (``3 T hd`` each for RMSNorm(hd)).

        Matches the reference: projections ``6TD^2 + 2TD^2``, scores and weighted sum ``4T^2D``,
        RoPE on q and k ``4TD``. ``inference`` does not change the count.
        """
        T, D = num_tokens, self.hidden_dim
        norms = 0
        if self.qk_norm:
            norms = sum(getattr(n, "flop_count", lambda _t: 0)(T) for n in (self.q_norm, self.k_norm))
        return 6 * T * D * D + norms + 4 * T * D + 4 * T * T * D + 2 * T * D * D

    def extra_repr(self) -> str:
        return (
            f"grid={self.num_patches_h}x{self.num_patches_w}, has_cls={self.has_cls}, "
            f"num_registers={self.num_registers}, rope_impl={self.rope_impl!r}"
        )
