"""``${...}`` interpolation over a config tree, with the ``${eval:EXPR}`` resolver.

Resolution is memoised (each referenced entry is resolved once per :func:`resolve` call) and
bounded: a chain of references deeper than :data:`MAX_INTERPOLATION_DEPTH`, a resolved string longer
than :data:`MAX_STRING_LENGTH` characters, or a resolved tree of more than :data:`MAX_RESOLVED_NODES`
values (a "doubling chain" ``a1: [${a0}, ${a0}]``, ``a2: [${a1}, ${a1}]``, ...) is a one-line
``ValueError`` raised before the memory is spent.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from vit5.config.arithmetic import safe_arithmetic
from vit5.config.node import ConfigNode, _adopt, _from_foreign, _is_foreign_config

__all__ = ["MAX_INTERPOLATION_DEPTH", "MAX_RESOLVED_NODES", "MAX_STRING_LENGTH", "resolve"]

MAX_INTERPOLATION_DEPTH = 64
MAX_RESOLVED_NODES = 100_000
MAX_STRING_LENGTH = 1_000_000

_RESOLVER = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*:")


def _root_of(node: ConfigNode) -> ConfigNode:
    while node._parent is not None:
        node = node._parent
    return node


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


class _Resolver:
    """One resolution pass over a tree: the memo, the reference chain and the size budget."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.memo: dict[tuple[int, Any], tuple[Any, int]] = {}
        self.active: list[tuple[int, Any]] = []
        self.nodes = 0

    def _spend(self, count: int, where: str) -> None:
        self.nodes += count
        if self.nodes > MAX_RESOLVED_NODES:
            raise ValueError(
                f"{where or '<root>'}: interpolations expand the config past {MAX_RESOLVED_NODES} values "
                "(a chain of references that doubles at each step?)"
            )

    # ----------------------------------------------------------------------------------------------
    # Values

    def value(self, value: Any, here: ConfigNode | None, where: str) -> tuple[Any, int]:
        """``value`` with every interpolation resolved, and the number of values it holds."""
        if isinstance(value, ConfigNode):
            out = ConfigNode()
            size = 1
            for key, item in value.items():
                resolved, count = self.entry(value, key, item, value, f"{where}.{key}" if where else str(key))
                size += count
                dict.__setitem__(out, key, _adopt(resolved, out, copy_nodes=False))
            self._spend(1, where)
            return out, size
        if isinstance(value, Mapping):
            out_map, size = {}, 1
            for key, item in value.items():
                out_map[key], count = self.value(item, here, f"{where}.{key}" if where else str(key))
                size += count
            self._spend(1, where)
            return out_map, size
        if isinstance(value, (list, tuple)):
            items, size = [], 1
            for index, item in enumerate(value):
                resolved, count = self.entry(value, index, item, here, f"{where}[{index}]")
                items.append(resolved)
                size += count
            self._spend(1, where)
            return (tuple(items) if isinstance(value, tuple) else items), size
        self._spend(1, where)
        if isinstance(value, str) and "${" in value:
            return self.interpolate(value, here, where)
        return value, 1

    def entry(
        self, container: Any, key: Any, item: Any, here: ConfigNode | None, where: str
    ) -> tuple[Any, int]:
        """The resolved ``container[key]`` (``item``), memoised: a second use gets a copy."""
        memo_key = (id(container), key)
        if memo_key in self.memo:
            resolved, size = self.memo[memo_key]
            if isinstance(resolved, (Mapping, list, tuple)):
                self._spend(size, where)
                resolved = copy.deepcopy(resolved)
                if isinstance(resolved, ConfigNode):
                    resolved._parent = None
            return resolved, size
        if memo_key in self.active:
            raise ValueError(f"interpolation cycle while resolving {where}")
        if len(self.active) >= MAX_INTERPOLATION_DEPTH:
            raise ValueError(
                f"{where}: interpolations nested deeper than {MAX_INTERPOLATION_DEPTH} references "
                "(an interpolation cycle?)"
            )
        self.active.append(memo_key)
        try:
            resolved = self.value(item, here, where)
        finally:
            self.active.pop()
        self.memo[memo_key] = resolved
        return resolved

    # ----------------------------------------------------------------------------------------------
    # Strings

    def interpolate(self, text: str, here: ConfigNode | None, where: str) -> tuple[Any, int]:
        """The value of a string holding ``${...}``, and the number of values it holds."""
        pieces, _ = self._scan(text, 0, here, where, inside=False)
        if len(pieces) == 1 and isinstance(pieces[0], _Value):
            return pieces[0].value, pieces[0].size  # exactly one interpolation: the value keeps its type
        joined = "".join(str(piece) for piece in pieces)
        if len(joined) > MAX_STRING_LENGTH:
            raise ValueError(f"{where}: interpolated string longer than {MAX_STRING_LENGTH} characters")
        return joined, 1

    def _scan(
        self, text: str, start: int, here: ConfigNode | None, where: str, inside: bool
    ) -> tuple[list, int]:
        """Pieces of ``text`` from ``start``: literal text and resolved ``${...}`` values.

        ``inside``: scanning the body of an interpolation, which ends at its closing ``}``
        (quotes protect ``}``; nested ``${...}`` are resolved first, also within quotes).
        Returns the pieces and the index after the closing ``}`` (or ``len(text)``).
        """
        pieces: list[Any] = []
        literal: list[str] = []
        quote = ""
        index = start
        while index < len(text):
            char = text[index]
            if text.startswith("${", index):
                body, end = self._scan(text, index + 2, here, where, inside=True)
                if end < 0:  # never closed: the rest is literal text
                    literal.append(text[index:])
                    index = len(text)
                    break
                if literal:
                    pieces.append("".join(literal))
                    literal = []
                pieces.append(_Value(*self._body("".join(str(piece) for piece in body), here, where)))
                index = end
                continue
            if inside:
                if quote:
                    if char == quote:
                        quote = ""
                elif char in "'\"":
                    quote = char
                elif char == "}":
                    if literal:
                        pieces.append("".join(literal))
                    return pieces, index + 1
            literal.append(char)
            index += 1
        if inside:
            return pieces, -1
        if literal:
            pieces.append("".join(literal))
        return pieces, index

    def _body(self, body: str, here: ConfigNode | None, where: str) -> tuple[Any, int]:
        """The value of ``${body}`` (``body`` with its inner interpolations already substituted)."""
        resolver = _RESOLVER.match(body)
        if resolver:
            name = resolver.group(1)
            if name != "eval":
                raise ValueError(
                    f"{where}: interpolation ${{{body}}} uses the resolver {name!r}; vit5 supports only eval:"
                )
            return safe_arithmetic(_unquote(body[resolver.end() :]), where or "<root>"), 1
        container, key, here_of_target = self._lookup(body, here, where)
        if container is None:
            return self.value(key, here_of_target, body.strip())  # the root itself
        return self.entry(container, key, container[key], here_of_target, body.strip())

    def _lookup(self, path: str, here: ConfigNode | None, where: str) -> tuple[Any, Any, ConfigNode | None]:
        """The container, key and enclosing node of the entry ``path`` names."""
        path = path.strip()
        if path.startswith("."):
            # Relative: one leading dot is the containing node, each further dot goes one level up.
            node = here
            stripped = path.lstrip(".")
            for _ in range(len(path) - len(stripped) - 1):
                node = node._parent if node is not None else None
            path, value = stripped, node
        else:
            value = self.root
        if value is None:
            raise KeyError(f"interpolation ${{{path}}} goes above the root of the config (at {where})")
        container, key, enclosing = None, value, value if isinstance(value, ConfigNode) else here
        for part in filter(None, path.split(".")):
            if isinstance(value, Mapping) and part in value:
                container, key = value, part
            elif (
                isinstance(value, (list, tuple))
                and part.lstrip("-").isdigit()
                and -len(value) <= int(part) < len(value)
            ):
                container, key = value, int(part) % len(value)
            else:
                raise KeyError(
                    f"interpolation ${{{path}}}: no key {part!r} (while resolving {where or '<root>'})"
                )
            if isinstance(value, ConfigNode):
                enclosing = value
            value = container[key]
        return container, key, enclosing


