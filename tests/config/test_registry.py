"""The config-target registry: configs read from files may only build registered callables."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import vit5
from vit5.config import TARGET_KEY, load_config, to_container
from vit5.config.registry import (
    ConfigTargetError,
    check_config_targets,
    register_config_target,
    resolve_config_target,
)
from vit5.data import DATASETS
from vit5.train.recipes import default_run_config, load_python_config

CONFIGS = sorted(
    p
    for p in (Path(__file__).parents[2] / "src" / "vit5" / "recipes").glob("*.py")
    if p.name != "__init__.py"
)


def targets(tree):
    found = []

    def walk(value):
        if isinstance(value, dict):
            if TARGET_KEY in value:
                found.append(value[TARGET_KEY])
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(to_container(tree))
    return found


@pytest.mark.parametrize("name", vit5.list_models())
def test_every_preset_config_is_admitted_unchanged(name):
    cfg = to_container(vit5.model_config(name))
    assert targets(cfg) and check_config_targets(cfg, name) == cfg


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_default_run_config_is_admitted(dataset):
    cfg = to_container(default_run_config(dataset))
    assert check_config_targets(cfg, dataset) == cfg


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_file_in_configs_is_admitted(path):
    tree = to_container(load_python_config(path))
    assert targets(tree) and check_config_targets(tree, path.name) == tree


@pytest.mark.parametrize(
    "target",
    ["os.system", "subprocess.run", "builtins.eval", "vit5.cli.main", "vit5._io.atomic_write_text",
     "vit5.config.io.save_config", "torch.load", "torch.nn.Module.register_forward_hook", "nvsubquadratic..main",
     "vit5.ViT5ClassificationNet.load_state_dict", "", 3, None],
)  # fmt: skip
def test_unregistered_targets_are_refused_before_import(target, tmp_path):
    tree = {"model": vit5.model_config("vit5_tiny_attention")}
    tree = to_container(tree)
    tree["model"]["norm_cfg"][TARGET_KEY] = target  # deep in the tree
    with pytest.raises(
        ConfigTargetError, match=r"(?s)file\.yaml at model\.norm_cfg: __target__ .* not a registered"
    ):
        check_config_targets(tree, "file.yaml")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ValueError, match="not a registered config target") as error:
        load_config(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_yaml_payload_is_never_called(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump({"model": {TARGET_KEY: "os.system", "command": f"touch {marker}"}}))
    with pytest.raises(ConfigTargetError):
        vit5.instantiate(load_config(path)["model"])
    assert not marker.exists()
    trusted = load_config(path, trust_config=True)  # the user's own file: built as written
    assert trusted["model"][TARGET_KEY] == "os.system"


def test_reference_targets_map_to_vit5_classes():
    assert resolve_config_target("nvsubquadratic.modules.vit5_attention.ViT5Attention").endswith(
        "vit5.modules.attention.ViT5Attention"
    )
    tree = {TARGET_KEY: "nvsubquadratic.modules.rms_norm.RMSNorm", "dim": 8,
            "init": {TARGET_KEY: "nvsubquadratic.utils.init.trunc_normal_init", "std": 0.02}}  # fmt: skip
    checked = check_config_targets(tree, "ref.yaml")
    assert checked[TARGET_KEY] == "vit5.modules.norms.RMSNorm"
    assert checked["init"][TARGET_KEY] == "vit5.ops.init.trunc_normal_init"
    assert tree[TARGET_KEY].startswith("nvsubquadratic")  # input untouched
    for name in (
        "nvsubquadratic.parallel.utils.init_parallel_state",
        "nvsubquadratic.modules.mamba_nd.Mamba",
    ):
        with pytest.raises(ConfigTargetError):
            resolve_config_target(name)


def test_torch_nn_layers_by_public_and_defining_path():
    for path in (
        "torch.nn.GELU",
        "torch.nn.modules.activation.GELU",
        "torch.nn.Identity",
        "torch.nn.LayerNorm",
    ):
        assert resolve_config_target(path) == path
    with pytest.raises(ConfigTargetError):
        resolve_config_target("torch.nn.modules.module.Module")


def test_registering_a_user_class_admits_it():
    class_name = "tests.config.test_registry._UserLayer"
    with pytest.raises(ConfigTargetError):
        resolve_config_target(class_name)
    register_config_target(_UserLayer, "mypkg.UserLayer")
    assert resolve_config_target(class_name) == class_name
    assert resolve_config_target("mypkg.UserLayer") == "mypkg.UserLayer"
    with pytest.raises(TypeError, match="class or function"):
        register_config_target(3)


class _UserLayer:
    pass


def test_config_package_imports_nothing_of_the_model():
    """The registry is a passive table: config's own sources import no model package."""
    import ast

    for path in (Path(vit5.__file__).parent / "config").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("vit5.modules", "vit5.networks", "vit5.ops", "vit5.io")), (
                    path,
                    name,
                )


def test_packages_register_what_they_expose():
    from vit5.config.registry import config_targets

    table = config_targets()
    assert table["vit5.modules.attention.ViT5Attention"] is vit5.ViT5Attention
    assert table["vit5.ViT5ClassificationNet"] is vit5.ViT5ClassificationNet
    assert table["vit5.networks.presets.build_vit5"].__name__ == "build_vit5"
    assert table["torch.nn.GELU"] is table["torch.nn.modules.activation.GELU"]
    assert "vit5.cli.main" not in table and "vit5.load_model" not in table
    from vit5.io.registry import resolve_config_target as former_home  # older imports keep working

    assert former_home("vit5.RMSNorm") == "vit5.RMSNorm"


@pytest.mark.parametrize(
    "target", ["nvsubquadratic.modules.mamba_nd.Mamba", "nvsubquadratic.cli.main", "mamba_ssm.Mamba",
               "apex.optimizers.FusedLAMB", "experiments.default_cfg.ExperimentConfig"],
)  # fmt: skip
def test_names_vit5_does_not_provide_read_as_calls_that_fail_when_built(target, tmp_path):
    import sys

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"net": {"mixer": {TARGET_KEY: target, "d_model": 8}}, "other": 1}))
    cfg = load_config(path)  # the file reads: the unusable part is only an error when built
    assert cfg.net.mixer.unavailable_target == target and cfg.net.mixer.d_model == 8
    assert target.split(".")[0] not in sys.modules or target.startswith("nvsubquadratic")
    with pytest.raises(
        ValueError, match=rf"^net\.mixer: {target.replace('.', '[.]')} is not provided by vit5"
    ):
        vit5.instantiate(cfg.net.mixer)
    assert load_config(vit5.save_config(cfg, tmp_path / "again.yaml")) == cfg


def test_reference_names_never_map_to_the_config_packages_helpers():
    from vit5.config.registry import reference_target

    assert reference_target("nvsubquadratic.utils.init.small_init") == "vit5.ops.init.small_init"
    for helper in ("partial", "python_name", "unavailable"):
        assert reference_target(f"nvsubquadratic.utils.init.{helper}") is None
