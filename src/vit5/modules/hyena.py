"""The N-d Hyena operator: short conv, gated implicit long convolution, norms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vit5.config import LazyConfig, instantiate
from vit5.modules.hooks import fast_path_allowed, has_hooks, shares_storage
from vit5.modules.norms import L2Norm
from vit5.ops.conv import conv2d
from vit5.ops.gates import gate as fused_gate
from vit5.ops.route import use_kernel

__all__ = ["Hyena", "is_channels_first"]

_IDENTITY_CFG = LazyConfig(nn.Identity)()


def is_channels_first(module: nn.Module) -> bool:
    """``nn.GroupNorm`` or a module with a truthy ``channels_first``: applied to ``[B, C, *S]`` directly."""
    return isinstance(module, nn.GroupNorm) or bool(getattr(module, "channels_first", False))


def _build(cfg: Any, name: str) -> nn.Module:
    module = nn.Identity() if cfg is None else instantiate(cfg)
    if not isinstance(module, nn.Module):
        raise TypeError(f"{name} must build an nn.Module, got {type(module).__name__}")
    return module


def _check_width(module: nn.Module, name: str, width: int) -> None:
    """A norm with a per-channel ``weight`` must have ``width`` channels."""
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.ndim == 1 and weight.numel() != width:
        raise ValueError(
            f"{name} has {weight.numel()} channels (weight shape {tuple(weight.shape)}), expected {width}"
        )


def _short_conv(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; a plain zero-padded ``nn.Conv2d`` without hooks goes through
    :func:`vit5.ops.conv.conv2d` (the same forward; under ``torch.compile`` its backward keeps the
    channels-last layout, see there)."""
    if (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and not has_hooks(conv)
    ):
        return conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return conv(x)


