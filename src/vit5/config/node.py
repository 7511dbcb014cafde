"""Config-tree nodes and recording calls: ``ConfigNode``, ``LazyConfig``, ``PLACEHOLDER``."""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

TARGET_KEY = "__target__"


class _Placeholder:
    """A falsy singleton marking a nested config as "do not build yet"."""

    _instance: _Placeholder | None = None

    def __new__(cls) -> _Placeholder:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "PLACEHOLDER"

    def __copy__(self) -> _Placeholder:
        return self

    def __deepcopy__(self, memo: dict) -> _Placeholder:
        return self

    def __reduce__(self) -> str:
        return "PLACEHOLDER"


PLACEHOLDER = _Placeholder()


# --------------------------------------------------------------------------------------------------
# Targets


def target_path(target: Any) -> str:
    """Dotted import path of a class or function (``module.QualName``)."""
    module = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if not module or not name:
        raise ValueError(
            f"LazyConfig target must be a class or function with __module__ and __name__, got {target!r}"
        )
    if "<locals>" in name:
        raise ValueError(
            f"LazyConfig target {name!r} is defined inside a function and cannot be imported by name; "
            "define it at module level"
        )
    return f"{module}.{name}"


@lru_cache(maxsize=512)
def locate(path: str) -> Any:
    """Import the object named by a dotted path (``package.module.Class.attr``)."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"__target__ must be a non-empty dotted import path, got {path!r}")
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ImportError as error:
            # Only swallow "this prefix is not a module"; a real import failure inside it is a bug.
            if getattr(error, "name", None) and not module_name.startswith(str(error.name)):
                raise
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ValueError(f"cannot import __target__ {path!r}: no such module or attribute")


@lru_cache(maxsize=512)
def _accepted_keywords(target: Any) -> frozenset[str] | None:
    """Keyword names ``target`` accepts, or ``None`` if it takes ``**kwargs`` or has no signature."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    names = set()
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.add(parameter.name)
    return frozenset(names)


def _check_keywords(target: Any, keys: list[str], path: str) -> None:
    accepted = _accepted_keywords(target)
    if accepted is None:
        return
    unknown = [key for key in keys if key not in accepted]
    if unknown:
        raise TypeError(
            f"{path} does not accept keyword(s) {', '.join(map(repr, unknown))}; "
            f"accepted keywords are: {', '.join(sorted(accepted)) or '(none)'}"
        )


def _target_of(node: Mapping) -> Any | None:
    """The imported target of a recorded call, or ``None`` if it cannot be imported."""
    path = node.get(TARGET_KEY)
    if isinstance(path, str):
        try:
            return locate(path)
        except (ImportError, ValueError):
            return None
    return path if callable(path) else None


# --------------------------------------------------------------------------------------------------
# Nodes


class ConfigNode(dict):
    """A config-tree node: a ``dict`` whose keys can also be read and set as attributes.

    Setting a key on a recorded call checks the name against the target's signature.
    """

    __slots__ = ("_parent",)

    def __init__(self, items: Mapping | None = None, **kwargs: Any) -> None:
        super().__init__()
        self._parent: ConfigNode | None = None
        for key, value in {**(items or {}), **kwargs}.items():
            self._store(key, value)

    def _store(self, key: Any, value: Any) -> None:
        super().__setitem__(key, _adopt(value, self))

    def __setitem__(self, key: Any, value: Any) -> None:
        if TARGET_KEY in self and key != TARGET_KEY:
            target = _target_of(self)
            if target is not None:
                _check_keywords(target, [key], f"config for {self[TARGET_KEY]}")
        self._store(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: Any, default: Any = None) -> Any:  # type: ignore[override]
        if key not in self:
            self[key] = default
        return self[key]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}; keys: {list(self.keys())}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_parent":
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __copy__(self) -> ConfigNode:
        node = ConfigNode()
        for key, value in self.items():
            dict.__setitem__(node, key, value)
        node._parent = self._parent
        return node

    def __deepcopy__(self, memo: dict) -> ConfigNode:
        node = ConfigNode()
        memo[id(self)] = node
        for key, value in self.items():
            dict.__setitem__(node, key, _adopt(copy.deepcopy(value, memo), node, copy_nodes=False))
        # The parent link is kept (not copied): a copied sub-tree still resolves ``${...}``
        # against the tree it came from.
        node._parent = self._parent
        return node

    def __reduce__(self) -> tuple:
        return (ConfigNode, (dict(self),))

    def __repr__(self) -> str:
        return f"ConfigNode({dict.__repr__(self)})"


