"""``${eval:EXPR}`` and bounded, memoised interpolation (issues 29 and 30)."""

from __future__ import annotations

import time

import pytest

from vit5 import LazyConfig, RMSNorm, instantiate
from vit5.config import ConfigNode, resolve
from vit5.config.arithmetic import safe_arithmetic


@pytest.mark.parametrize(
    ("expression", "expected"),
    [("224 // 16", 14), ("224 / 16", 14.0), ("7 % 4", 3), ("2 ** 10", 1024), ("-(3 - 5)", 2), ("+4", 4),
     ("min(3, 1, 2)", 1), ("max(2.5, 1)", 2.5), ("int(7 / 2)", 3), ("round(2.6)", 3), ("round(1.234, 2)", 1.23),
     ("(1 + 2) * 3", 9), ("2 ** -1", 0.5), ("2 ** 63", 2**63), ("1e3", 1000.0), ("3 - 2 * 4", -5)],
)  # fmt: skip
def test_arithmetic_follows_python(expression, expected):
    value = safe_arithmetic(expression)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [("__import__('os').system('true')", "may be called"), ("__import__('os')", "call of '__import__'"), ("(1).real", "attribute access"),
     ("().__class__.__bases__", "attribute access"), ("open('x')", "call of 'open'"), ("x", "name 'x'"),
     ("9 ** 9 ** 9 ** 9", "exponent"), ("2 ** 65", "exponent"), ("2 ** 64", "2\\*\\*63"),
     ("10 ** 18 * 10 ** 18", "2\\*\\*63"), ("99999999999999999999", "2\\*\\*63"), ("1e308 * 10", "not finite|2\\*\\*63"),
     ("1 / 0", "division by zero"), ("5 % 0", "division by zero"), ("0 ** -1", "zero to a negative"),
     ("'a' * 3", "not a number"), ("True + 1", "not a number"), ("[x for x in (1,)]", "ListComp"),
     ("lambda: 1", "Lambda"), ("min(1)", "at least two"), ("max(*(1, 2))", "starred"),
     ("round(1, n=2)", "positional"), ("round(1, 100)", "digits"), ("(" * 60 + "1" + ")" * 60, "parentheses"),
     ("-" * 200 + "1", "deeper"), ("1 +" * 400 + "1", "longer|deeper"), ("1 +", "not a valid"), ("1 < 2", "Compare")],
)  # fmt: skip
def test_hostile_or_invalid_expressions_are_refused_quickly(expression, reason):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=reason) as error:
        safe_arithmetic(expression, "net.depth")
    assert time.perf_counter() - start < 0.5
    message = str(error.value)
    assert message.startswith("net.depth: cannot evaluate ${eval:") and "\n" not in message


def test_eval_interpolation_after_inner_references():
    net = LazyConfig(RMSNorm)(dim="${eval:'${image_size} // ${patch_size}'}")
    tree = ConfigNode(
        image_size=384,
        patch_size=16,
        net=net,
        ratio="${eval:'${image_size} / ${patch_size}'}",
        text="grid-${eval:'${image_size} // ${patch_size}'}x",
        relative='${eval:"max(${.patch_size}, 2 ** 5)"}',
        bare="${eval:4*4}",
    )
    resolved = resolve(tree)
    assert resolved.net.dim == 24 and type(resolved.net.dim) is int
    assert resolved.ratio == 24.0 and type(resolved.ratio) is float
    assert resolved.text == "grid-24x" and resolved.relative == 32 and resolved.bare == 16
    assert instantiate(tree.net).weight.shape == (24,)  # a sub-tree resolves against its root


def test_eval_errors_name_the_key_and_expression():
    with pytest.raises(ValueError, match=r"^model\.depth: cannot evaluate \$\{eval:'8 \*\* 99'\}: exponent"):
        resolve(ConfigNode(model={"depth": "${eval:'8 ** 99'}"}))
    with pytest.raises(ValueError, match=r"^a: interpolation \$\{oc\.env:HOME\} uses the resolver 'oc\.env'"):
        resolve(ConfigNode(a="${oc.env:HOME}"))


def test_doubling_chains_are_refused_before_memory_is_spent():
    strings, lists = {"a0": "xy"}, {"a0": [1]}
    for index in range(1, 64):
        strings[f"a{index}"] = f"${{a{index - 1}}}${{a{index - 1}}}"
        lists[f"a{index}"] = [f"${{a{index - 1}}}", f"${{a{index - 1}}}"]
    start = time.perf_counter()
    with pytest.raises(ValueError, match="longer than"):
        resolve(ConfigNode(strings))
    with pytest.raises(ValueError, match="expand the config past"):
        resolve(ConfigNode(lists))
    assert time.perf_counter() - start < 10


def test_references_are_memoised_and_chains_bounded():
    chain = {"a0": 1, **{f"a{index}": f"${{a{index - 1}}}" for index in range(1, 300)}}
    assert resolve(ConfigNode(chain)).a299 == 1  # resolved in order: each entry once
    reverse = {"a300": 1, **{f"a{index}": f"${{a{index + 1}}}" for index in range(300)}}
    with pytest.raises(ValueError, match="deeper than 64"):
        resolve(ConfigNode(reverse))
    with pytest.raises(ValueError, match="cycle"):
        resolve(ConfigNode(a="${b}", b="${c}", c="${a}"))


def test_a_shared_subtree_is_copied_per_use():
    tree = resolve(ConfigNode(base={"dim": 4}, one="${base}", two="${base}"))
    tree.one.dim = 5
    assert tree.two.dim == 4 and tree.base.dim == 4
    assert (
        "${" not in str(resolve(ConfigNode(a="unclosed ${b", b=1)).a[:0])
        and resolve(ConfigNode(a="x ${b")).a == "x ${b"
    )