def _packed(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``cat([q, k, v], -1)`` for :meth:`Hyena.forward`. ``QKVSequenceMixer`` does not come here:
    it passes its projection, already packed, to :meth:`Hyena.forward_packed` (no copy, eagerly
    and under graph capture)."""
    return torch.cat([query, key, value], dim=-1)


def _activation_name(module: nn.Module) -> str | None:
    """``"silu"`` / ``"sigmoid"`` for the gate activations the fused kernels implement, else None."""
    return {nn.SiLU: "silu", nn.Sigmoid: "sigmoid"}.get(type(module))


def _l2_eps(norm: nn.Module | None, ndim: int) -> float | None | bool:
    """What the fused first gate does before it: ``None`` (no norm), the eps of an ``L2Norm``
    over channels, or ``False`` (another norm: not fused)."""
    if norm is None or type(norm) is nn.Identity:
        return None
    if type(norm) is L2Norm and norm.dim in (-1, ndim - 1):
        return norm.eps
    return False


def _gate(x: torch.Tensor, activation: nn.Module, gate: torch.Tensor, in_place: bool) -> torch.Tensor:
    """``x * activation(gate)``; with ``in_place`` (no autograd, no hooks) the product goes into
    the activation's output when that is a fresh tensor of the product's shape and dtype (same
    bits: the product commutes exactly)."""
    a = activation(gate)
    if (
        in_place
        and a.shape == x.shape
        and a.dtype == torch.result_type(x, a)
        and not shares_storage(a, x, gate)
    ):
        return a.mul_(x)
    return x * a


class Hyena(nn.Module):
    """Hyena mixer on channels-last ``q, k, v``: ``Norm_o((K * Norm_p(qn(q) . s1(k)) + s z) . s2(v))``.

    Order of operations (``C`` channels, inputs ``[B, *S, C]``, moved to ``[B, C, *S]``):

    1. ``short_conv`` on ``cat([q, k, v], channels)`` (``3C`` channels, usually a depthwise
       3x3 ``nn.Conv2d``), split back into ``q, k, v``; skipped if it is ``nn.Identity``.
    2. ``q_norm`` on ``q`` (over channels per position, e.g. ``L2Norm``); ``k_norm`` on ``k`` —
       a second instance of ``qk_norm_cfg`` only when the first gate is ``nn.Identity`` (linear
       gating), otherwise ``nn.Identity``. ``qk_norm_cfg=None`` leaves both ``None``.
    3. ``z = q * gate_nonlinear(k)``, then ``pixelhyena_norm``.
    4. ``h = global_conv(z)`` (a :class:`~vit5.modules.ckconv.CKConvND`, channels first,
       ``conditioning`` passed on for FiLM kernels).
    5. ``y = h * gate_nonlinear_2(v)`` (``gate_nonlinear_2_cfg=None`` shares the first gate's
       module, registered under both names as in the reference), then ``output_norm``.

    Norms are applied channels-last (q/k norms on ``[B, *S, C]``, pixel/output norms on a
    ``[B * S, C]`` view) unless they are channels-first (``nn.GroupNorm`` or a truthy
    ``channels_first`` attribute), which run on ``[B, C, *S]``.

    Submodules are registered (and built, hence drawing random numbers) in the reference's order:
    ``global_conv, short_conv, gate_nonlinear, gate_nonlinear_2, pixelhyena_norm, output_norm,
    q_norm, k_norm``.

    Args:
        global_conv_cfg: Config of the long convolution (``CKConvND``); its ``hidden_dim`` is ``C``.
        short_conv_cfg: Config of the short convolution over ``3C`` channels, or ``nn.Identity``
            (``None`` is accepted as Identity).
        gate_nonlinear_cfg: First gate activation (e.g. ``nn.SiLU``; ``nn.Identity`` = linear).
        pixelhyena_norm_cfg: Norm after the first gate (``None`` or ``nn.Identity`` = none).
        qk_norm_cfg: Norm of ``q`` (and of ``k`` with a linear gate), or ``None``.
        output_norm_cfg: Norm after the second gate (default ``nn.Identity``).
        gate_nonlinear_2_cfg: Second gate activation, or ``None`` to share the first.

    Shapes:
        ``forward(query, key, value [B, *S, C], conditioning [B, cond] | None) -> [B, *S, C]``.
    """

    def __init__(
        self,
        global_conv_cfg: Any,
        short_conv_cfg: Any,
        gate_nonlinear_cfg: Any,
        pixelhyena_norm_cfg: Any,
        qk_norm_cfg: Any,
        output_norm_cfg: Any = _IDENTITY_CFG,
        gate_nonlinear_2_cfg: Any = None,
    ) -> None:
        super().__init__()
        self.global_conv = _build(global_conv_cfg, "global_conv_cfg")
        width = getattr(self.global_conv, "hidden_dim", None)
        if isinstance(width, bool) or not isinstance(width, int):
            raise TypeError(
                f"global_conv_cfg must build a module with an int hidden_dim (e.g. CKConvND), got {self.global_conv!r}"
            )
        self.hidden_dim = width
        self.short_conv = _build(short_conv_cfg, "short_conv_cfg")
        for name in ("in_channels", "out_channels"):
            channels = getattr(self.short_conv, name, 3 * width)
            if channels != 3 * width:
                raise ValueError(
                    f"short_conv_cfg.{name} must be 3 * hidden_dim = {3 * width}, got {channels}"
                )
        self.gate_nonlinear = _build(gate_nonlinear_cfg, "gate_nonlinear_cfg")
        if gate_nonlinear_2_cfg is None:
            self.gate_nonlinear_2 = self.gate_nonlinear
        else:
            self.gate_nonlinear_2 = _build(gate_nonlinear_2_cfg, "gate_nonlinear_2_cfg")
        self.pixelhyena_norm = _build(pixelhyena_norm_cfg, "pixelhyena_norm_cfg")
        self.output_norm = _build(output_norm_cfg, "output_norm_cfg")
        if qk_norm_cfg is None:
            self.q_norm = None
            self.k_norm = None
        else:
            self.q_norm = _build(qk_norm_cfg, "qk_norm_cfg")
            linear_gate = isinstance(self.gate_nonlinear, nn.Identity)
            self.k_norm = _build(qk_norm_cfg, "qk_norm_cfg") if linear_gate else nn.Identity()
        for name in ("pixelhyena_norm", "output_norm", "q_norm", "k_norm"):
            module = getattr(self, name)
            if module is not None:
                _check_width(module, name, width)

    @staticmethod
    def _norm_per_position(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """q/k norms on channels-last ``[B, *S, C]``; channels-first norms see ``[B, C, *S]``."""
        if is_channels_first(norm):
            return norm(x.movedim(-1, 1)).movedim(1, -1)
        return norm(x)

    @staticmethod
    def _norm_flat(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Pixel/output norms on channels-last ``[B, *S, C]``: channels-last norms see ``[B * S, C]``."""
        if isinstance(norm, nn.Identity):
            return x
        if is_channels_first(norm):
            return norm(x.movedim(-1, 1)).movedim(1, -1)
        return norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)  # (B*S, C) -> (B, *S, C)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        conditioning: torch.Tensor | None = None,
    ) -> torch.Tensor:
        c = self.hidden_dim
        if query.shape != key.shape or query.shape != value.shape:
            raise ValueError(
                f"Hyena expects query, key and value of the same shape, got {tuple(query.shape)}, "
                f"{tuple(key.shape)}, {tuple(value.shape)}"
            )
        if query.ndim < 3 or query.shape[-1] != c:
            raise ValueError(f"Hyena expects channels-last inputs [B, *S, {c}], got {tuple(query.shape)}")
        if isinstance(self.short_conv, nn.Identity):
            return self._gated(query, key, value, conditioning)
        return self.forward_packed(_packed(query, key, value), conditioning)

    def forward_packed(self, qkv: torch.Tensor, conditioning: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`forward` of ``cat([query, key, value], -1)`` ``[B, *S, 3C]`` (what
        ``QKVSequenceMixer``'s projection gives, so no concatenating copy is made, also not under
        graph capture). Runs the module's code only: forward hooks and pre-hooks of this module
        do not fire (the mixer calls :meth:`forward` when it has any)."""
        c = self.hidden_dim
        if qkv.ndim < 3 or qkv.shape[-1] != 3 * c:
            raise ValueError(
                f"Hyena expects a packed channels-last [B, *S, {3 * c}] input, got {tuple(qkv.shape)}"
            )
        if isinstance(self.short_conv, nn.Identity):
            q, k, v = qkv.split(c, dim=-1)
            return self._gated(q, k, v, conditioning)
        # Everything runs channels-last: the depthwise short conv gets a [B, 3C, *S] view whose
        # memory is channels-last (oneDNN's native layout for depthwise convs), so there is no
        # transposing copy before the long convolution.
        u = _short_conv(self.short_conv, qkv.movedim(-1, 1)).movedim(1, -1)  # (B, *S, 3C)
        q, k, v = u.split(c, dim=-1)  # (B, *S, C) each
        return self._gated(q, k, v, conditioning)

    def _gated(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, conditioning: torch.Tensor | None
    ) -> torch.Tensor:
        """Steps 2-5 on channels-last ``q, k, v`` ``[B, *S, C]`` (after the short conv).

        SiLU / Sigmoid gates (with no q norm or an ``L2Norm`` over channels before the first) run
        as fused CPU kernels (:func:`vit5.ops.gates.gate`) when the tensors allow and no hook is
        set in the operator, with and without autograd alike.
        """
        first, second = _activation_name(self.gate_nonlinear), _activation_name(self.gate_nonlinear_2)
        l2_eps = _l2_eps(self.q_norm, q.ndim) if isinstance(self.k_norm, (nn.Identity, type(None))) else False
        fused = use_kernel("gate", strided=(q, k, v), layout_ok=bool(first or second) and not has_hooks(self))
        in_place = fast_path_allowed(self)
        if fused and first and l2_eps is not False:
            z = fused_gate(q, k, first, l2_eps)  # (B, *S, C): L2Norm(q) * act(k) in one pass (vit5.ops.gates)
        else:
            if self.q_norm is not None:
                q = self._norm_per_position(self.q_norm, q)
                if not isinstance(self.k_norm, nn.Identity):
                    k = self._norm_per_position(self.k_norm, k)
            z = _gate(q, self.gate_nonlinear, k, in_place)  # (B, *S, C)
        z = self._norm_flat(self.pixelhyena_norm, z)
        if conditioning is None:
            h = self.global_conv(z)  # (B, *S, C)
        else:
            h = self.global_conv(z, conditioning=conditioning)
        if fused and second and use_kernel("gate", h):
            y = fused_gate(h, v, second)  # (B, *S, C)
        else:
            y = _gate(h, self.gate_nonlinear_2, v, in_place)
        return self._norm_flat(self.output_norm, y)  # (B, *S, C)

    def flop_count(self, spatial_dims: Sequence[int], inference: bool = False) -> int:
        """Short conv + q/k norms + gates + norms + ``global_conv.flop_count`` (``inference`` only affects it).

        Per position and channel: short conv ``2 (in/groups) out prod(k) / C`` (0 if Identity),
        ``3`` per q/k norm and per non-Identity pixel/output norm, ``1`` per gate product and
        ``1`` per non-Identity gate activation.
        """
        c, s = self.hidden_dim, math.prod(spatial_dims)
        flops = 0
        if not isinstance(self.short_conv, nn.Identity):
            conv = self.short_conv
            if all(hasattr(conv, name) for name in ("in_channels", "out_channels", "groups", "kernel_size")):
                flops += (
                    2
                    * (conv.in_channels // conv.groups)
                    * conv.out_channels
                    * s
                    * math.prod(conv.kernel_size)
                )
            elif hasattr(conv, "flop_count"):
                flops += conv.flop_count(spatial_dims)
            else:
                raise TypeError(f"cannot count FLOPs of short_conv {type(conv).__name__}")
        if self.q_norm is not None:
            flops += 3 * c * s
            if not isinstance(self.k_norm, nn.Identity):
                flops += 3 * c * s
        for gate in (self.gate_nonlinear, self.gate_nonlinear_2):
            flops += c * s + (0 if isinstance(gate, nn.Identity) else c * s)
        for norm in (self.pixelhyena_norm, self.output_norm):
            if not isinstance(norm, nn.Identity):
                flops += 3 * c * s
        return flops + self.global_conv.flop_count(tuple(spatial_dims), inference)

    def extra_repr(self) -> str:
        def name(module: nn.Module | None) -> str:
            return "None" if module is None else type(module).__name__

        return (
            f"hidden_dim={self.hidden_dim}, q_norm={name(self.q_norm)}, k_norm={name(self.k_norm)}, "
            f"gates={name(self.gate_nonlinear)}/{name(self.gate_nonlinear_2)}"
        )