def _adopt(value: Any, parent: ConfigNode, copy_nodes: bool = True) -> Any:
    """Make ``value`` a child of ``parent``: plain mappings become nodes, nodes get a parent link."""
    if isinstance(value, ConfigNode):
        if copy_nodes:
            value = copy.deepcopy(value)
        value._parent = parent
        return value
    if _is_foreign_config(value):
        value = _from_foreign(value)
        if isinstance(value, ConfigNode):
            value._parent = parent
        return value
    if isinstance(value, Mapping):
        node = ConfigNode(value)
        node._parent = parent
        return node
    if isinstance(value, list):
        return [_adopt(item, parent, copy_nodes) for item in value]
    if isinstance(value, tuple):
        return tuple(_adopt(item, parent, copy_nodes) for item in value)
    return value


def _is_foreign_config(value: Any) -> bool:
    """An OmegaConf container (e.g. a config written for the reference library)."""
    return type(value).__module__.startswith("omegaconf")


def _from_foreign(value: Any) -> Any:
    from omegaconf import OmegaConf  # only reachable when the value already is an OmegaConf object

    try:
        return _adopt_root(OmegaConf.to_container(value, resolve=True))
    except Exception:  # noqa: BLE001 - e.g. ${eval:...} without an OmegaConf resolver: vit5 resolves it later
        return _adopt_root(OmegaConf.to_container(value, resolve=False))


def _adopt_root(value: Any) -> Any:
    if isinstance(value, Mapping):
        return ConfigNode(value)
    if isinstance(value, list):
        return [_adopt_root(item) for item in value]
    return value


# --------------------------------------------------------------------------------------------------
# Recording calls


class LazyConfig:
    """Record a call to ``target`` instead of making it.

    ``LazyConfig(ViT5Attention)(hidden_dim=384, num_heads=6, ...)`` returns a :class:`ConfigNode`
    ``{"__target__": "vit5.modules.attention.ViT5Attention", "hidden_dim": 384, ...}``. Keyword names
    are checked against the target's signature here; positional arguments are bound to their names.

    Args:
        target: A class or function importable by its dotted path, or that dotted path as a string.
    """

    def __init__(self, target: Callable[..., Any] | str) -> None:
        if isinstance(target, str):
            self.path = target
            self.target = locate(target)
        else:
            self.path = target_path(target)
            self.target = target

    def __call__(self, *args: Any, **kwargs: Any) -> ConfigNode:
        if args:
            try:
                bound = inspect.signature(self.target).bind_partial(*args)
            except (TypeError, ValueError) as error:
                raise TypeError(
                    f"LazyConfig({self.path}): cannot bind positional arguments {args!r}: {error}"
                ) from None
            overlap = set(bound.arguments) & set(kwargs)
            if overlap:
                raise TypeError(
                    f"LazyConfig({self.path}): {sorted(overlap)} given both positionally and by keyword"
                )
            kwargs = {**bound.arguments, **kwargs}
        _check_keywords(self.target, list(kwargs), f"LazyConfig({self.path})")
        node = ConfigNode({TARGET_KEY: self.path})
        for key, value in kwargs.items():
            node._store(key, value)
        return node

    def __repr__(self) -> str:
        return f"LazyConfig({self.path})"
