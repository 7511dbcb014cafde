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
from vit5.config.yaml_file import MAX_YAML_BYTES, dump_yaml, read_yaml, to_tagged

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


def save_config(cfg: Mapping, path: str | os.PathLike) -> Path:
    """Write ``cfg`` to a YAML file (atomically: a temporary file, fsync, then rename).

    Interpolations are kept as written, so the saved file round-trips through :func:`load_config`.

    Functions registered as config targets, and ``functools.partial`` of them (as nvSubquadratic's
    configs hold), are written as nvSubquadratic writes them (``!!python/name:X ''`` and
    ``!!python/object/apply:functools.partial``); see :mod:`vit5.config.yaml_file`.

    Raises:
        TypeError: a value is a runtime object (a tensor, module, unregistered function, ...) that
            YAML cannot hold; the message names its key.
    """
    tagged = to_tagged(to_container(cfg, resolve_interpolations=False), "")
    return atomic_write_text(path, dump_yaml(tagged))


def load_config(path: str | os.PathLike, *, trust_config: bool = False) -> ConfigNode:
    """Read a YAML config written by :func:`save_config` or by nvSubquadratic.

    The file is read with PyYAML's safe loader, bounded (size, depth, nodes with aliases expanded),
    and its ``!!python/name:X`` and ``!!python/object/apply:functools.partial`` tags become recorded
    calls of registered objects, never imports (:mod:`vit5.config.yaml_file`). A YAML file is data: every ``__target__`` in it must be registered as config-buildable
    (:mod:`vit5.config.registry`; ``nvsubquadratic.*`` targets are mapped to vit5's classes), checked
    before anything is imported.

    Args:
        path: The YAML file.
        trust_config: Skip the target check (for a file you wrote yourself).

    Raises:
        ValueError: the file is not YAML, not a mapping, over a bound, or holds a refused tag; a
            ``ConfigTargetError`` (a ``ValueError``) names a target outside the registry.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        raw = handle.read(MAX_YAML_BYTES + 1)
    if len(raw) > MAX_YAML_BYTES:
        raise ValueError(f"{path}: YAML file larger than {MAX_YAML_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a valid vit5 YAML config (not UTF-8 text: {error.reason})") from None
    data = read_yaml(text, str(path))
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
