"""The allow-list of config targets: which ``__target__`` a config read from a file may name.

A config tree is a list of calls to make. A tree written in Python (``--config x.py``, a
``LazyConfig`` built in code) is code the user wrote and may call anything. A tree read from a file
a user *received* — a YAML config, a run's ``config.yaml``, the metadata of a ``.safetensors``
checkpoint, the hyper-parameters of a Lightning checkpoint — is data: every ``__target__`` in it
must name a callable registered here, and :func:`check_config_targets` refuses anything else
*before* anything is imported or called (``{"__target__": "os.system", ...}`` is an error, not a
shell command). ``trust_config=True`` (CLI ``--trust-config``) lifts the check for a file the user
wrote.

This module is a passive table: it imports nothing of the model. The packages that define targets
fill it when they are imported (as timm's ``@register_model`` fills timm's registry):
``vit5.modules`` registers its module classes, the initialisers of ``vit5.ops.init`` and the
``torch.nn`` layers configs use (under ``torch.nn.X`` and their defining path
``torch.nn.modules.<file>.X``); ``vit5.networks`` its network and builder; the package root the
``vit5.X`` names of what it re-exports. Importing any part of ``vit5`` imports the package root
first, so the table is complete whenever a config can be read.

Also admitted: ``nvsubquadratic.<any.path>.<Name>``, which maps to vit5's registered class or
function of the same ``Name`` (the reference library's configs load unchanged), and whatever
:func:`register_config_target` adds (a user's own module, a plugin). Not "anything under
``vit5.``", which would admit ``vit5.cli.main``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "ConfigTargetError",
    "check_config_targets",
    "config_targets",
    "reference_target",
    "register_config_target",
    "resolve_config_target",
]

TARGET_KEY = "__target__"
_REFERENCE = re.compile(r"^nvsubquadratic(?:\.[A-Za-z_]\w*)*\.([A-Za-z_]\w*)$")
_table: dict[str, Callable[..., Any]] = {}


class ConfigTargetError(ValueError):
    """A config read from a file names a ``__target__`` that is not registered as config-buildable."""


def _path(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def config_targets() -> dict[str, Callable[..., Any]]:
    """Every registered dotted path and the callable it builds (a copy)."""
    return dict(_table)


def register_config_target(obj: Callable[..., Any], *aliases: str) -> Callable[..., Any]:
    """Allow configs read from files to name ``obj`` (by its dotted path and any ``aliases``).

    Usable as a decorator on a user's own module class::

        @vit5.register_config_target
        class MyMixer(nn.Module): ...

    Returns:
        ``obj`` unchanged.

    Raises:
        TypeError: ``obj`` is not a class or function, or an alias is not a non-empty string.
    """
    if not callable(obj) or not hasattr(obj, "__module__") or not hasattr(obj, "__qualname__"):
        raise TypeError(f"register_config_target needs a class or function, got {obj!r}")
    for alias in aliases:
        if not isinstance(alias, str) or not alias:
            raise TypeError(f"aliases must be non-empty dotted paths, got {alias!r}")
    for path in (_path(obj), *aliases):
        _table[path] = obj
    return obj


def reference_target(path: str) -> str | None:
    """The registered vit5 path that the nvSubquadratic name ``path`` stands for, or ``None``.

    ``nvsubquadratic.modules.vit5_attention.ViT5Attention`` -> ``vit5.modules.attention.ViT5Attention``:
    the last component names the object; only vit5's own registered objects are candidates.
    """
    match = _REFERENCE.match(path) if isinstance(path, str) else None
    if not match:
        return None
    name = match.group(1)
    for candidate, obj in _table.items():
        own = _path(obj)  # the config package's helpers (partial, unavailable, ...) stand for nothing
        if (
            candidate.startswith("vit5.")
            and not own.startswith("vit5.config.")
            and getattr(obj, "__name__", None) == name
        ):
            return own
    return None


def resolve_config_target(path: Any, source: str = "the config") -> str:
    """The registered dotted path that ``path`` names (``nvsubquadratic.*`` mapped to vit5's).

    Raises:
        ConfigTargetError: ``path`` is not a registered target (nothing is imported).
    """
    if isinstance(path, str):
        if path in _table:
            return path
        mapped = reference_target(path)
        if mapped is not None:
            return mapped
    raise ConfigTargetError(
        f"{source}: __target__ {path!r} is not a registered config target, refused without importing it "
        "(configs read from files may only build vit5's networks, modules and initialisers, torch.nn layers "
        "and nvsubquadratic.* equivalents; pass --trust-config / trust_config=True if you wrote this file, "
        "or register your class with vit5.register_config_target)"
    )


def unavailable(unavailable_target: str, unavailable_key: str, **arguments: Any) -> Any:
    """Stands for a class of nvSubquadratic or its training stack that vit5 does not provide.

    A config may hold such a call (a Mamba mixer, an Apex optimizer, the ``experiments`` data module)
    in parts the network does not use; the tree reads, saves and reloads, and only building the call
    fails.

    Raises:
        ValueError: always, one line naming the class and the config key.
    """
    raise ValueError(
        f"{unavailable_key or '<root>'}: {unavailable_target} is not provided by vit5 (nvSubquadratic's "
        "own or its training stack's); this part of the config cannot be built"
    )


register_config_target(unavailable)
UNAVAILABLE_TARGET = f"{__name__}.unavailable"
# Packages whose names configs may hold but vit5 does not provide (never imported: see unavailable()).
UNAVAILABLE_PACKAGES = (
    "nvsubquadratic", "mamba_ssm", "apex", "nvidia.dali", "lightning", "pytorch_lightning", "lightning_fabric",
    "experiments",
)  # fmt: skip


def _is_unavailable(path: Any) -> bool:
    """An unregistered dotted name inside one of :data:`UNAVAILABLE_PACKAGES`."""
    if not isinstance(path, str) or path in _table or reference_target(path) is not None:
        return False
    if not re.fullmatch(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+", path):
        return False
    return any(path.startswith(root + ".") for root in UNAVAILABLE_PACKAGES)


def check_config_targets(tree: Any, source: str = "the config", *, trust_config: bool = False) -> Any:
    """Check every ``__target__`` in ``tree`` (at any depth) against the registry.

    Args:
        tree: A config tree of mappings and lists (as read from YAML or checkpoint metadata).
        source: What the tree was read from (a file name), for the error message.
        trust_config: Skip the check and return ``tree`` unchanged.

    Returns:
        A copy of ``tree`` (plain dicts and lists) in which ``nvsubquadratic.*`` targets name vit5's
        class or function of the same name, and targets in :data:`UNAVAILABLE_PACKAGES` that vit5
        does not provide (a Mamba mixer, an Apex optimizer) become calls of :func:`unavailable`,
        which raise one line when built; ``tree`` itself is not modified.

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
            if key != TARGET_KEY:
                out[key] = _checked(item, source, f"{where}.{key}" if where else str(key))
            elif _is_unavailable(item):
                out.update(
                    {TARGET_KEY: UNAVAILABLE_TARGET, "unavailable_target": item, "unavailable_key": where}
                )
            else:
                out[key] = resolve_config_target(item, f"{source}{f' at {where}' if where else ''}")
        return out
    if isinstance(value, (list, tuple)):
        return [_checked(item, source, f"{where}[{index}]") for index, item in enumerate(value)]
    return value
