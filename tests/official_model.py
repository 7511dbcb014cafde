"""The official ViT-5 model and training-checkpoint format, written from spec/attention.md.

``OfficialViT5`` is an ``nn.Module`` with the official parameter *and buffer* names (each block
registers its RoPE frequency tables ``attn.rope.freqs`` / ``attn.rope_reg.freqs`` as persistent
buffers, as the official code does), so ``state_dict()`` is what real official files hold. Its
forward (float64) reads the frequencies from those buffers. ``save_training_checkpoint`` writes the
DeiT-style dict the official training script saves (``model``, ``model_ema``, ``optimizer``,
``lr_scheduler``, ``scaler``, ``epoch``, ``args`` as an ``argparse.Namespace``). Shares no code
with vit5.
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn
from torch.nn import functional as F


def rms(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_frequencies(head_dim, base):
    n = head_dim // 2
    return 1.0 / (base ** (torch.arange(0, n, 2, dtype=torch.float64) / n))


def rope_angles_from(freqs, ys, xs):
    freqs = freqs.double().repeat_interleave(2)  # theta0, theta0, theta1, theta1, ...
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.cat((yy.reshape(-1, 1) * freqs, xx.reshape(-1, 1) * freqs), dim=1)  # (h*w, hd)


def rotate_interleaved(u, angles):
    cos, sin = angles.cos(), angles.sin()
    out = torch.empty_like(u)
    out[..., 0::2] = u[..., 0::2] * cos[:, None, 0::2] - u[..., 1::2] * sin[:, None, 0::2]
    out[..., 1::2] = u[..., 1::2] * cos[:, None, 1::2] + u[..., 0::2] * sin[:, None, 1::2]
    return out


class _Rope(nn.Module):
    def __init__(self, head_dim, base):
        super().__init__()
        self.register_buffer("freqs", rope_frequencies(head_dim, base).float())  # persistent, as official


class _Attention(nn.Module):
    def __init__(self, dim, heads, rope_base, reg_rope_base, registers):
        super().__init__()
        hd = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm, self.k_norm = nn.Parameter(torch.ones(hd)), nn.Parameter(torch.ones(hd))
        self.proj = nn.Linear(dim, dim)
        self.rope = _Rope(hd, rope_base)
        self.rope_reg = _Rope(hd, reg_rope_base) if registers else None  # as official: none without registers


class _Block(nn.Module):
    def __init__(self, dim, heads, mlp_hidden, rope_base, reg_rope_base, registers):
        super().__init__()
        self.norm1, self.norm2 = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.ones(dim))
        self.attn = _Attention(dim, heads, rope_base, reg_rope_base, registers)
        self.mlp = nn.Sequential()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, mlp_hidden), nn.Linear(mlp_hidden, dim)
        self.gamma_1 = nn.Parameter(1e-4 * torch.ones(dim))
        self.gamma_2 = nn.Parameter(1e-4 * torch.ones(dim))


class OfficialViT5(nn.Module):
    """Parameters and buffers named as in the official ``vit_models`` (RMSNorm weights are
    ``norm1.weight`` etc.: plain parameters registered under those names)."""

    def __init__(self, dim=384, depth=12, heads=6, image_size=224, patch=16, registers=4, num_classes=1000,
                 in_channels=3, mlp_ratio=4.0, rope_base=10000.0, reg_rope_base=100.0):  # fmt: skip
        super().__init__()
        self.heads, self.grid = heads, image_size // patch
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.reg_token = nn.Parameter(torch.zeros(1, registers, dim)) if registers else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid**2, dim))
        self.blocks = nn.ModuleList(
            _Block(dim, heads, int(dim * mlp_ratio), rope_base, reg_rope_base, registers)
            for _ in range(depth)
        )
        self.norm = nn.Module()
        self.norm.weight = nn.Parameter(torch.ones(dim))
        self.head = nn.Linear(dim, num_classes)
        for block in self.blocks:  # official names: blocks.i.norm1.weight, attn.q_norm.weight, ...
            for owner, name in (
                (block, "norm1"),
                (block, "norm2"),
                (block.attn, "q_norm"),
                (block.attn, "k_norm"),
            ):
                weight = getattr(owner, name)
                delattr(owner, name)
                holder = nn.Module()
                holder.weight = weight
                setattr(owner, name, holder)

    @torch.no_grad()
    def randomize(self, seed=0):
        """i.i.d. O(1) values for every parameter (buffers untouched), scaled so logits stay O(1-10)."""
        generator = torch.Generator().manual_seed(seed)
        for name, parameter in self.named_parameters():
            fan_in = parameter.shape[-1] if parameter.ndim == 2 else 1
            scale = 0.1 if "patch_embed" in name else (fan_in**-0.5 if parameter.ndim == 2 else 1.0)
            scale = 4.0 if name.startswith("head.") else scale
            parameter.copy_((torch.rand(parameter.shape, generator=generator) * 2 - 1) * scale)
        return self

    @torch.no_grad()
    def forward(self, images_nchw, train_grid=None):
        """Logits (float64) for NCHW images; ``train_grid`` is L0 of the RoPE positions (default: this grid)."""
        sd = {k: v.double() for k, v in self.state_dict().items()}
        x = images_nchw.double()
        P = sd["patch_embed.proj.weight"].shape[-1]
        x = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=P)  # (B, D, g, g)
        B, D, g, _ = x.shape
        L0 = train_grid or g
        x = x.flatten(2).transpose(1, 2) + sd["pos_embed"]
        R = sd["reg_token"].shape[1] if "reg_token" in sd else 0
        registers = [sd["reg_token"].expand(B, -1, -1)] if R else []
        x = torch.cat((sd["cls_token"].expand(B, -1, -1), x, *registers), dim=1)
        hd = D // self.heads
        positions = torch.arange(g, dtype=torch.float64) / g * L0
        reg_positions = torch.arange(math.isqrt(R), dtype=torch.float64)
        for i in range(len(self.blocks)):
            p = f"blocks.{i}."
            reg_angles = (
                [rope_angles_from(sd[p + "attn.rope_reg.freqs"], reg_positions, reg_positions)] if R else []
            )
            angles = torch.cat((
                torch.zeros(1, hd, dtype=torch.float64),  # CLS: not rotated
                rope_angles_from(sd[p + "attn.rope.freqs"], positions, positions),
                *reg_angles,
            ))  # fmt: skip
            h = rms(x, sd[p + "norm1.weight"])
            q, k, v = (h @ sd[p + "attn.qkv.weight"].T).reshape(B, -1, 3, self.heads, hd).unbind(2)
            q = rotate_interleaved(rms(q, sd[p + "attn.q_norm.weight"]), angles)
            k = rotate_interleaved(rms(k, sd[p + "attn.k_norm.weight"]), angles)
            scores = torch.einsum("bnhc,bmhc->bhnm", q, k) * hd**-0.5
            o = torch.einsum("bhnm,bmhc->bnhc", scores.softmax(-1), v).reshape(B, -1, D)
            x = x + sd[p + "gamma_1"] * (o @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"])
            h = rms(x, sd[p + "norm2.weight"])
            m = F.gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
            x = x + sd[p + "gamma_2"] * (m @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"])
        x = rms(x, sd["norm.weight"])
        return x[:, 0] @ sd["head.weight"].T + sd["head.bias"]


def finetune_resize(model: OfficialViT5, image_size: int) -> OfficialViT5:
    """The official fine-tuning procedure at a new resolution: a model built at ``image_size``
    (RoPE at the new grid's integer positions), ``pos_embed`` resampled bicubically
    (align_corners=False, no antialias), every other tensor copied."""
    D = model.pos_embed.shape[-1]
    patch = model.patch_embed.proj.kernel_size[0]
    registers = 0 if model.reg_token is None else model.reg_token.shape[1]
    new = OfficialViT5(D, len(model.blocks), model.heads, image_size, patch, registers,
                       model.head.out_features, model.patch_embed.proj.in_channels,
                       model.blocks[0].mlp.fc1.out_features / D)  # fmt: skip
    state = model.state_dict()
    g, g2 = model.grid, image_size // patch
    grid = state["pos_embed"].reshape(1, g, g, D).permute(0, 3, 1, 2)
    resized = F.interpolate(grid.float(), size=(g2, g2), mode="bicubic", align_corners=False)
    state["pos_embed"] = resized.permute(0, 2, 3, 1).reshape(1, g2 * g2, D)
    new.load_state_dict(state)
    return new


def save_training_checkpoint(path, model, ema=None, epoch=3, **args):
    """``torch.save`` the dict the official (DeiT-style) training script writes."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3)
    model.head.weight.sum().backward()
    optimizer.step()  # a real optimizer state: exp_avg tensors keyed by parameter index
    optimizer.zero_grad()
    namespace = argparse.Namespace(model="vit5_small", input_size=model.grid * 16, lr=4e-3, epochs=800,
                                   batch_size=256, smoothing=0.0, finetune="", model_ema=ema is not None,
                                   **args)  # fmt: skip
    torch.save(
        {
            "model": model.state_dict(),
            **({"model_ema": ema.state_dict()} if ema is not None else {}),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": {"base_values": [4e-3], "last_epoch": epoch, "t_initial": 800},
            "scaler": {
                "scale": 65536.0,
                "growth_factor": 2.0,
                "backoff_factor": 0.5,
                "growth_interval": 2000,
            },
            "epoch": epoch,
            "args": namespace,
        },
        path,
    )
    return path
