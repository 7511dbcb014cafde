"""Lazy configs: record calls now, build modules later.

A config is a tree of :class:`ConfigNode` (a ``dict`` with attribute access). A node holding the
key ``"__target__"`` (a dotted import path) is a *recorded call*; its other keys are the keyword
arguments. ``LazyConfig(cls)(**kwargs)`` records a call, :func:`instantiate` performs it.

The semantics follow ``nvsubquadratic``'s ``LazyConfig`` so that its config trees build the same
networks here after changing only the imports:

* nested recorded calls of **factory functions** (not ``nn.Module`` classes) are called when the
  enclosing call is instantiated, and their result is passed;
* nested recorded calls of **module classes** are passed *unbuilt* (the receiving ``__init__``
  instantiates them itself, possibly several times), unless ``recursive_instantiate=True``;
* a nested config containing :data:`PLACEHOLDER` anywhere is passed through unbuilt;
* keyword ``overrides`` of :func:`instantiate` are injected at the top level only;
* strings made only of digits and ``+ - * / % ( ) .`` are evaluated as arithmetic ("384*3" -> 1152);
* ``${a.b}`` interpolations refer to other entries of the tree.

Where vit5 differs (on purpose):

* keyword names are checked against the target's signature when the call is *recorded* (and when a
  key is set later), so a misspelled keyword fails immediately with a ``TypeError``;
* interpolations are resolved over the whole tree (from its root) before anything is built;
* :func:`save_config` refuses runtime objects (a ``TypeError`` naming the key) instead of writing
  Python tags that cannot be loaded back; :func:`load_config` returns a tree that builds again;
* :func:`apply_overrides` edits a tree from ``"a.b.c=value"`` strings and rejects unknown keys.

A node keeps a link to its parent so that ``instantiate(root.model.norm)`` still resolves
``${model.hidden_dim}``. Assigning a node into another tree copies it (as OmegaConf does), so a
node has exactly one parent and editing the original later does not change the tree.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import operator
import os
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch.nn as nn

from vit5._io import atomic_write_text

__all__ = [
    "PLACEHOLDER",
    "ConfigNode",
    "LazyConfig",
    "apply_overrides",
    "instantiate",
    "load_config",
    "resolve",
    "save_config",
    "to_container",
]

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

    return _adopt_root(OmegaConf.to_container(value, resolve=True))


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


# --------------------------------------------------------------------------------------------------
# Arithmetic strings

_ARITHMETIC_CHARS = frozenset("0123456789.+-*/()% ")
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _eval_node(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_eval_node(node.left), _eval_node(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval_node(node.operand))
    raise ValueError("not arithmetic")


def eval_arithmetic(text: str) -> Any:
    """Evaluate ``text`` if it is plain arithmetic on numbers; otherwise return it unchanged.

    ``"384*3"`` -> 1152, ``"4/2"`` -> 2, ``"7/2"`` -> 3.5, ``"3"`` -> 3; ``"1e-6"`` and
    ``"gelu"`` stay strings. Integral float results become ints.
    """
    if not text.strip() or not set(text) <= _ARITHMETIC_CHARS:
        return text
    try:
        value = _eval_node(ast.parse(text.strip(), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return text
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _walk_arithmetic(value: Any) -> Any:
    if isinstance(value, str):
        return eval_arithmetic(value)
    if isinstance(value, ConfigNode):
        out = ConfigNode()
        for key, item in value.items():
            dict.__setitem__(out, key, _walk_arithmetic(item))
        out._parent = value._parent
        return out
    if isinstance(value, list):
        return [_walk_arithmetic(item) for item in value]
    return value


# --------------------------------------------------------------------------------------------------
# Building


def _contains_placeholder(value: Any) -> bool:
    if value is PLACEHOLDER:
        return True
    if isinstance(value, Mapping):
        return any(_contains_placeholder(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_contains_placeholder(item) for item in value)
    return False


def _is_module_class(target: Any) -> bool:
    return inspect.isclass(target) and issubclass(target, nn.Module)


def _build_argument(value: Any, recursive: bool) -> Any:
    if isinstance(value, Mapping) and TARGET_KEY in value:
        if _contains_placeholder(value):
            return value
        if _is_module_class(
            locate(value[TARGET_KEY]) if isinstance(value[TARGET_KEY], str) else value[TARGET_KEY]
        ):
            return _call(value, {}, recursive) if recursive else value
        return _call(value, {}, recursive)
    if isinstance(value, list):
        return [_build_argument(item, recursive) for item in value]
    return value


def _call(node: Mapping, overrides: Mapping[str, Any], recursive: bool) -> Any:
    raw_target = node[TARGET_KEY]
    target = locate(raw_target) if isinstance(raw_target, str) else raw_target
    name = raw_target if isinstance(raw_target, str) else target_path(target)
    if not callable(target):
        raise TypeError(f"__target__ {name!r} is not callable")
    arguments = {key: value for key, value in node.items() if key != TARGET_KEY}
    arguments.update(overrides)
    processed = {key: _walk_arithmetic(_build_argument(value, recursive)) for key, value in arguments.items()}
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(**processed)
        except TypeError as error:
            raise TypeError(
                f"Error instantiating {name}: {error}. Target signature: {signature}. "
                f"Given keywords: {sorted(processed)}"
            ) from error
    return target(**processed)


def instantiate(cfg: Any, *, recursive_instantiate: bool = False, **overrides: Any) -> Any:
    """Build the object a config describes.

    Args:
        cfg: A recorded call (``{"__target__": ..., **kwargs}``), a mapping of such calls, an
            uncalled :class:`LazyConfig`, or any other value (returned as is, e.g. ``None`` or an
            already-built module).
        recursive_instantiate: Build nested module configs eagerly instead of passing them
            unbuilt to the receiving constructor.
        **overrides: Keyword arguments injected into the top-level call; they win over stored
            values and are not propagated into nested configs.

    Returns:
        The built object. A mapping without ``__target__`` gives a :class:`ConfigNode` with every
        value instantiated. The input config is never modified; each call builds a new object.

    Raises:
        TypeError: the target does not accept one of the keywords (the message shows its signature).
        ValueError: the ``__target__`` cannot be imported.
        KeyError: an interpolation names a missing key.
    """
    if isinstance(cfg, LazyConfig):
        return _call(LazyConfig(cfg.target)(**overrides), {}, recursive_instantiate)
    if not isinstance(cfg, Mapping) and not _is_foreign_config(cfg):
        return cfg
    node = resolve(cfg)
    if TARGET_KEY not in node:
        return ConfigNode(
            {
                key: instantiate(value, recursive_instantiate=recursive_instantiate)
                for key, value in node.items()
            }
        )
    return _call(node, overrides, recursive_instantiate)


def build_callable(value: Any, name: str) -> Callable[..., Any] | None:
    """Turn an init-method style argument into a callable.

    ``value`` may be ``None``, a callable, or a recorded call of a factory that returns one (the
    form presets use so that their configs can be saved). Anything else is a ``TypeError``.
    """
    if value is None or (callable(value) and not isinstance(value, Mapping)):
        return value
    if isinstance(value, Mapping) and TARGET_KEY in value:
        built = instantiate(value)
        if callable(built):
            return built
        raise TypeError(f"{name}: the config {value[TARGET_KEY]} built {built!r}, which is not callable")
    raise TypeError(f"{name} must be None, a callable, or a LazyConfig of a factory function; got {value!r}")


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


def load_config(path: str | os.PathLike) -> ConfigNode:
    """Read a YAML config written by :func:`save_config` (with the safe loader: no Python tags)."""
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
    return ConfigNode(data)


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
        parts = dotted.strip().split(".")
        if not all(parts):
            raise ValueError(f"override {item!r}: empty key in {dotted!r}")
        node: Any = out
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node, Mapping) or part not in node or not isinstance(node[part], Mapping):
                where = ".".join(parts[:depth]) or "<root>"
                keys = sorted(node) if isinstance(node, Mapping) else []
                raise ValueError(f"override {item!r}: {where} has no section {part!r}; available: {keys}")
            node = node[part]
        key = parts[-1]
        if key not in node:
            target = _target_of(node)
            accepted = _accepted_keywords(target) if target is not None else frozenset()
            if accepted is None or key not in accepted:
                where = ".".join(parts[:-1]) or "<root>"
                options = sorted(set(node) | set(accepted or ())) if accepted is not None else sorted(node)
                options = [option for option in options if option != TARGET_KEY]
                raise ValueError(f"override {item!r}: {where} has no key {key!r}; available: {options}")
        node[key] = parse_value(text)
    return out
