"""2D rotary position embeddings (RoPE): angle tables and the two rotation conventions.

A head of width ``hd`` is split into a Y half and an X half of ``n = hd / 2`` channels each. With
``m = hd / 4`` frequencies ``theta_j = base ** (-2j / n)`` (each used for two channels, in the order
``theta_0, theta_0, theta_1, theta_1, ...``), a token at grid position ``(y, x)`` gets the angle
vector ``[y * theta_rep | x * theta_rep]`` of length ``hd``.

Two rotations use that table:

* ``"interleaved"`` (EVA / official ViT-5): channels ``(2i, 2i + 1)`` form a pair rotated by their
  shared angle — a true rotation, so attention logits depend only on relative positions.
* ``"nvsubquadratic"`` (the reference library): within each axis half, channel ``c`` is paired with
  ``c + m`` ("rotate half"). Those two channels carry *different* frequencies in the table above,
  so this map is not a rotation; it is reproduced exactly for checkpoint compatibility.

Both are ``rot(u)[c] = sign[c] * u[partner[c]]`` for a fixed permutation and signs, so on eager
CPU fp32 tensors :func:`apply_rope` runs the rotation and its backward as one pass each of the
``vit5::rope`` operator (:mod:`vit5.ops.kernels`), with the PyTorch expression's bits.
"""

from __future__ import annotations

import torch

from vit5.ops import kernels
from vit5.ops.route import use_kernel

ROPE_IMPLS = ("nvsubquadratic", "interleaved")


def rope_frequencies(head_dim: int, base: float) -> torch.Tensor:
    """``[hd / 4]`` fp32 frequencies ``1 / base ** (2j / n)`` with ``n = hd / 2``."""
    n = head_dim // 2
    return 1.0 / (base ** (torch.arange(0, n, 2).float() / n))


def rope_angles_2d(
    positions_y: torch.Tensor,
    positions_x: torch.Tensor,
    head_dim: int,
    base: float,
) -> torch.Tensor:
    """Angle table ``[len(y) * len(x), head_dim]`` (fp32) for a row-major grid of positions.

    Args:
        positions_y: ``[h]`` row coordinates (floats).
        positions_x: ``[w]`` column coordinates (floats).
        head_dim: Per-head width ``hd`` (divisible by 4).
        base: Frequency base (10000 for patches, 100 for registers in ViT-5).
    """
    freqs = rope_frequencies(head_dim, base).repeat_interleave(2)  # (n,)
    angles_y = positions_y.float()[:, None] * freqs[None, :]  # (h, n)
    angles_x = positions_x.float()[:, None] * freqs[None, :]  # (w, n)
    h, w, n = angles_y.shape[0], angles_x.shape[0], freqs.shape[0]
    table = torch.cat((angles_y[:, None, :].expand(h, w, n), angles_x[None, :, :].expand(h, w, n)), dim=-1)
    return table.reshape(h * w, 2 * n)  # (h*w, hd)


def rotate(u: torch.Tensor, impl: str) -> torch.Tensor:
    """The "rotate by 90 degrees" partner ``rot(u)`` so that ``u' = u * cos + rot(u) * sin``."""
    hd = u.shape[-1]
    if impl == "interleaved":
        pairs = u.unflatten(-1, (hd // 2, 2))  # (..., hd/2, 2)
        return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    halves = u.unflatten(-1, (2, 2, hd // 4))  # (..., axis, half, m)
    return torch.stack((-halves[..., 1, :], halves[..., 0, :]), dim=-2).flatten(-3)


def apply_rope(u: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, impl: str) -> torch.Tensor:
    """Rotate ``u`` (``[..., T, H, hd]`` with tables ``[T, hd]`` broadcast over heads).

    The rotation is computed in fp32; the result has the dtype of ``u``. On eager CPU fp32
    tensors (:func:`vit5.ops.route.use_kernel`; ``u`` may be a per-head slice of a packed projection,
    read in place) the forward pass and its backward each run as one pass of the ``vit5::rope``
    operator instead of five and about ten PyTorch ops; they compute the PyTorch expression
    (its two products and their sum; the backward as autograd rounds it), equal to fp32 rounding,
    so the two paths train alike. Elsewhere (GPU, bf16, graph capture, ``torch.func``, learnable tables,
    double backward) PyTorch ops run.
    """
    if use_kernel(
        "rope",
        cos,
        sin,
        strided=(u,),
        layout_ok=u.dim() >= 3
        and cos.shape == (u.shape[-3], u.shape[-1]) == sin.shape
        and not (cos.requires_grad or sin.requires_grad),
    ):
        return kernels.rope(u, cos, sin, impl, False)  # vit5::rope (with autograd when enabled)
    x = u.float()
    cos, sin = cos[:, None, :], sin[:, None, :]  # (T, 1, hd)
    return (x * cos + rotate(x, impl) * sin).to(u.dtype)


def swap_partners(u: torch.Tensor, impl: str) -> torch.Tensor:
    """``rot(u)`` without its signs: every channel replaced by its rotation partner (a copy)."""
    hd = u.shape[-1]
    if impl == "interleaved":
        pairs = u.unflatten(-1, (hd // 2, 2))  # (..., hd/2, 2)
        return torch.stack((pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    halves = u.unflatten(
        -1, (2, 2, hd // 4)
    )  # (..., axis, half, m): cat copies whole rows (faster than flip)
    return torch.cat((halves[..., 1:, :], halves[..., :1, :]), dim=-2).flatten(-3)


def rotation_signs(head_dim: int, impl: str, device: torch.device | None = None) -> torch.Tensor:
    """``[hd]`` signs ``s`` with ``rot(u) = s * swap_partners(u)`` (fp32, +-1)."""
    ones = torch.ones(head_dim, device=device)
    return rotate(ones, impl)
