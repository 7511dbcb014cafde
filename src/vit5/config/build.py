"""Building objects from configs: ``instantiate`` and arithmetic strings."""

from __future__ import annotations

import ast
import inspect
import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch.nn as nn

from vit5.config.node import (
    PLACEHOLDER,
    TARGET_KEY,
    ConfigNode,
    LazyConfig,
    _is_foreign_config,
    locate,
    target_path,
)
from vit5.config.resolve import resolve

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
