"""Plain containers, YAML files and dotted overrides."""

from __future__ import annotations

import ast
import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vit5._io import atomic_write_text
from vit5.config.node import TARGET_KEY, ConfigNode, _accepted_keywords, _target_of
from vit5.config.registry import check_config_targets
from vit5.config.resolve import resolve

# --------------------------------------------------------------------------------------------------
# Plain containers, YAML, overrides


def to_container(cfg: Any, *, resolve_interpolations: bool = True) -> Any:
    """``cfg`` as plain ``dict`` / ``list`` values (interpolations resolved by default)."""
    if resolve_interpolations and isinstance(cfg, Mapping):
        cfg = resolve(cfg)
    if isinstance(cfg, Mapping):
        return {key: to_container(value, resolve_interpolations=False) for key, value in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_container(value, resolve_interpolations=False) for value in cfg]
    return cfg


def _check_plain(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"cannot save config: key {key!r} at {path or '<root>'} is not a string")
            out[key] = _check_plain(item, f"{path}.{key}" if path else key)
        return out
    if isinstance(value, (list, tuple)):
        return [_check_plain(item, f"{path}[{index}]") for index, item in enumerate(value)]
    raise TypeError(
        f"cannot save config: value at {path or '<root>'} is a {type(value).__name__} ({value!r}); only "
        "None, bool, int, float, str, lists and nested configs can be saved. Record factories with "
        "LazyConfig(factory)(...) instead of storing the objects they return."
    )


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as error:  # pragma: no cover - pyyaml ships with the train/test extras
        raise ImportError("saving and loading configs needs PyYAML: pip install 'vit5[train]'") from error
    return yaml


def save_config(cfg: Mapping, path: str | os.PathLike) -> Path:
    """Write ``cfg`` to a YAML file (atomically: a temporary file, fsync, then rename).

    Interpolations are kept as written, so the saved file round-trips through :func:`load_config`.

    Raises:
        TypeError: a value is a runtime object (a tensor, module, function, ...) that YAML cannot
            hold; the message names its key.
    """
    yaml = _yaml()
    plain = _check_plain(to_container(cfg, resolve_interpolations=False), "")
    return atomic_write_text(path, yaml.safe_dump(plain, sort_keys=False, default_flow_style=False))


def load_config(path: str | os.PathLike, *, trust_config: bool = False) -> ConfigNode:
    """Read a YAML config written by :func:`save_config` (with the safe loader: no Python tags).

    A YAML file is data: every ``__target__`` in it must be registered as config-buildable
    (:mod:`vit5.config.registry`; ``nvsubquadratic.*`` targets are mapped to vit5's classes), checked
    before anything is imported.

    Args:
        path: The YAML file.
        trust_config: Skip the target check (for a file you wrote yourself).

    Raises:
        ValueError: the file is not YAML or not a mapping; a ``ConfigTargetError`` (a
            ``ValueError``) names a target outside the registry.
    """
    yaml = _yaml()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not a valid vit5 YAML config ({error})") from error
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{path}: a config file must hold a mapping at the top level, got {type(data).__name__}"
        )
    return ConfigNode(check_config_targets(data, str(path), trust_config=trust_config))


def parse_value(text: str) -> Any:
    """Parse an override value: numbers, booleans, ``none``/``null``, lists/dicts, or a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null", "~"):
        return None
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def apply_overrides(cfg: Mapping, overrides: list[str] | tuple[str, ...]) -> ConfigNode:
    """Return a copy of ``cfg`` with ``"a.b.c=value"`` overrides applied.

    A key may be set if it exists in the tree, or if its node is a recorded call whose target
    accepts that keyword (so ``model.dropout_rate=0.1`` works when the default was used).

    Raises:
        ValueError: an override is not ``key=value``, or its key does not exist (the message lists
            the keys available at that level).
    """
    out = copy.deepcopy(cfg) if isinstance(cfg, ConfigNode) else ConfigNode(cfg)
    out._parent = None
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"override {item!r} must have the form key.path=value")
        dotted, text = item.split("=", 1)
        set_value(out, dotted.strip(), parse_value(text), f"override {item!r}")
    return out


def set_value(cfg: Mapping, dotted: str, value: Any, context: str | None = None) -> None:
    """Set ``cfg[a][b][c] = value`` for ``dotted = "a.b.c"``, in place, with the checks of
    :func:`apply_overrides` (the key must exist, or be a keyword its recorded call accepts).

    Raises:
        ValueError: the path does not exist; the message starts with ``context`` (default: the key).
    """
    context = context or f"key {dotted!r}"
    parts = dotted.split(".")
    if not all(parts):
        raise ValueError(f"{context}: empty key in {dotted!r}")
    node: Any = cfg
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node, Mapping) or part not in node:
            where = ".".join(parts[:depth]) or "<root>"
            keys = sorted(node) if isinstance(node, Mapping) else []
            raise ValueError(f"{context}: {where} has no section {part!r}; available: {keys}")
        if not isinstance(node[part], Mapping):
            where = ".".join(parts[: depth + 1])
            raise ValueError(
                f"{context}: {where} is {type(node[part]).__name__} {node[part]!r:.60}, not a section with keys"
            )
        node = node[part]
    key = parts[-1]
    if key not in node:
        target = _target_of(node)
        accepted = _accepted_keywords(target) if target is not None else frozenset()
        if accepted is None or key not in accepted:
            where = ".".join(parts[:-1]) or "<root>"
            options = sorted(set(node) | set(accepted or ())) if accepted is not None else sorted(node)
            options = [option for option in options if option != TARGET_KEY]
            raise ValueError(f"{context}: {where} has no key {key!r}; available: {options}")
    node[key] = value
