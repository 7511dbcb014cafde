"""``${...}`` interpolation over a config tree."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from vit5.config.node import ConfigNode, _adopt, _from_foreign, _is_foreign_config

# --------------------------------------------------------------------------------------------------
# Interpolation

_INTERPOLATION = re.compile(r"\$\{([^${}]*)\}")


def _root_of(node: ConfigNode) -> ConfigNode:
    while node._parent is not None:
        node = node._parent
    return node


def _lookup(root: Any, here: ConfigNode | None, path: str, trail: tuple[str, ...]) -> Any:
    path = path.strip()
    if path.startswith("."):
        # Relative: one leading dot is the containing node, each further dot goes one level up.
        node = here
        stripped = path.lstrip(".")
        for _ in range(len(path) - len(stripped) - 1):
            node = node._parent if node is not None else None
        path, value = stripped, node
    else:
        value = root
    if value is None:
        raise KeyError(f"interpolation ${{{path}}} goes above the root of the config")
    for part in filter(None, path.split(".")):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif (
            isinstance(value, (list, tuple))
            and part.lstrip("-").isdigit()
            and -len(value) <= int(part) < len(value)
        ):
            value = value[int(part)]
        else:
            raise KeyError(
                f"interpolation ${{{path}}}: no key {part!r} (while resolving {' -> '.join(trail)})"
            )
    return value


def _resolve_value(value: Any, root: Any, here: ConfigNode | None, trail: tuple[str, ...]) -> Any:
    if isinstance(value, ConfigNode):
        out = ConfigNode()
        for key, item in value.items():
            resolved = _resolve_value(item, root, value, (*trail, str(key)))
            dict.__setitem__(out, key, _adopt(resolved, out, copy_nodes=False))
        return out
    if isinstance(value, Mapping):
        return {key: _resolve_value(item, root, here, (*trail, str(key))) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve_value(item, root, here, trail) for item in value]
    if isinstance(value, tuple):
        return tuple(_resolve_value(item, root, here, trail) for item in value)
    if not isinstance(value, str) or "${" not in value:
        return value
    if len(trail) > 64:
        raise ValueError(f"interpolation cycle while resolving {' -> '.join(trail[:8])} ...")
    whole = _INTERPOLATION.fullmatch(value)
    if whole:
        target = _lookup(root, here, whole.group(1), trail)
        return _resolve_value(target, root, here, (*trail, value))

    def substitute(match: re.Match) -> str:
        target = _resolve_value(_lookup(root, here, match.group(1), trail), root, here, (*trail, value))
        return str(target)

    return _INTERPOLATION.sub(substitute, value)


def resolve(cfg: Any) -> Any:
    """A copy of ``cfg`` with every ``${...}`` interpolation replaced by the value it names.

    Paths are absolute from the root of the tree ``cfg`` belongs to (``${model.hidden_dim}``), or
    relative with leading dots (``${.hidden_dim}`` is a sibling key). A string that is exactly one
    interpolation takes the referenced value with its type; otherwise the value is formatted in.

    Raises:
        KeyError: an interpolation names a key that does not exist.
    """
    if isinstance(cfg, ConfigNode):
        resolved = _resolve_value(cfg, _root_of(cfg), cfg, ())
        resolved._parent = None
        return resolved
    if _is_foreign_config(cfg):
        return _from_foreign(cfg)
    if isinstance(cfg, Mapping):
        node = ConfigNode(cfg)
        return _resolve_value(node, node, node, ())
    return cfg