class _Value:
    """A resolved ``${...}`` among the pieces of a string, with the number of values it holds."""

    __slots__ = ("size", "value")

    def __init__(self, value: Any, size: int) -> None:
        self.value, self.size = value, size

    def __str__(self) -> str:
        return str(self.value)


def resolve(cfg: Any) -> Any:
    """A copy of ``cfg`` with every ``${...}`` interpolation replaced by the value it names.

    Paths are absolute from the root of the tree ``cfg`` belongs to (``${model.hidden_dim}``), or
    relative with leading dots (``${.hidden_dim}`` is a sibling key). A string that is exactly one
    interpolation takes the referenced value with its type; otherwise the value is formatted in.
    ``${eval:EXPR}`` evaluates ``EXPR`` (after its own interpolations, e.g.
    ``${eval:'${net.image_size} // ${net.patch_size}'}``) with :func:`~vit5.config.arithmetic.safe_arithmetic`.

    Raises:
        KeyError: an interpolation names a key that does not exist.
        ValueError: a cycle, a chain or expansion over the limits of this module, an ``eval:``
            expression that is refused, or another resolver than ``eval``; one line naming the key.
    """
    if isinstance(cfg, ConfigNode):
        resolved, _ = _Resolver(_root_of(cfg)).value(cfg, cfg, "")
        resolved._parent = None
        return resolved
    if _is_foreign_config(cfg):
        return _from_foreign(cfg)
    if isinstance(cfg, Mapping):
        node = ConfigNode(cfg)
        return _Resolver(node).value(node, node, "")[0]
    return cfg
