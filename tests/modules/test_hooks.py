"""``fast_path_allowed``: the one test of every inference fast path (autograd, capture, hooks)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_lib

from vit5.modules.hooks import fast_path_allowed, has_hooks
from vit5.modules.mlp import MLP


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(4, 4),
        nn.Sequential(nn.ReLU(), MLP(4, expansion_factor=2.0, activation="gelu", dropout_cfg=None)),
    )


def test_allowed_only_without_autograd() -> None:
    model = _model()
    assert not fast_path_allowed(model)
    with torch.no_grad():
        assert fast_path_allowed(model)
    with torch.inference_mode():
        assert fast_path_allowed(model)


@pytest.mark.parametrize("kind", ["forward", "pre"])
def test_a_hook_anywhere_in_the_subtree_disables_it_until_removed(kind: str) -> None:
    model = _model()
    deep = model[1][1].layer1
    with torch.no_grad():
        assert fast_path_allowed(model) and fast_path_allowed(model[1])  # caches built
        register = deep.register_forward_hook if kind == "forward" else deep.register_forward_pre_hook
        handle = register(lambda *args: None)
        assert not fast_path_allowed(model) and not fast_path_allowed(model[1][1])
        assert fast_path_allowed(model[0])  # a sibling without hooks keeps its fast path
        handle.remove()
        assert fast_path_allowed(model)


def test_a_new_submodule_with_hooks_is_seen() -> None:
    model = _model()
    with torch.no_grad():
        assert fast_path_allowed(model)
        hooked = nn.Identity()
        hooked.register_forward_hook(lambda *args: None)
        model[1][0] = hooked  # structure change: the cached hook list is rebuilt
        assert not fast_path_allowed(model)
        model[1].add_module("0", nn.ReLU())
        assert fast_path_allowed(model)


def test_global_hooks_disable_it() -> None:
    model = _model()
    handle = module_lib.register_module_forward_hook(lambda *args: None)
    try:
        with torch.no_grad():
            assert has_hooks(model) and not fast_path_allowed(model)
    finally:
        handle.remove()
    with torch.no_grad():
        assert fast_path_allowed(model)


def test_no_module_tree_walk_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    with torch.no_grad():
        assert fast_path_allowed(model)

        def walk(*args: object) -> None:
            raise AssertionError("modules() walked on a cached call")

        monkeypatch.setattr(nn.Module, "modules", walk)
        assert fast_path_allowed(model)
        model[1][1].layer2.register_forward_hook(lambda *args: None)
        assert not fast_path_allowed(model)


class _Probe(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (1.0 if fast_path_allowed(self) else 2.0)


def test_disallowed_under_export_and_fx() -> None:
    x = torch.zeros(2)
    with torch.no_grad():
        assert torch.equal(_Probe()(x), x + 1)  # eager
        exported = torch.export.export(_Probe(), (x,))
        traced = torch.fx.symbolic_trace(_Probe())
    assert torch.equal(exported.module()(x), x + 2)
    assert torch.equal(traced(x), x + 2)


def test_disallowed_under_compile() -> None:
    torch._dynamo.reset()
    compiled = torch.compile(_Probe(), backend="eager", fullgraph=True)
    with torch.no_grad():
        assert torch.equal(compiled(torch.zeros(2)), torch.full((2,), 2.0))
