"""A small, safe arithmetic evaluator for ``${eval:EXPR}`` interpolations.

nvSubquadratic's experiment scripts register Python's ``eval`` as the ``eval`` resolver; vit5 reads
configs that other people wrote, so ``EXPR`` is evaluated here by walking its syntax tree with a
whitelist, never by ``eval``:

* numbers (``int`` and ``float`` literals; no ``bool``, string or complex);
* ``+ - * / // % **``, parentheses, unary ``+`` and ``-``;
* the calls ``min(a, b, ...)``, ``max(a, b, ...)``, ``int(x)``, ``round(x)``, ``round(x, n)``
  (positional arguments only).

Results follow Python's semantics (``224 / 16`` is ``14.0``, ``224 // 16`` is ``14``). Refused with
a one-line ``ValueError``: anything else (names, attribute access, other calls, subscripts,
comprehensions, lambdas, ...), an exponent above 64 in magnitude, any value (literal, intermediate
or result) above 2**63 in magnitude or not finite, division by zero, and expressions longer than
:data:`MAX_EXPRESSION_LENGTH` characters or nested deeper than :data:`MAX_DEPTH`. Every check runs
before the operation it guards, so hostile input is refused in microseconds.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

__all__ = ["MAX_DEPTH", "MAX_EXPONENT", "MAX_EXPRESSION_LENGTH", "MAX_MAGNITUDE", "safe_arithmetic"]

MAX_EXPONENT = 64
MAX_MAGNITUDE = 2**63
MAX_EXPRESSION_LENGTH = 1000
MAX_DEPTH = 50

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class _Refused(Exception):
    """Internal: the reason an expression is refused (turned into one ValueError line)."""


def _checked(value: int | float) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise _Refused(f"value {value} is not finite")
    if abs(value) > MAX_MAGNITUDE:
        raise _Refused("a value exceeds 2**63 in magnitude")
    return value


def _integral(value: int | float, what: str) -> int:
    if isinstance(value, float):
        if not value.is_integer():
            raise _Refused(f"{what} must be a whole number, got {value}")
        return int(value)
    return value


def _call(name: str, arguments: list[int | float]) -> int | float:
    if name in ("min", "max"):
        if len(arguments) < 2:
            raise _Refused(f"{name}() needs at least two numbers")
        return min(arguments) if name == "min" else max(arguments)
    if name == "int":
        if len(arguments) != 1:
            raise _Refused("int() takes one number")
        return int(arguments[0])
    if name == "round":
        if len(arguments) not in (1, 2):
            raise _Refused("round() takes one number and optionally the number of digits")
        if len(arguments) == 1:
            return round(arguments[0])
        digits = _integral(arguments[1], "round()'s number of digits")
        if abs(digits) > MAX_EXPONENT:
            raise _Refused(f"round()'s number of digits {digits} exceeds {MAX_EXPONENT} in magnitude")
        return round(arguments[0], digits)
    raise _Refused(f"call of {name!r} is not allowed (only min, max, int, round)")


def _evaluate(node: ast.AST, depth: int) -> int | float:
    if depth > MAX_DEPTH:
        raise _Refused(f"nested deeper than {MAX_DEPTH}")
    if isinstance(node, ast.Constant):
        if type(node.value) not in (int, float):
            raise _Refused(f"{node.value!r} is not a number")
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_evaluate(node.operand, depth + 1)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _evaluate(node.left, depth + 1)
        right = _evaluate(node.right, depth + 1)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise _Refused(f"exponent {right} exceeds {MAX_EXPONENT}")
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise _Refused("division by zero")
        if isinstance(node.op, ast.Pow) and left == 0 and right < 0:
            raise _Refused("zero to a negative power")
        if isinstance(node.op, ast.Pow) and left < 0 and not float(right).is_integer():
            raise _Refused("a negative number to a fractional power")
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.keywords:
            raise _Refused("only min(), max(), int(), round() with positional arguments may be called")
        if node.func.id not in ("min", "max", "int", "round"):
            raise _Refused(f"call of {node.func.id!r} is not allowed (only min, max, int, round)")
        if any(isinstance(argument, ast.Starred) for argument in node.args):
            raise _Refused("starred arguments are not allowed")
        return _checked(_call(node.func.id, [_evaluate(argument, depth + 1) for argument in node.args]))
    if isinstance(node, ast.Name):
        raise _Refused(f"name {node.id!r} is not allowed (only numbers, operators, min, max, int, round)")
    if isinstance(node, ast.Attribute):
        raise _Refused("attribute access is not allowed")
    raise _Refused(
        f"{type(node).__name__} is not allowed (only numbers, + - * / // % **, parentheses, calls)"
    )


def safe_arithmetic(expression: str, where: str = "the config") -> int | float:
    """Evaluate ``expression`` with the whitelist described in this module.

    Args:
        expression: The text after ``eval:`` (quotes already removed), e.g. ``"224 // 16"``.
        where: What the expression belongs to (a config key), for the error message.

    Returns:
        The number, with Python's types (``int`` or ``float``).

    Raises:
        ValueError: one line naming ``where``, the expression and why it is refused.
    """
    shown = expression if len(expression) <= 80 else expression[:77] + "..."
    try:
        if not isinstance(expression, str):
            raise _Refused(f"expected a string, got {type(expression).__name__}")
        if len(expression) > MAX_EXPRESSION_LENGTH:
            raise _Refused(f"longer than {MAX_EXPRESSION_LENGTH} characters")
        if expression.count("(") > MAX_DEPTH:
            raise _Refused(f"more than {MAX_DEPTH} parentheses")
        try:
            tree = ast.parse(expression.strip(), mode="eval")
        except SyntaxError:
            raise _Refused("not a valid arithmetic expression") from None
        return _evaluate(tree.body, 0)
    except (_Refused, ArithmeticError, RecursionError, MemoryError) as error:
        reason = str(error) if isinstance(error, _Refused) else type(error).__name__
        raise ValueError(
            f"{where}: cannot evaluate ${{eval:{shown!r}}}: {reason}".replace("\n", " ")
        ) from None
