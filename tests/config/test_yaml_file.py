"""Bounded YAML reading and nvSubquadratic's Python tags read as recorded calls (issues 29, 30)."""

from __future__ import annotations

import functools
import time

import pytest
import yaml

import vit5
from vit5.config import ConfigNode, LazyConfig, instantiate, load_config, save_config
from vit5.config.yaml_file import MAX_YAML_DEPTH, MAX_YAML_NODES, read_yaml
from vit5.ops import init

REFERENCE_STYLE = """\
net:
  init_in: !!python/name:nvsubquadratic.utils.init.small_init ''
  init_bare: !!python/name:nvsubquadratic.utils.init.wang_init
  init_out: !!python/object/apply:functools.partial
    args:
    - &id001 !!python/name:nvsubquadratic.utils.init.trunc_normal_init
    state:
    - *id001
    - []
    - std: 0.02
    - null
  positional: !!python/object/apply:functools.partial
    args: [!!python/name:nvsubquadratic.utils.init.wang_init '', 0.1]
    kwds: {num_layers: 3}
  shared:
  - &id002 !!python/object/apply:functools.partial
    args:
    - *id001
    state: !!python/tuple
    - *id001
    - !!python/tuple []
    - std: 0.5
    - null
  - *id002
"""


def test_reference_tags_read_as_recorded_calls_of_registered_functions(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(REFERENCE_STYLE)
    cfg = load_config(path)
    assert cfg.net.init_in.name == "nvsubquadratic.utils.init.small_init"  # data, not an object
    built = instantiate(cfg.net)
    assert built.init_in is init.small_init and built.init_bare is init.wang_init
    assert isinstance(built.init_out, functools.partial)
    assert built.init_out.func is init.trunc_normal_init and built.init_out.keywords == {"std": 0.02}
    assert built.positional.args == (0.1,) and built.positional.keywords == {"num_layers": 3}
    assert cfg.net.shared[0] == cfg.net.shared[1] and cfg.net.shared[0].keywords.std == 0.5


def test_tags_are_written_back_in_the_same_forms(tmp_path):
    source = tmp_path / "config.yaml"
    source.write_text(REFERENCE_STYLE)
    cfg = load_config(source)
    text = save_config(cfg, tmp_path / "again.yaml").read_text()
    assert "init_in: !!python/name:nvsubquadratic.utils.init.small_init ''" in text
    assert "!!python/object/apply:functools.partial" in text and "state: !!python/tuple" in text
    assert load_config(tmp_path / "again.yaml") == cfg
    rebuilt = yaml.unsafe_load(
        text.replace("nvsubquadratic.utils.init", "vit5.ops.init")
    )  # PyYAML reloads it
    assert rebuilt["net"]["init_out"].keywords == {"std": 0.02}


def test_python_trees_with_registered_functions_and_partials_are_saved(tmp_path):
    mlp = LazyConfig(vit5.MLP)(
        dim=8,
        activation="gelu",
        dropout_cfg=None,
        init_method_in=functools.partial(init.wang_init, num_layers=3),
    )
    tree = ConfigNode(model=mlp, fn=init.small_init)
    path = save_config(tree, tmp_path / "saved.yaml")
    assert "!!python/name:vit5.ops.init.small_init ''" in path.read_text()
    loaded = load_config(path)
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    first = instantiate(tree.model)
    torch.manual_seed(0)
    second = instantiate(loaded.model)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(TypeError, match=r"value at model\.init_method_out .* not registered"):
        save_config(ConfigNode(model=dict(init_method_out=lambda tensor: tensor)), tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [("a: !!python/name:os.system ''\n", r"!!python/name:os\.system names nothing registered"),
     ("a: !!python/name:nvsubquadratic.utils.init._factory ''\n", r"!!python/name:nvsubquadratic\.utils\.init\._factory"),
     ("a: !!python/object/apply:os.system ['true']\n", r"python/object/apply:os\.system is refused"),
     ("a: !!python/object/apply:functools.partial [!!python/name:os.system '']\n", r"!!python/name:os\.system"),
     ("a: !!python/object/new:subprocess.Popen [['true']]\n", r"python/object/new:subprocess\.Popen is refused"),
     ("a: !!python/module:os ''\n", r"python/module:os is refused"),
     ("a: !!python/name:nvsubquadratic.utils.init.small_init 'x'\n", "must have an empty value"),
     ("a: !!python/object/apply:functools.partial {state: [1, 2]}\n", "bad state")],
)  # fmt: skip
def test_unregistered_or_other_python_tags_are_one_line_errors(tmp_path, text, message):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(text.replace("'true'", f"'touch {marker}'"))
    with pytest.raises(ValueError, match=message) as error:
        load_config(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    assert not marker.exists()


def test_billion_laughs_is_refused_quickly_but_anchors_stay_allowed():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    start = time.perf_counter()
    with pytest.raises(ValueError, match=f"more than {MAX_YAML_NODES} values with its aliases expanded"):
        read_yaml("\n".join(lines), "laughs.yaml")
    assert time.perf_counter() - start < 2
    assert read_yaml("\n".join(lines[:3]), "ok.yaml")["a2"][9][9][9] == "x"


@pytest.mark.parametrize(
    ("text", "message"),
    [("[" * (MAX_YAML_DEPTH + 5) + "]" * (MAX_YAML_DEPTH + 5), "nested deeper"),
     ("a: &a [*a]\n", "recursive YAML alias"),
     ("a: [1, 2\n", "not a valid vit5 YAML config"),
     ("- 1\n" * 2100, "more than 1000 values")],
)  # fmt: skip
def test_hostile_structure_is_a_one_line_error(text, message, monkeypatch):
    monkeypatch.setattr("vit5.config.yaml_file.MAX_YAML_NODES", 1000)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message) as error:
        read_yaml(text, "bad.yaml")
    assert str(error.value).startswith("bad.yaml: ") and "\n" not in str(error.value)
    assert time.perf_counter() - start < 10


def test_oversized_file_is_refused_before_parsing(tmp_path, monkeypatch):
    import vit5.config.io as config_io

    monkeypatch.setattr(config_io, "MAX_YAML_BYTES", 64)
    monkeypatch.setattr("vit5.config.yaml_file.MAX_YAML_BYTES", 64)
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * 100 + "\n")
    with pytest.raises(ValueError, match="larger than 64 bytes"):
        load_config(path)


def test_reference_placeholder_and_torch_initialisers(tmp_path):
    path = tmp_path / "ref.yaml"
    path.write_text(
        "opt:\n  params: !!python/object:nvsubquadratic.lazy_config._Placeholder {}\n  lr: 1.0\n"
        "init: !!python/object/apply:functools.partial\n  args:\n  - &id001 !!python/name:torch.nn.init.trunc_normal_\n"
        "  state:\n  - *id001\n  - []\n  - std: 0.02\n  - null\n"
    )
    cfg = load_config(path)
    assert cfg.opt.params is vit5.PLACEHOLDER
    built = instantiate(cfg).init
    torch = pytest.importorskip("torch")
    assert built.func is torch.nn.init.trunc_normal_ and built.keywords == {"std": 0.02}
    text = save_config(cfg, tmp_path / "again.yaml").read_text()
    assert "params: !!python/object:vit5.config.node._Placeholder {}" in text
    assert load_config(tmp_path / "again.yaml").opt.params is vit5.PLACEHOLDER
