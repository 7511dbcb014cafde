"""The allow-list of config targets: which ``__target__`` a config read from a file may name.

A config tree is a list of calls to make. A tree written in Python (``--config x.py``, a
``LazyConfig`` built in code) is code the user wrote and may call anything. A tree read from a file
a user *received* — a YAML config, a run's ``config.yaml``, the metadata of a ``.safetensors``
checkpoint, the hyper-parameters of a Lightning checkpoint — is data: every ``__target__`` in it
must name a callable registered here, and :func:`check_config_targets` refuses anything else
*before* anything is imported or called (``{"__target__": "os.system", ...}`` is an error, not a
shell command). ``trust_config=True`` (CLI ``--trust-config``) lifts the check for a file the user
wrote.

Registered (and nothing else; not "anything under ``vit5.``", which would admit ``vit5.cli.main``):

* vit5's network and module classes and the builder / initialiser functions its configs use;
* the ``torch.nn`` layer classes configs use (activations, norms, linear/conv, dropout, identity),
  under ``torch.nn.X`` and their defining path ``torch.nn.modules.<file>.X``;
* ``nvsubquadratic.<any.path>.<Name>``, which maps to vit5's registered class or function of the
  same ``Name`` (the reference library's configs load unchanged);
* whatever :func:`register_config_target` adds (a user's own module, a plugin).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

__all__ = [
    "ConfigTargetError",
    "check_config_targets",
    "config_targets",
    "register_config_target",
    "resolve_config_target",
]

TARGET_KEY = "__target__"
_REFERENCE = re.compile(r"^nvsubquadratic(?:\.[A-Za-z_]\w*)*\.([A-Za-z_]\w*)$")
_TORCH_NN_LAYERS = (
    "Identity", "Linear", "Conv1d", "Conv2d", "Conv3d", "Dropout", "Dropout1d", "Dropout2d",
    "GELU", "SiLU", "ReLU", "ReLU6", "LeakyReLU", "ELU", "Mish", "Sigmoid", "Tanh", "Softplus",
    "Hardswish", "Hardsigmoid", "GLU", "Softmax", "LayerNorm", "GroupNorm", "RMSNorm",
    "BatchNorm1d", "BatchNorm2d", "Flatten",
)  # fmt: skip
_extra: dict[str, Callable[..., Any]] = {}


class ConfigTargetError(ValueError):
    """A config read from a file names a ``__target__`` that is not registered as config-buildable."""


def _path(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


@lru_cache(maxsize=1)
def _builtin_targets() -> dict[str, Callable[..., Any]]:
    """Dotted path -> callable for everything vit5 registers (built once, on first use)."""
    import torch.nn

    import vit5.modules as modules
    import vit5.ops.init as init
    from vit5.networks import presets
    from vit5.networks.vit5_classification import ViT5ClassificationNet

    objects: list[Any] = [getattr(modules, name) for name in modules.__all__]
    objects += [ViT5ClassificationNet, presets.build_vit5]
    objects += [getattr(init, name) for name in init.__all__ if callable(getattr(init, name))]
    table: dict[str, Callable[..., Any]] = {}
    for obj in objects:
        table[_path(obj)] = obj
        table[f"vit5.{obj.__name__}"] = obj  # the public re-export, when it exists
    # Saved configs may name the former home of the resampled kernel.
    table["vit5.networks.resampled_kernel.ResampledSIRENKernelND"] = modules.ResampledSIRENKernelND
    for name in _TORCH_NN_LAYERS:
        layer = getattr(torch.nn, name, None)
        if layer is not None:
            table[f"torch.nn.{name}"] = layer
            table[_path(layer)] = layer
    return {path: obj for path, obj in table.items() if _public_alias_exists(path, obj)}


def _public_alias_exists(path: str, obj: Any) -> bool:
    """``vit5.X`` aliases only where ``vit5.X`` really is the object (not every class is re-exported)."""
    if path.count(".") != 1 or not path.startswith("vit5."):
        return True
    import vit5

    return getattr(vit5, path.split(".", 1)[1], None) is obj


def config_targets() -> dict[str, Callable[..., Any]]:
    """Every registered dotted path and the callable it builds (a copy)."""
    return {**_builtin_targets(), **_extra}


def register_config_target(obj: Callable[..., Any], *aliases: str) -> Callable[..., Any]:
    """Allow configs read from files to name ``obj`` (by its dotted path and any ``aliases``).

    Usable as a decorator on a user's own module class::

        @vit5.register_config_target
        class MyMixer(nn.Module): ...

    Returns:
        ``obj`` unchanged.

    Raises:
        TypeError: ``obj`` is not a class or function, or an alias is not a string.
    """
    if not callable(obj) or not hasattr(obj, "__module__") or not hasattr(obj, "__qualname__"):
        raise TypeError(f"register_config_target needs a class or function, got {obj!r}")
    for alias in aliases:
        if not isinstance(alias, str) or not alias:
            raise TypeError(f"aliases must be non-empty dotted paths, got {alias!r}")
    for path in (_path(obj), *aliases):
        _extra[path] = obj
    return obj


def resolve_config_target(path: Any, source: str = "the config") -> str:
    """The registered dotted path that ``path`` names (``nvsubquadratic.*`` mapped to vit5's).

    Raises:
        ConfigTargetError: ``path`` is not a registered target (nothing is imported).
    """
    table = config_targets()
    if isinstance(path, str):
        if path in table:
            return path
        match = _REFERENCE.match(path)
        if match:
            name = match.group(1)
            for candidate, obj in table.items():
                if candidate.startswith("vit5.") and getattr(obj, "__name__", None) == name:
                    return _path(obj)
    raise ConfigTargetError(
        f"{source}: __target__ {path!r} is not a registered config target, refused without importing it "
        "(configs read from files may only build vit5's networks, modules and initialisers, torch.nn layers "
        "and nvsubquadratic.* equivalents; pass --trust-config / trust_config=True if you wrote this file, "
        "or register your class with vit5.register_config_target)"
    )


def check_config_targets(tree: Any, source: str = "the config", *, trust_config: bool = False) -> Any:
    """Check every ``__target__`` in ``tree`` (at any depth) against the registry.

    Args:
        tree: A config tree of mappings and lists (as read from YAML or checkpoint metadata).
        source: What the tree was read from (a file name), for the error message.
        trust_config: Skip the check and return ``tree`` unchanged.

    Returns:
        A copy of ``tree`` (plain dicts and lists) in which ``nvsubquadratic.*`` targets name vit5's
        class or function of the same name; ``tree`` itself is not modified.

    Raises:
        ConfigTargetError: a target is not registered; the message names it, where it is, and
            ``source``. Nothing has been imported or called.
    """
    if trust_config:
        return tree
    return _checked(tree, source, "")


def _checked(value: Any, source: str, where: str) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if key == TARGET_KEY:
                out[key] = resolve_config_target(item, f"{source}{f' at {where}' if where else ''}")
            else:
                out[key] = _checked(item, source, f"{where}.{key}" if where else str(key))
        return out
    if isinstance(value, (list, tuple)):
        return [_checked(item, source, f"{where}[{index}]") for index, item in enumerate(value)]
    return value
