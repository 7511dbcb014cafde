"""LazyConfig / instantiate / overrides / YAML round trips."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from vit5.config import (
    PLACEHOLDER,
    ConfigNode,
    LazyConfig,
    apply_overrides,
    eval_arithmetic,
    instantiate,
    load_config,
    resolve,
    save_config,
)
from vit5.modules.mlp import MLP
from vit5.modules.norms import RMSNorm
from vit5.ops.init import partial_wang_init_fn_with_num_layers, trunc_normal_init_factory


def mlp_cfg(**kw):
    return LazyConfig(MLP)(dim=8, activation="gelu", dropout_cfg=LazyConfig(nn.Dropout)(p=0.0), **kw)


def test_recorded_call_has_dotted_target_and_keys_in_call_order():
    cfg = LazyConfig(nn.Dropout)(p=0.5, inplace=False)
    assert list(cfg) == ["__target__", "p", "inplace"]
    assert cfg["__target__"] == "torch.nn.modules.dropout.Dropout"
    assert cfg.p == 0.5


def test_misspelled_keyword_fails_when_recorded():
    with pytest.raises(TypeError, match="'dimm'.*accepted keywords are: .*dim"):
        LazyConfig(RMSNorm)(dimm=4)


def test_misspelled_keyword_fails_when_set_later():
    cfg = LazyConfig(RMSNorm)(dim=4)
    with pytest.raises(TypeError, match="epsilon"):
        cfg.epsilon = 1e-5
    cfg.eps = 1e-5
    assert instantiate(cfg).eps == 1e-5


def test_positional_arguments_are_bound_to_names():
    cfg = LazyConfig(RMSNorm)(16, eps=1e-5)
    assert cfg.dim == 16 and instantiate(cfg).weight.shape == (16,)


def test_target_that_cannot_be_named_is_rejected():
    with pytest.raises(ValueError, match="__module__"):
        LazyConfig(object())

    def local():
        pass

    with pytest.raises(ValueError, match="inside a function"):
        LazyConfig(local)


def test_instantiate_builds_fresh_modules_and_never_mutates_the_config():
    cfg = mlp_cfg(expansion_factor=2.0)
    snapshot = copy.deepcopy(cfg)
    a, b = instantiate(cfg), instantiate(cfg)
    assert a is not b and a.layer1.weight.data_ptr() != b.layer1.weight.data_ptr()
    assert cfg == snapshot


def test_overrides_win_and_stay_at_the_top_level():
    net = instantiate(mlp_cfg(), dim=12)
    assert net.dim == 12 and net.layer1.in_features == 12


def test_unknown_override_at_instantiate_is_a_type_error_naming_the_signature():
    with pytest.raises(TypeError, match="Error instantiating .*MLP.*Target signature"):
        instantiate(mlp_cfg(), nonsense=1)


def test_nested_factory_is_called_and_nested_module_config_is_passed_unbuilt():
    seen = {}

    cfg = mlp_cfg(init_method_in=LazyConfig(partial_wang_init_fn_with_num_layers)(num_layers=12))
    module = instantiate(cfg)
    # dropout_cfg (a module config) was built by MLP itself
    assert isinstance(module.dropout, nn.Dropout)
    expected_std = 2 / (12 * 8**0.5)
    seen["std"] = module.layer1.weight.std().item()
    assert abs(seen["std"] - expected_std) < 0.5 * expected_std


def test_recursive_instantiate_builds_nested_modules():
    cfg = ConfigNode(__target__="torch.nn.Sequential")
    built = instantiate({"a": LazyConfig(nn.ReLU)(), "b": 3})
    assert isinstance(built.a, nn.ReLU) and built.b == 3
    nested = instantiate(LazyConfig(_Holder)(child=LazyConfig(nn.ReLU)()), recursive_instantiate=True)
    assert isinstance(nested.child, nn.ReLU)
    lazy = instantiate(LazyConfig(_Holder)(child=LazyConfig(nn.ReLU)()))
    assert isinstance(lazy.child, dict) and lazy.child["__target__"] == "torch.nn.modules.activation.ReLU"
    assert cfg["__target__"] == "torch.nn.Sequential"


class _Holder:
    def __init__(self, child=None):
        self.child = child


def test_placeholder_keeps_a_nested_config_unbuilt():
    assert not PLACEHOLDER and repr(PLACEHOLDER) == "PLACEHOLDER"
    assert copy.deepcopy(PLACEHOLDER) is PLACEHOLDER
    out = instantiate(
        LazyConfig(_Holder)(child=LazyConfig(partial_wang_init_fn_with_num_layers)(num_layers=PLACEHOLDER))
    )
    assert isinstance(out.child, dict) and out.child["num_layers"] is PLACEHOLDER


def test_non_configs_are_returned_as_is():
    module = nn.ReLU()
    assert instantiate(None) is None and instantiate(5) == 5 and instantiate(module) is module


def test_uncalled_lazyconfig_is_called_with_overrides():
    norm = instantiate(LazyConfig(RMSNorm), dim=6)
    assert norm.weight.shape == (6,)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("4/2", 2),
        ("2.0/2", 1),
        ("7/2", 3.5),
        ("3", 3),
        ("384*3", 1152),
        ("(1+2)*3", 9),
        ("-4", -4),
        ("7//2", 3),
        ("7%4", 3),
        ("1e-6", "1e-6"),
        ("2**3", "2**3"),
        ("gelu", "gelu"),
        ("1/0", "1/0"),
        ("", ""),
        ("()", "()"),
    ],
)
def test_arithmetic_strings(text, expected):
    assert eval_arithmetic(text) == expected and type(eval_arithmetic(text)) is type(expected)


def test_arithmetic_strings_are_evaluated_when_building():
    module = instantiate(mlp_cfg(expansion_factor="6/2"))
    assert module.hidden_dim == 24


def test_interpolation_resolves_against_the_root_even_from_a_subtree():
    root = ConfigNode(model=dict(hidden=16, norm=LazyConfig(RMSNorm)(dim="${model.hidden}")))
    assert instantiate(root.model.norm).weight.shape == (16,)
    assert resolve(root).model.norm.dim == 16
    relative = ConfigNode(model=dict(hidden=8, norm=LazyConfig(RMSNorm)(dim="${..hidden}")))
    assert instantiate(relative.model.norm).weight.shape == (8,)
    text = resolve(ConfigNode(a=3, b="size-${a}"))
    assert text.b == "size-3"


def test_missing_or_cyclic_interpolation_is_an_error():
    with pytest.raises(KeyError, match="nope"):
        resolve(ConfigNode(a="${nope}"))
    with pytest.raises(ValueError, match="cycle"):
        resolve(ConfigNode(a="${b}", b="${a}"))


def test_embedding_a_node_copies_it():
    norm = LazyConfig(RMSNorm)(dim=4)
    tree = ConfigNode(norm=norm)
    norm.dim = 99
    assert tree.norm.dim == 4


def test_yaml_round_trip_rebuilds_the_same_module(tmp_path):
    cfg = ConfigNode(
        hidden=8,
        model=mlp_cfg(init_method_in=LazyConfig(trunc_normal_init_factory)(std=0.02), bias=True),
        sizes=[1, 2, 3],
    )
    cfg.model.dim = "${hidden}"
    path = save_config(cfg, tmp_path / "cfg.yaml")
    loaded = load_config(path)
    assert loaded == cfg
    assert "__target__: vit5.modules.mlp.MLP" in path.read_text()
    built = instantiate(loaded.model)
    assert isinstance(built, MLP) and built.dim == 8


def test_saving_runtime_objects_names_the_key(tmp_path):
    cfg = ConfigNode(model=dict(init=torch.zeros(2)))
    with pytest.raises(TypeError, match="model.init"):
        save_config(cfg, tmp_path / "bad.yaml")
    assert not (tmp_path / "bad.yaml").exists()


def test_load_config_rejects_python_tags(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("a: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ValueError, match="python/object/apply:os.system is refused"):
        load_config(path)


def test_overrides_set_existing_and_signature_keys():
    cfg = ConfigNode(model=mlp_cfg(), epochs=3)
    out = apply_overrides(cfg, ["model.dim=32", "epochs=5", "model.bias=true", "model.expansion_factor=1.5"])
    assert (
        out.model.dim == 32
        and out.epochs == 5
        and out.model.bias is True
        and out.model.expansion_factor == 1.5
    )
    assert cfg.model.dim == 8  # the original is untouched
    assert instantiate(out.model).layer1.bias is not None


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.dimm=3", "model has no key 'dimm'"),
        ("modle.dim=3", "no section 'modle'"),
        ("epochs", "key.path=value"),
        ("model..dim=3", "empty key"),
        ("epochs.max=3", "epochs is int 3, not a section with keys"),
    ],
)
def test_bad_overrides_are_value_errors(override, message):
    cfg = ConfigNode(model=mlp_cfg(), epochs=3)
    with pytest.raises(ValueError, match=message):
        apply_overrides(cfg, [override])


@settings(max_examples=60, deadline=None)
@given(
    value=st.one_of(
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.booleans(),
        st.none(),
        st.lists(st.integers(0, 100), max_size=4),
    )
)
def test_override_values_round_trip(value):
    out = apply_overrides(ConfigNode(a=0), [f"a={value!r}"])
    assert out.a == value


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="abcxyz_", min_size=1, max_size=8))
def test_unknown_recorded_keywords_always_raise(name):
    if name in ("dim", "eps", "use_quack"):
        return
    with pytest.raises(TypeError):
        LazyConfig(RMSNorm)(**{name: 1})
