"""Resolution change: run weights trained at one ``image_size`` at another.

A network trained on a ``g x g`` patch grid is rebuilt for a ``g' x g'`` grid; the weights carry over
unchanged except ``pos_embed``:

* ``pos_embed`` is resampled bicubically on the patch grid (``align_corners=False``, as DeiT and the
  official ViT-5 code fine-tune at a new resolution); interpolation weights sum to one, so a constant
  offset (a folded patch-embedding bias) stays exact.
* Interleaved RoPE keeps the training grid as its reference (``rope_ref_grid = g``): patch positions
  become ``arange(g') * g / g'``, the rule of spec/attention.md; the tables are rebuilt at
  construction. The reference convention (``rope_impl="nvsubquadratic"``) always uses the integer
  positions of the current grid.
* Hyena SIREN kernels, ``hyena_kernel=``:

  - ``"resample"`` (default): the SIREN is evaluated on the training grid (exactly the trained taps)
    and the kernel is resampled bicubically for the image scale ``g' / g``, times the area factor
    ``(g / g')^2`` (:class:`~vit5.modules.resampled_kernel.ResampledSIRENKernelND`). Like the RoPE
    rule, the kernel follows the image content; it works whatever the SIREN's frequency.
  - ``"stretch"``: the SIREN is evaluated on the new grid over the same coordinate range
    (``L_cache`` of the new grid). Exact for smooth kernels, but a SIREN with ``omega_0 = 10``
    changes a lot between its training taps, so the in-between values are arbitrary.
  - ``"extend"``: the training ``L_cache`` (coordinate step ``1 / (L_cache - 1)``) is kept: the kernel
    stays a function of token displacement and a larger grid evaluates it further out. Right for a
    larger canvas at the same scale, not for upsampled images.

  Measured on digits (tiny hybrid, patch 2, 4 epochs at 16 px: 98.6%), evaluated on the test set
  upsampled to 20 / 24 px: ``resample`` 90% / 88%, ``stretch`` 65% / 49%, ``extend`` 11% / 17%.
* Grid adapters get the new width; the padding ``(-(g'^2 + cls + R)) mod g'`` is recomputed by the
  rebuilt network.

Everything here is a pure function of configs and tensors; reading weights from files lives in
:mod:`vit5.weights`.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from vit5._validation import choice, positive_int
from vit5.config import TARGET_KEY, ConfigNode, instantiate, locate, resolve, target_path
from vit5.modules.adapter import ViT5HyenaAdapter
from vit5.modules.attention import ViT5Attention
from vit5.modules.ckconv import CKConvND
from vit5.modules.kernel_resampling import SelfResampling
from vit5.modules.resampled_kernel import ResampledSIRENKernelND
from vit5.modules.siren import SIRENKernelND
from vit5.networks.presets import build_vit5, hyena_l_cache, vit5_config
from vit5.networks.vit5_classification import ViT5ClassificationNet

__all__ = [
    "HYENA_KERNEL_MODES",
    "rebuild_at_resolution",
    "rebuild_config",
    "resample_pos_embed",
    "resize_config",
    "resize_model",
    "resize_state_dict",
]

HYENA_KERNEL_MODES = ("resample", "stretch", "extend")


def _grid_pair(name: str, grid: Any) -> tuple[int, int]:
    if isinstance(grid, int) and not isinstance(grid, bool):
        grid = (grid, grid)
    try:
        h, w = grid
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or (h, w), got {grid!r}") from None
    return positive_int(f"{name}[0]", h), positive_int(f"{name}[1]", w)


def resample_pos_embed(
    pos_embed: torch.Tensor, grid: int | tuple[int, int], old_grid: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """Resample position embeddings ``[1, h*w, D]`` (row-major patch grid) to ``[1, h'*w', D]``.

    Bicubic interpolation in fp32 (``F.interpolate(mode="bicubic", align_corners=False)``, no
    antialiasing, as in DeiT / the official ViT-5 code); the result has the input's dtype.
    Interpolation weights sum to one, so a constant offset (e.g. a folded patch-embedding bias)
    passes through unchanged.

    Args:
        pos_embed: ``[1, Np, D]`` embeddings of a row-major ``h x w`` grid.
        grid: Target grid ``g'`` or ``(h', w')``.
        old_grid: Source grid; ``None`` means square (``Np`` must be a perfect square).
    """
    if not isinstance(pos_embed, torch.Tensor) or pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        shape = tuple(pos_embed.shape) if isinstance(pos_embed, torch.Tensor) else type(pos_embed).__name__
        raise ValueError(f"pos_embed must be a tensor of shape [1, Np, D], got {shape}")
    num_patches, dim = pos_embed.shape[1:]
    if old_grid is None:
        side = int(round(num_patches**0.5))
        if side * side != num_patches:
            raise ValueError(
                f"pos_embed has {num_patches} positions, not a square grid; pass old_grid=(h, w)"
            )
        old_grid = side
    h, w = _grid_pair("old_grid", old_grid)
    if h * w != num_patches:
        raise ValueError(f"old_grid {(h, w)} has {h * w} positions but pos_embed has {num_patches}")
    new_h, new_w = _grid_pair("grid", grid)
    if (new_h, new_w) == (h, w):
        return pos_embed.clone()
    x = pos_embed.float().reshape(1, h, w, dim).permute(0, 3, 1, 2)  # (1, D, h, w)
    x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False)  # (1, D, h', w')
    return x.permute(0, 2, 3, 1).reshape(1, new_h * new_w, dim).to(pos_embed.dtype)


def resize_state_dict(
    state_dict: Mapping[str, torch.Tensor], grid: int | tuple[int, int]
) -> dict[str, torch.Tensor]:
    """A copy of a ``ViT5ClassificationNet`` state dict with ``pos_embed`` resampled to ``grid``."""
    if "pos_embed" not in state_dict:
        raise ValueError(
            f"state_dict has no 'pos_embed' key (is it a ViT5ClassificationNet state dict? keys: "
            f"{sorted(state_dict)[:8]}...)"
        )
    out = dict(state_dict)
    out["pos_embed"] = resample_pos_embed(state_dict["pos_embed"], grid)
    return out


def _is_target(node: Mapping, cls: Any) -> bool:
    target = node.get(TARGET_KEY)
    if isinstance(target, str):
        try:
            target = locate(target)
        except (ImportError, ValueError):
            return False
    if isinstance(cls, type):
        return isinstance(target, type) and issubclass(target, cls)
    return target is cls


def _walk(value: Any, visit: Any) -> None:
    if isinstance(value, Mapping):
        if TARGET_KEY in value:
            visit(value)
        for item in value.values():
            _walk(item, visit)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _walk(item, visit)


def _new_grid(image_size: Any, patch_size: Any) -> int:
    positive_int("image_size", image_size)
    if image_size % patch_size:
        raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size})")
    return image_size // patch_size


@dataclass(frozen=True)
class _Layout:
    """Token grids of a network before and after the resize (``rows x g`` incl. the extra rows)."""

    grid: int
    new_grid: int
    rows: int
    new_rows: int

    @classmethod
    def of(cls, grid: int, new_grid: int, extra_tokens: int) -> _Layout:
        return cls(
            grid,
            new_grid,
            -(-(grid * grid + extra_tokens) // grid),
            -(-(new_grid**2 + extra_tokens) // new_grid),
        )

    @property
    def ratio(self) -> float:
        return self.new_grid / self.grid

    def stretch_l_cache(self, l_cache: Any) -> Any:
        """``L_cache`` covering the new grid as the old one covered the old grid."""
        per_axis = [l_cache] * 2 if isinstance(l_cache, int) else list(l_cache)
        natural = {(0, self.rows): self.new_rows, (1, self.grid): self.new_grid}
        out = [natural.get((a, v), round((v - 1) * self.ratio) + 1) for a, v in enumerate(per_axis)]
        return out[0] if isinstance(l_cache, int) and out[0] == out[1] else out


def _resize_preset_call(cfg: ConfigNode, image_size: int, hyena_kernel: str) -> ConfigNode:
    arguments = {key: value for key, value in cfg.items() if key != TARGET_KEY}
    args = inspect.signature(vit5_config).bind(**arguments)
    args.apply_defaults()
    args = args.arguments
    grid = args["image_size"] // args["patch_size"]
    extra = int(args["readout"] == "cls") + args["num_registers"]
    layout = _Layout.of(grid, _new_grid(image_size, args["patch_size"]), extra)
    out = copy.deepcopy(cfg)
    out.image_size = image_size
    if "H" in args["pattern"]:
        l_cache = args["L_cache"] if args["L_cache"] is not None else hyena_l_cache(grid, grid * grid + extra)
        if hyena_kernel != "stretch":
            out.L_cache = l_cache
        elif args["L_cache"] is not None:  # None: the new grid's own L_cache, which stretches
            out.L_cache = layout.stretch_l_cache(l_cache)
        if hyena_kernel == "resample":
            if args["kernel_sample_grid"] is None:
                out.kernel_sample_grid, out.kernel_sample_scale = [layout.rows, grid], layout.ratio
            else:
                out.kernel_sample_scale = args["kernel_sample_scale"] * layout.ratio
    if "A" in args["pattern"] and args["rope_impl"] == "interleaved" and args["rope_ref_grid"] is None:
        out.rope_ref_grid = grid
    return out


def _resize_kernel(conv: Mapping, layout: _Layout, hyena_kernel: str) -> None:
    kernel = conv.get("kernel_cfg")
    if hyena_kernel == "extend":
        return
    if not isinstance(kernel, Mapping) or not _is_target(kernel, SIRENKernelND):
        raise ValueError(
            f"hyena_kernel={hyena_kernel!r} needs SIREN kernels; a CKConvND has kernel_cfg {kernel!r}"
        )
    if hyena_kernel == "stretch":
        kernel["L_cache"] = layout.stretch_l_cache(kernel["L_cache"])
    elif _is_target(kernel, ResampledSIRENKernelND) or kernel.get("sample_grid") is not None:
        kernel["sample_scale"] = kernel.get("sample_scale", 1.0) * layout.ratio
    else:
        padding, grid_type = conv.get("fft_padding", "zero"), conv.get("grid_type")
        per_axis = [padding] * 2 if isinstance(padding, str) else list(padding)
        single = [grid_type == "single" or (grid_type is None and p == "circular") for p in per_axis]
        lengths = (layout.rows, layout.grid)
        if not _is_target(kernel, SelfResampling):  # the kernels_nd family resamples itself
            kernel[TARGET_KEY] = target_path(ResampledSIRENKernelND)
        kernel["sample_grid"] = [(n + 1) // 2 if s else n for n, s in zip(lengths, single)]
        kernel["sample_scale"] = layout.ratio


def _resize_network_tree(cfg: ConfigNode, image_size: int, hyena_kernel: str) -> ConfigNode:
    grid = cfg["image_size"] // cfg["patch_size"]
    extra = int(cfg.get("readout") == "cls") + cfg.get("num_registers", 0)
    layout = _Layout.of(grid, _new_grid(image_size, cfg["patch_size"]), extra)
    out = copy.deepcopy(cfg)
    out.image_size = image_size

    def visit(node: Mapping) -> None:
        if _is_target(node, ViT5Attention):
            found = (node.get("num_patches_h"), node.get("num_patches_w"))
            if found != (grid, grid):
                raise ValueError(
                    f"a ViT5Attention config has num_patches_h/w = {found}, but the network's patch grid is "
                    f"{grid}x{grid}; only configs consistent with the network can be resized"
                )
            node["num_patches_h"] = node["num_patches_w"] = layout.new_grid
            if node.get("rope_impl") == "interleaved" and node.get("rope_ref_grid") is None:
                node["rope_ref_grid"] = grid
        elif _is_target(node, ViT5HyenaAdapter):
            node["grid_w"] = layout.new_grid
        elif _is_target(node, CKConvND):
            _resize_kernel(node, layout, hyena_kernel)

    _walk(out, visit)
    return out


def resize_config(cfg: Mapping, image_size: int, *, hyena_kernel: str = "resample") -> ConfigNode:
    """The config of the same network for input images of ``image_size`` (see the module docstring).

    Args:
        cfg: A network config: ``LazyConfig(build_vit5)(...)`` (run configs), a preset's
            ``LazyConfig`` of :class:`ViT5ClassificationNet` (:func:`~vit5.networks.presets.model_config`),
            or any ``ViT5ClassificationNet`` config tree. Interpolations are resolved first.
        image_size: New square input resolution; must be divisible by the patch size.
        hyena_kernel: How Hyena's implicit kernels follow the resolution (:data:`HYENA_KERNEL_MODES`):
            ``"resample"`` (default), ``"stretch"`` or ``"extend"``.

    Returns:
        A new config; ``cfg`` is not modified. Resizing a resized config again composes (the
        reference grids stay those of the original training).

    Raises:
        TypeError: ``cfg`` is not a config of a ViT5ClassificationNet.
        ValueError: ``image_size`` is not a positive multiple of the patch size, an unknown
            ``hyena_kernel``, or an attention config that disagrees with the network's grid.
    """
    choice("hyena_kernel", hyena_kernel, HYENA_KERNEL_MODES)
    if not isinstance(cfg, Mapping) or TARGET_KEY not in cfg:
        raise TypeError(f"cfg must be a LazyConfig call of a ViT5ClassificationNet, got {type(cfg).__name__}")
    node = resolve(cfg)
    if _is_target(node, build_vit5):
        return _resize_preset_call(node, image_size, hyena_kernel)
    if _is_target(node, ViT5ClassificationNet):
        return _resize_network_tree(node, image_size, hyena_kernel)
    raise TypeError(
        f"cfg must build a ViT5ClassificationNet (directly or with build_vit5), got target {node[TARGET_KEY]!r}"
    )


def resize_model(
    model: ViT5ClassificationNet, image_size: int, *, config: Mapping, hyena_kernel: str = "resample"
) -> ViT5ClassificationNet:
    """A new network for ``image_size`` holding ``model``'s weights (``pos_embed`` resampled).

    For *evaluating* a trained model at another size (``load_model(image_size=)``, ``vit5 eval
    --image-size``): RoPE and the Hyena kernels keep the training grid's scale. To *fine-tune* at a
    new size as the official code does (the network built at that size, RoPE at the new grid's
    integer positions), use :func:`rebuild_at_resolution` instead.

    Args:
        model: The trained network (left unchanged).
        image_size: New square input resolution (a multiple of the patch size).
        config: The config ``model`` was built from (e.g. ``model_config("vit5_tiny_hybrid")`` or
            the ``model`` section of a run config).
        hyena_kernel: See :func:`resize_config`.

    Returns:
        The resized network, in ``model``'s training/eval mode, on its device and dtype.

    Raises:
        TypeError: ``model`` is not a ViT5ClassificationNet.
        ValueError: ``config`` does not describe ``model`` (another image size, patch size or width).
    """
    if not isinstance(model, ViT5ClassificationNet):
        raise TypeError(f"model must be a ViT5ClassificationNet, got {type(model).__name__}")
    return _weights_into(
        model, config, resize_config(config, image_size, hyena_kernel=hyena_kernel), image_size
    )


def _weights_into(
    model: ViT5ClassificationNet, config: Mapping, new_cfg: Mapping, image_size: int
) -> ViT5ClassificationNet:
    """Build ``new_cfg`` and load ``model``'s weights into it (``pos_embed`` resampled to the new grid),
    after checking that ``config`` is the config ``model`` was built from."""
    trained_at = resolve(config).get("image_size", 224)  # 224: build_vit5's default
    if trained_at != model.image_size:
        raise ValueError(
            f"config describes image_size={trained_at} but model has image_size={model.image_size}; "
            "pass the config the model was built from"
        )
    built = instantiate(new_cfg)
    if built.patch_size != model.patch_size or built.hidden_dim != model.hidden_dim:
        raise ValueError(
            "config does not describe model: it builds patch_size/hidden_dim "
            f"{built.patch_size}/{built.hidden_dim}, the model has {model.patch_size}/{model.hidden_dim}"
        )
    built.load_state_dict(resize_state_dict(model.state_dict(), image_size // model.patch_size), strict=True)
    parameter = next(model.parameters())
    return built.to(device=parameter.device, dtype=parameter.dtype).train(model.training)


# --------------------------------------------------------------------------------------------------
# Fine-tuning at another resolution: a network built at the new size, as the official code does


def _same_l_cache(a: Any, b: Any) -> bool:
    per_axis = lambda v: [v, v] if isinstance(v, int) else list(v)  # noqa: E731
    return per_axis(a) == per_axis(b)


def _rebuild_preset_call(cfg: ConfigNode, image_size: int) -> ConfigNode:
    args = inspect.signature(vit5_config).bind(**{k: v for k, v in cfg.items() if k != TARGET_KEY})
    args.apply_defaults()
    args = args.arguments
    grid = args["image_size"] // args["patch_size"]
    _new_grid(image_size, args["patch_size"])
    natural = hyena_l_cache(grid, grid * grid + int(args["readout"] == "cls") + args["num_registers"])
    out = copy.deepcopy(cfg)
    out.image_size = image_size
    resized = args["kernel_sample_grid"] is not None
    for key in ("rope_ref_grid", "kernel_sample_grid", "kernel_sample_scale"):
        out.pop(key, None)
    if args["L_cache"] is not None and (resized or _same_l_cache(args["L_cache"], natural)):
        out.pop("L_cache")
    return out


def _rebuild_network_tree(cfg: ConfigNode, image_size: int) -> ConfigNode:
    grid = cfg["image_size"] // cfg["patch_size"]
    new_grid = _new_grid(image_size, cfg["patch_size"])
    extra = int(cfg.get("readout") == "cls") + cfg.get("num_registers", 0)
    natural, new_natural = (
        hyena_l_cache(grid, grid * grid + extra),
        hyena_l_cache(new_grid, new_grid**2 + extra),
    )
    out = copy.deepcopy(cfg)
    out.image_size = image_size

    def visit(node: Mapping) -> None:
        if _is_target(node, ViT5Attention):
            if (node.get("num_patches_h"), node.get("num_patches_w")) != (grid, grid):
                raise ValueError(
                    f"a ViT5Attention config has num_patches_h/w = {(node.get('num_patches_h'), node.get('num_patches_w'))}, "
                    f"but the network's patch grid is {grid}x{grid}"
                )
            node["num_patches_h"] = node["num_patches_w"] = new_grid
            node.pop("rope_ref_grid", None)
        elif _is_target(node, ViT5HyenaAdapter):
            node["grid_w"] = new_grid
        elif _is_target(node, ResampledSIRENKernelND):
            node[TARGET_KEY] = target_path(SIRENKernelND)
            node.pop("sample_grid", None)
            node.pop("sample_scale", None)
            node["L_cache"] = new_natural
        elif _is_target(node, SIRENKernelND):
            if not _same_l_cache(node.get("L_cache"), natural):
                raise ValueError(
                    f"a SIREN kernel has L_cache={node.get('L_cache')!r}, not the {grid}x{grid} grid's {natural!r}; "
                    "rebuild_at_resolution cannot tell how such a kernel follows the grid"
                )
            node["L_cache"] = new_natural
            node.pop("sample_grid", None)
            node.pop("sample_scale", None)

    _walk(out, visit)
    return out


def rebuild_config(cfg: Mapping, image_size: int) -> ConfigNode:
    """The config of the same architecture *built* at ``image_size`` (see :func:`rebuild_at_resolution`).

    Unlike :func:`resize_config` (evaluation at another size: RoPE and Hyena kernels keep the
    training grid's scale), the result is the network one would build from scratch at
    ``image_size``: RoPE at the new grid's integer positions, Hyena kernels on the new grid's
    natural ``L_cache``, no kernel resampling. Recorded resize settings (``rope_ref_grid``,
    ``kernel_sample_grid``/``scale``) are dropped.

    Raises:
        TypeError: ``cfg`` is not a config of a ViT5ClassificationNet.
        ValueError: ``image_size`` is not a positive multiple of the patch size, or a kernel config
            with an ``L_cache`` unrelated to the grid.
    """
    if not isinstance(cfg, Mapping) or TARGET_KEY not in cfg:
        raise TypeError(f"cfg must be a LazyConfig call of a ViT5ClassificationNet, got {type(cfg).__name__}")
    node = resolve(cfg)
    if _is_target(node, build_vit5):
        return _rebuild_preset_call(node, image_size)
    if _is_target(node, ViT5ClassificationNet):
        return _rebuild_network_tree(node, image_size)
    raise TypeError(
        f"cfg must build a ViT5ClassificationNet (directly or with build_vit5), got target {node[TARGET_KEY]!r}"
    )


def rebuild_at_resolution(
    model: ViT5ClassificationNet, image_size: int, config: Mapping | None = None
) -> ViT5ClassificationNet:
    """``model``'s weights in a network built at ``image_size``: the start of a fine-tune at a new size.

    This is what the official ViT-5 / DeiT fine-tuning code does (``vit5 train --image-size`` uses it):
    the network is constructed at the new resolution, so RoPE positions are the new grid's integer
    coordinates and Hyena kernels are generated on the new grid from the same SIREN weights;
    ``pos_embed`` is resampled bicubically (``align_corners=False``, no antialias, see
    :func:`resample_pos_embed`); every other tensor is loaded unchanged.

    It differs on purpose from :func:`resize_model` (``load_model(image_size=)``, ``vit5 eval
    --image-size``), which evaluates a *trained* model at another size and keeps the training grid's
    scale for RoPE (``arange(g') * g / g'``) and the Hyena kernels: use that one without further
    training, this one before training at the new size.

    Args:
        model: The network (left unchanged).
        image_size: New square input resolution (a multiple of the patch size).
        config: The config ``model`` was built from (a preset's ``model_config(...)``, a run's
            ``model`` section, or ``vit5.weights.load_model_and_config(path).model_config``);
            ``None`` uses ``model.config`` if the network carries one.

    Returns:
        The rebuilt network, in ``model``'s training/eval mode, on its device and dtype.

    Raises:
        TypeError: ``model`` is not a ViT5ClassificationNet, or no config is given or attached.
        ValueError: ``config`` does not describe ``model``, or a bad ``image_size``.
    """
    if not isinstance(model, ViT5ClassificationNet):
        raise TypeError(f"model must be a ViT5ClassificationNet, got {type(model).__name__}")
    if config is None:
        config = getattr(model, "config", None)
        if config is None:
            raise TypeError("rebuild_at_resolution needs config= (the config the model was built from)")
    return _weights_into(model, config, rebuild_config(config, image_size), image_size)
