"""ViT5ClassificationNet: patch embedding, a stack of ViT-5 blocks, and a classification readout."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vit5._validation import boolean, choice, positive_int, probability
from vit5.config import instantiate
from vit5.modules.block import ViT5ResidualBlock
from vit5.modules.norms import no_weight_decay
from vit5.networks.classification_checks import (
    block_needs_padding,
    check_images,
    check_neck,
    check_out_norm,
    check_padding_types,
    check_pattern,
)
from vit5.networks.pretrained_cfg import default_pretrained_cfg

READOUTS = ("cls", "gap", "register_concat")
DROP_PATH_SCHEDULES = ("constant", "linear")
REG_INITS = ("trunc_normal", "zeros")


def drop_path_rates(max_rate: float, num_blocks: int, schedule: str) -> list[float]:
    """Per-block stochastic-depth rates: ``constant`` -> ``[p] * N``; ``linear`` -> ``p * i / (N - 1)``."""
    if schedule == "constant" or num_blocks <= 1:
        return [max_rate] * num_blocks
    return [max_rate * i / (num_blocks - 1) for i in range(num_blocks)]


class ViT5ClassificationNet(nn.Module):
    """ViT-5 classification network (attention, 2D Hyena, or an interleaved hybrid of both).

    Token layout: ``[patches (g*g, row-major), CLS (1 if readout == "cls"), registers (R), padding (P)]``
    with ``g = image_size // patch_size``. ``P = (-(g*g + cls + R)) mod g`` zero tokens make the
    sequence a whole number of grid rows, so 2D mixers (``ViT5HyenaAdapter``) can view it as a
    ``[T / g, g]`` grid. Blocks that need the padded sequence get all ``T`` tokens; the others get the
    sequence with the padding stripped (the padding passes through them unchanged). Padding is never
    re-zeroed: a Hyena block's residual update writes into it.

    Which blocks see the padding: in homogeneous mode (``block_cfg``), blocks whose mixer is a grid
    mixer (``ViT5HyenaAdapter``) — so a homogeneous Hyena network with padding works (the reference
    crashes); in pattern mode (``layer_pattern`` + ``layer_types``), blocks whose letter is in
    ``padding_types`` (default ``{"H"}``). With padding, a grid-mixer block that would not see it, or
    an attention block that would, is a ``ValueError``.

    Readouts: ``"cls"`` reads the CLS token; ``"gap"`` averages the patch tokens (not CLS, registers
    or padding); ``"register_concat"`` compresses each register with a shared bias-free
    ``register_neck`` (``D -> D / neck_compression_ratio``) and concatenates them (register-major).
    Then ``out_norm -> dropout -> out_proj``. ``out_norm`` is built from ``norm_cfg`` as given, so its
    width must equal the readout width (``R * D / ratio`` for ``register_concat``).

    Readout shortcut: ``cls`` and ``register_concat`` read only ``readout_tokens()``, so ``forward``
    (inference and training) runs the last block for those tokens only
    (``ViT5ResidualBlock.forward_tokens``: keys/values from every token; queries, attention output,
    LayerScale, DropPath and MLP for the read tokens). Logits and gradients equal the full computation
    up to float rounding, with the same DropPath draws. ``readout_shortcut_applies()`` is False (full
    last block) for ``gap``, when the last block gets the padding, and when the last block is not a
    ``ViT5ResidualBlock`` with ``supports_token_subset()`` (a Hyena or other non-attention mixer,
    GlobalResponseNorm, register pooling, attention/MLP dropout active in training, forward hooks).
    ``forward_features``, ``forward_head``, ``forward_intermediates`` and ``flop_count`` (the
    reference's formula) always count/compute the full last block.

    Args:
        in_channels: Input image channels (3 for RGB).
        num_classes: Number of output logits.
        hidden_dim: Transformer width ``D``.
        num_blocks: Number of blocks ``N``.
        patch_size: Patch size ``p`` (non-overlapping ``p x p`` patches); must divide ``image_size``.
        image_size: Square input resolution; inputs must be ``[B, image_size, image_size, in_channels]``.
        num_registers: Number of learnable register tokens ``R`` (after the CLS token).
        norm_cfg: Config of the output norm (e.g. ``RMSNorm(D, eps=1e-6)``).
        readout: ``"cls"``, ``"gap"`` or ``"register_concat"``.
        block_cfg: Config of a ``ViT5ResidualBlock``, replicated ``N`` times (homogeneous mode).
        dropout_rate: Dropout between ``out_norm`` and ``out_proj``.
        neck_compression_ratio: ``register_concat`` only (required there): ``neck_dim = D / ratio``.
        reg_init: ``"trunc_normal"`` (std 0.02) or ``"zeros"`` for the register tokens.
        layer_pattern: Hybrid mode: one character per block, each a key of ``layer_types``
            (e.g. ``"HA" * 6``).
        layer_types: Hybrid mode: character -> block config.
        padding_types: Hybrid mode: the characters whose blocks see the padded sequence
            (default ``{"H"}``).
        max_drop_path_rate: Peak stochastic-depth rate, injected per block as ``drop_path_rate``.
        drop_path_schedule: ``"constant"`` (every block gets the peak) or ``"linear"`` (0 -> peak).
        head_bias: Whether ``out_proj`` has a bias (vit5 addition; ``False`` as in the reference,
            ``True`` for official ViT-5 weights).

    Every block config is instantiated with ``drop_path_rate`` and ``register_start_idx = g*g + cls``
    injected. The network's own parameters (tokens, ``pos_embed``, ``patch_embed``, ``out_proj``,
    ``register_neck``) are initialised truncated-normal (std 0.02, cut at +-2); blocks keep their
    own init. ``cls_token``, ``pos_embed``, ``reg_token`` and the ``out_norm`` parameters are tagged
    ``_no_weight_decay``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_dim: int,
        num_blocks: int,
        patch_size: int,
        image_size: int,
        num_registers: int,
        norm_cfg: Any,
        readout: str,
        block_cfg: Any = None,
        dropout_rate: float = 0.0,
        neck_compression_ratio: int | None = None,
        reg_init: str = "trunc_normal",
        layer_pattern: str | None = None,
        layer_types: Mapping[str, Any] | None = None,
        padding_types: set[str] | None = None,
        max_drop_path_rate: float = 0.0,
        drop_path_schedule: str = "constant",
        head_bias: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.num_classes = positive_int("num_classes", num_classes)
        self.hidden_dim = positive_int("hidden_dim", hidden_dim)
        self.num_blocks = positive_int("num_blocks", num_blocks)
        self.patch_size = positive_int("patch_size", patch_size)
        self.image_size = positive_int("image_size", image_size)
        self.num_registers = positive_int("num_registers", num_registers, allow_zero=True)
        self.readout = choice("readout", readout, READOUTS)
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size})")
        self.neck_dim = check_neck(self.readout, neck_compression_ratio, self.num_registers, self.hidden_dim)
        self.layer_pattern = check_pattern(block_cfg, layer_pattern, layer_types, self.num_blocks)
        choice("drop_path_schedule", drop_path_schedule, DROP_PATH_SCHEDULES)
        max_drop_path_rate = probability("max_drop_path_rate", max_drop_path_rate)
        choice("reg_init", reg_init, REG_INITS)
        self.reg_init = reg_init
        dropout_rate = probability("dropout_rate", dropout_rate, allow_one=False)
        boolean("head_bias", head_bias)
        padding_types = check_padding_types(padding_types)

        grid = image_size // patch_size
        self._grid_w = grid
        self.num_patches = grid * grid
        self.use_cls_token = readout == "cls"
        self._num_non_pad = self.num_patches + int(self.use_cls_token) + num_registers
        self._pad_size = -self._num_non_pad % grid
        self.head_dim = num_registers * self.neck_dim if readout == "register_concat" else hidden_dim
        self.drop_path_rates = drop_path_rates(max_drop_path_rate, num_blocks, drop_path_schedule)

        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_dim)) if self.use_cls_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, hidden_dim))
        self.reg_token = nn.Parameter(torch.zeros(1, num_registers, hidden_dim)) if num_registers else None
        zero_pad = torch.zeros(1, self._pad_size, hidden_dim) if self._pad_size else None
        self.register_buffer("_zero_pad", zero_pad, persistent=False)

        self.patch_embed = nn.Conv2d(
            in_channels, hidden_dim, kernel_size=patch_size, stride=patch_size, bias=False
        )
        register_start_idx = self.num_patches + int(self.use_cls_token)
        configs = (
            [block_cfg] * num_blocks
            if self.layer_pattern is None
            else [layer_types[c] for c in self.layer_pattern]
        )
        self.blocks = nn.ModuleList(
            instantiate(cfg, drop_path_rate=rate, register_start_idx=register_start_idx)
            for cfg, rate in zip(configs, self.drop_path_rates)
        )
        self._block_needs_padding = [
            block_needs_padding(
                block,
                index,
                layer_pattern=self.layer_pattern,
                padding_types=padding_types,
                pad_size=self._pad_size,
                num_non_pad=self._num_non_pad,
                grid_w=self._grid_w,
                use_cls_token=self.use_cls_token,
                num_registers=self.num_registers,
                readout=self.readout,
            )
            for index, block in enumerate(self.blocks)
        ]
        self.register_neck = nn.Linear(hidden_dim, self.neck_dim, bias=False) if self.neck_dim else None
        self.out_norm = no_weight_decay(instantiate(norm_cfg))
        check_out_norm(self.out_norm, self.head_dim, self.readout)
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.out_proj = nn.Linear(self.head_dim, num_classes, bias=head_bias)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        def trunc(tensor: torch.Tensor) -> None:
            nn.init.trunc_normal_(tensor, mean=0.0, std=0.02, a=-2.0, b=2.0)

        if self.cls_token is not None:
            trunc(self.cls_token)
        trunc(self.pos_embed)
        if self.reg_token is not None:
            if self.reg_init == "zeros":
                nn.init.zeros_(self.reg_token)
            else:
                trunc(self.reg_token)
        trunc(self.patch_embed.weight)
        trunc(self.out_proj.weight)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)
        if self.register_neck is not None:
            trunc(self.register_neck.weight)
        for parameter in (self.cls_token, self.pos_embed, self.reg_token):
            if parameter is not None:
                parameter._no_weight_decay = True

    # ------------------------------------------------------------------------------------------
    # Forward

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Channels-last images ``[B, H, W, C]`` -> the full token sequence ``[B, T, D]``."""
        x = check_images(x, self.image_size, self.in_channels).to(self.patch_embed.weight.dtype)
        B = x.shape[0]
        x = self.patch_embed(x.permute(0, 3, 1, 2))  # (B, D, g, g)
        x = x.flatten(2).transpose(1, 2) + self.pos_embed.to(x.dtype)  # (B, Np, D)
        parts = [x]
        for token in (self.cls_token, self.reg_token, self._zero_pad):
            if token is not None:
                parts.append(token.to(x.dtype).expand(B, -1, -1))
        if len(parts) == 1:  # contiguous like cat's output: the blocks' reductions then sum in one order
            return x.contiguous()  # (B, T, D)
        return torch.cat(parts, dim=1)  # (B, T, D)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block (timm's name): in training with autograd on, each block's
        activations are recomputed in the backward pass instead of stored (less memory, about one
        more forward pass of compute). The random draws (dropout, DropPath) are replayed, so the
        gradients equal those without checkpointing. The readout shortcut's last block
        (``forward_tokens``) is not checkpointed."""
        self.grad_checkpointing = boolean("enable", enable)

    def _run_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``index`` on the sequence ``[B, T, D]`` (without the padding if it does not need it)."""
        block, pad = self.blocks[index], self._pad_size
        if getattr(self, "grad_checkpointing", False) and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            block = functools.partial(checkpoint, block, use_reentrant=False)
        if pad and not self._block_needs_padding[index]:
            return torch.cat((block(x[:, :-pad]), x[:, -pad:]), dim=1)  # (B, T, D)
        return block(x)

    def run_blocks(self, x: torch.Tensor, stop: int | None = None) -> torch.Tensor:
        """Apply the blocks before ``stop`` (all by default), stripping the padding for those not needing it."""
        for index in range(len(self.blocks) if stop is None else stop):
            x = self._run_block(index, x)
        return x

    def readout_tokens(self) -> slice | None:
        """The tokens the readout reads: CLS (``cls``), the registers (``register_concat``) or ``None`` (gap)."""
        Np = self.num_patches
        if self.readout == "cls":
            return slice(Np, Np + 1)
        if self.readout == "register_concat":
            return slice(Np, Np + self.num_registers)
        return None

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Readout of the token sequence ``[B, T, D]`` -> ``[B, head_dim]`` (before ``out_norm``)."""
        rows = self.readout_tokens()
        if rows is None:
            return x[:, : self.num_patches].mean(dim=1)
        return self.pool_read_tokens(x[:, rows])

    def pool_read_tokens(self, read: torch.Tensor) -> torch.Tensor:
        """Readout of the read tokens ``[B, n, D]`` (``x[:, readout_tokens()]``) -> ``[B, head_dim]``."""
        if self.readout == "cls":
            return read[:, 0]
        return self.register_neck(read).flatten(1)  # (B, R*neck)

    def readout_shortcut_applies(self) -> bool:
        """Whether ``forward`` runs the last block for the read tokens only (see the class docstring)."""
        block = self.blocks[-1]
        return (
            self.readout_tokens() is not None
            and not (self._pad_size and self._block_needs_padding[-1])
            and isinstance(block, ViT5ResidualBlock)
            and block.supports_token_subset()
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Channels-last images -> every token after the last block ``[B, T, D]`` (padding included)."""
        return self.run_blocks(self.embed(x))

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, T, D]`` -> logits ``[B, num_classes]``."""
        return self.out_proj(self.dropout(self.out_norm(self.pool(tokens))))

    def forward(self, input_and_condition: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``{"input": x [B, H, W, C] channels-last, "condition": ignored}`` -> ``{"logits": [B, K]}``."""
        if not isinstance(input_and_condition, Mapping) or "input" not in input_and_condition:
            got = type(input_and_condition).__name__
            if isinstance(input_and_condition, Mapping):
                got += f" with keys {sorted(map(str, input_and_condition))}"
            raise TypeError(
                "ViT5ClassificationNet.forward takes a dict {'input': x} with x of shape "
                f"[B, {self.image_size}, {self.image_size}, {self.in_channels}], got {got}"
            )
        x = input_and_condition["input"]
        if not self.readout_shortcut_applies():
            return {"logits": self.forward_head(self.forward_features(x))}
        tokens = self.run_blocks(self.embed(x), stop=len(self.blocks) - 1)  # (B, T, D)
        if self._pad_size:
            tokens = tokens[:, : -self._pad_size]  # the last block does not see the padding
        read = self.blocks[-1].forward_tokens(tokens, self.readout_tokens())  # (B, n, D)
        return {"logits": self.out_proj(self.dropout(self.out_norm(self.pool_read_tokens(read))))}

    # ------------------------------------------------------------------------------------------

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """Preprocessing and provenance with timm's key names (:mod:`vit5.networks.pretrained_cfg`).

        ``vit5.load_model`` sets what the file recorded; a network built from a preset or a config
        reports the defaults for its size and channels. Assign a dict to replace it.
        """
        stored = self.__dict__.get("_pretrained_cfg")
        if stored is not None:
            return dict(stored)
        return default_pretrained_cfg(self.image_size, self.in_channels, self.num_classes)

    @pretrained_cfg.setter
    def pretrained_cfg(self, value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(f"pretrained_cfg must be a mapping, got {type(value).__name__}")
        self.__dict__["_pretrained_cfg"] = dict(value)

    def flop_count(self, inference: bool = False) -> int:
        """FLOPs of one sample's forward pass (multiply-add = 2), as the reference counts them.

        ``2 C_in D p^2 Np`` (patch embedding) ``+ Np D`` (position add) ``+ sum_i block_i(T_i)``
        ``+ readout + out_norm(1) + 2 head_dim K``, with ``T_i`` the padded length for blocks that see
        the padding and ``g*g + cls + R`` otherwise; the readout costs ``Np D`` for gap and
        ``2 R D neck_dim`` for register_concat. ``inference`` drops the cost of regenerating implicit
        Hyena kernels (see ``SIRENKernelND.flop_count``).
        """
        D, Np = self.hidden_dim, self.num_patches
        total = 2 * self.in_channels * D * self.patch_size**2 * Np + Np * D
        for block, needs_padding in zip(self.blocks, self._block_needs_padding):
            tokens = self._num_non_pad + (self._pad_size if needs_padding else 0)
            total += block.flop_count(tokens, inference)
        if self.readout == "gap":
            total += Np * D
        elif self.readout == "register_concat":
            total += self.num_registers * 2 * D * self.neck_dim
        total += getattr(self.out_norm, "flop_count", lambda _t: 0)(1)
        return total + 2 * self.head_dim * self.num_classes

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters tagged ``_no_weight_decay`` (timm's optimizer-factory convention)."""
        return {name for name, p in self.named_parameters() if getattr(p, "_no_weight_decay", False)}

    # ------------------------------------------------------------------------------------------
    # Features for downstream tasks

    def intermediate_indices(self, indices: int | Sequence[int] | None = None) -> list[int]:
        """Absolute block indices: ``None`` -> every block, ``n`` -> the last ``n``, a sequence -> those
        blocks (negative values count from the end), sorted and de-duplicated."""
        N = len(self.blocks)
        if indices is None:
            return list(range(N))
        if isinstance(indices, int) and not isinstance(indices, bool):
            if not 0 < indices <= N:
                raise ValueError(f"indices={indices} asks for the last n blocks; n must be in 1..{N}")
            return list(range(N - indices, N))
        try:
            items = list(indices)
        except TypeError:
            raise TypeError(f"indices must be None, an int or a sequence of ints, got {indices!r}") from None
        out = set()
        for index in items:
            if isinstance(index, bool) or not isinstance(index, int) or not -N <= index < N:
                raise ValueError(f"indices must be block indices in [-{N}, {N - 1}], got {indices!r}")
            out.add(index % N)
        if not out:
            raise ValueError("indices is empty; give at least one block index")
        return sorted(out)

    def patch_tokens_to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token sequence ``[B, T, D]`` -> its patch tokens as a feature map ``[B, D, g, g]``."""
        g = self._grid_w
        B, _, D = tokens.shape
        return tokens[:, : self.num_patches].reshape(B, g, g, D).permute(0, 3, 1, 2).contiguous()

    def collect_intermediates(
        self, x: torch.Tensor, indices: list[int], stop_early: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the network on channels-last images, keeping the tokens after the blocks ``indices``.

        Returns:
            The tokens after the last block run ``[B, T, D]`` (all blocks unless ``stop_early``, then
            the last block of ``indices``) and the kept token sequences ``[B, T, D]``, in order.
        """
        x = self.embed(x)  # (B, T, D)
        last = max(indices) if stop_early else len(self.blocks) - 1
        kept = []
        for index in range(last + 1):
            x = self._run_block(index, x)  # (B, T, D)
            if index in indices:
                kept.append(x)
        return x, kept

    def forward_intermediates(
        self,
        x: torch.Tensor | Mapping[str, Any],
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
    ) -> list[torch.Tensor]:
        """Per-block patch tokens of channels-last images, as feature maps.

        Args:
            x: Images ``[B, H, W, C]`` (channels-last), or ``forward``'s ``{"input": x}`` dict.
            indices: Which blocks: ``None`` = all, ``n`` = the last ``n``, or a sequence of block
                indices (negative from the end).
            norm: Apply ``out_norm`` to the tokens (needs ``out_norm`` of width ``hidden_dim``).

        Returns:
            One ``[B, D, g, g]`` tensor per selected block (ascending block order), ``g = image_size /
            patch_size``; blocks after the last selected one are not run.
        """
        if isinstance(x, Mapping):
            x = x["input"]
        take = self.intermediate_indices(indices)
        if norm and self.head_dim != self.hidden_dim:
            raise ValueError(
                f"norm=True needs out_norm of width hidden_dim={self.hidden_dim}, but it normalises the "
                f"{self.readout!r} readout of width {self.head_dim}"
            )
        _, kept = self.collect_intermediates(x, take, stop_early=True)
        return [self.patch_tokens_to_grid(self.out_norm(t) if norm else t) for t in kept]
