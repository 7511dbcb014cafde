"""load_nvsubquadratic_config: nvSubquadratic's Python configs, imported under the shim (issue 29)."""

from __future__ import annotations

import importlib
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import vit5
from tests.helpers import assert_parity, copy_state, requires_reference
from vit5.config import instantiate, save_config

BASE = """
import os

from apex.optimizers import FusedLAMB as Lamb
from experiments.default_cfg import ExperimentConfig, TrainConfig, WandbConfig
from experiments.lightning_wrappers.classification_wrapper import ClassificationWrapper
from nvsubquadratic.lazy_config import PLACEHOLDER, LazyConfig

HIDDEN_DIM = 32
NUM_BLOCKS = 2
PATCH_SIZE = 8
IMAGE_SIZE = 32


def get_base_config():
    config = ExperimentConfig()
    config.seed = 42
    config.optimizer = LazyConfig(Lamb)(params=PLACEHOLDER, lr=1e-3)
    config.lightning_wrapper_class = LazyConfig(ClassificationWrapper)(loss="soft_target_ce")
    config.train = TrainConfig(batch_size=8, iterations=10)
    config.wandb = WandbConfig(job_group="x")
    return config
"""

NET = """
import torch

from examples.vit5_imagenet.v5._base import HIDDEN_DIM, IMAGE_SIZE, NUM_BLOCKS, PATCH_SIZE, get_base_config
from mamba_ssm import Mamba as MambaCoreLayer
from nvsubquadratic.lazy_config import LazyConfig
from nvsubquadratic.modules.ckconv_nd import CKConvND
from nvsubquadratic.modules.hyena_nd import Hyena
from nvsubquadratic.modules.kernels_nd import BlockDiagonalMultiOmegaSIRENKernelND
from nvsubquadratic.modules.mamba_nd import Mamba
from nvsubquadratic.modules.masks_nd import GaussianModulationND
from nvsubquadratic.modules.mlp import MLP
from nvsubquadratic.modules.rms_norm import RMSNorm
from nvsubquadratic.modules.rms_norm_channel_first import RMSNormChannelFirst
from nvsubquadratic.modules.sequence_mixer import QKVSequenceMixer
from nvsubquadratic.modules.vit5_attention import ViT5Attention
from nvsubquadratic.modules.vit5_hyena_adapter import ViT5HyenaAdapter
from nvsubquadratic.modules.vit5_residual_block import ViT5ResidualBlock
from nvsubquadratic.networks.vit5_classification import ViT5ClassificationNet
from nvsubquadratic.utils.init import trunc_normal_init, trunc_normal_init_factory
from nvsubquadratic.utils.qk_norm import L2Norm

INIT_FN = trunc_normal_init(std=0.02)
INIT_FACTORY = trunc_normal_init_factory(std=0.02)
GRID = "${eval:'${net.image_size} // ${net.patch_size}'}"
GRID_H = "${eval:'((${net.image_size} // ${net.patch_size}) ** 2 + 1 + ${net.num_registers} + (-(${net.image_size} // ${net.patch_size}) ** 2 - 1 - ${net.num_registers}) % (${net.image_size} // ${net.patch_size})) // (${net.image_size} // ${net.patch_size})'}"


def mlp():
    return LazyConfig(MLP)(
        dim="${net.hidden_dim}", activation="gelu", expansion_factor=2.0, bias=False,
        dropout_cfg=LazyConfig(torch.nn.Dropout)(p=0.0), init_method_in=INIT_FACTORY, init_method_out=INIT_FACTORY,
    )


def attention_block():
    return LazyConfig(ViT5ResidualBlock)(
        sequence_mixer_cfg=LazyConfig(ViT5Attention)(
            hidden_dim="${net.hidden_dim}", num_heads=2, num_patches_h=GRID, num_patches_w=GRID,
            num_registers="${net.num_registers}",
            qk_norm=LazyConfig(RMSNorm)(dim="${eval:'${net.hidden_dim} // ${net.layer_types.A.sequence_mixer_cfg.num_heads}'}"),
            init_fn_qkv_proj=INIT_FN, init_fn_out_proj=INIT_FN,
        ),
        sequence_mixer_norm_cfg=LazyConfig(RMSNorm)(dim="${net.hidden_dim}", eps=1e-6),
        mlp_cfg=mlp(), mlp_norm_cfg=LazyConfig(RMSNorm)(dim="${net.hidden_dim}", eps=1e-6),
        hidden_dim="${net.hidden_dim}", layer_scale_init=0.1,
    )


def hyena_block():
    conv = LazyConfig(CKConvND)(
        data_dim=2, hidden_dim="${net.hidden_dim}",
        kernel_cfg=LazyConfig(BlockDiagonalMultiOmegaSIRENKernelND)(
            out_dim="${net.hidden_dim}", data_dim=2, mlp_hidden_dim=16, num_layers=3, embedding_dim=16,
            L_cache=GRID_H, use_bias=True, num_blocks=4,
        ),
        mask_cfg=LazyConfig(GaussianModulationND)(data_dim=2, num_channels="${net.hidden_dim}"),
        grid_type="double", fft_padding="zero",
    )
    mixer = LazyConfig(QKVSequenceMixer)(
        hidden_dim="${net.hidden_dim}",
        mixer_cfg=LazyConfig(Hyena)(
            global_conv_cfg=conv,
            short_conv_cfg=LazyConfig(torch.nn.Conv2d)(
                in_channels="${eval:'3 * ${net.hidden_dim}'}", out_channels="${eval:'3 * ${net.hidden_dim}'}",
                kernel_size=3, groups="${eval:'3 * ${net.hidden_dim}'}", padding=1, bias=False,
            ),
            gate_nonlinear_cfg=LazyConfig(torch.nn.SiLU)(),
            pixelhyena_norm_cfg=LazyConfig(RMSNormChannelFirst)(dim="${net.hidden_dim}", eps=1e-6),
            qk_norm_cfg=LazyConfig(L2Norm)(),
        ),
        init_method_in=INIT_FACTORY, init_method_out=INIT_FACTORY,
    )
    return LazyConfig(ViT5ResidualBlock)(
        sequence_mixer_cfg=LazyConfig(ViT5HyenaAdapter)(inner_mixer_cfg=mixer, grid_w=GRID),
        sequence_mixer_norm_cfg=LazyConfig(RMSNorm)(dim="${net.hidden_dim}", eps=1e-6),
        mlp_cfg=mlp(), mlp_norm_cfg=LazyConfig(RMSNorm)(dim="${net.hidden_dim}", eps=1e-6),
        hidden_dim="${net.hidden_dim}", layer_scale_init=0.1,
    )


def mamba_block():
    return LazyConfig(ViT5ResidualBlock)(
        sequence_mixer_cfg=LazyConfig(Mamba)(mamba_layer_cfg=LazyConfig(MambaCoreLayer)(d_model="${net.hidden_dim}")),
        hidden_dim="${net.hidden_dim}",
    )


def get_config():
    config = get_base_config()
    config.compile = True
    config.net = LazyConfig(ViT5ClassificationNet)(
        in_channels=3, num_classes=5, hidden_dim=HIDDEN_DIM, num_blocks=NUM_BLOCKS, patch_size=PATCH_SIZE,
        image_size=IMAGE_SIZE, num_registers=1, dropout_rate=0.0, readout="cls",
        norm_cfg=LazyConfig(RMSNorm)(dim="${net.hidden_dim}", eps=1e-6),
        layer_pattern=LAYER_PATTERN, layer_types=dict(A=attention_block(), H=hyena_block(), M=mamba_block()),
    )
    config.wandb.job_group = "hybrid"
    return config
"""


def _write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def repo(tmp_path):
    """A repository in the shape of nvSubquadratic's: examples/, experiments/ (never imported by vit5)."""
    marker = tmp_path / "experiments_ran"
    _write(tmp_path, "pyproject.toml", "[project]\nname = 'fake'\n")
    _write(tmp_path, "experiments/__init__.py", f"open({str(marker)!r}, 'w').close()\n")
    _write(tmp_path, "examples/vit5_imagenet/v5/_base.py", BASE)
    _write(tmp_path, "examples/vit5_imagenet/vit5_hybrid/hybrid_ha.py", NET.replace("LAYER_PATTERN", '"HA"'))
    _write(tmp_path, "examples/vit5_imagenet/vit5_hybrid/full_mamba.py", NET.replace("LAYER_PATTERN", '"MA"'))
    yaml_friendly = NET.replace("LAYER_PATTERN", '"HA"').replace(
        "trunc_normal_init_factory(std=0.02)", "small_init"
    )
    yaml_friendly = yaml_friendly.replace(
        "import trunc_normal_init,", "import small_init, trunc_normal_init,"
    )
    _write(tmp_path, "examples/vit5_imagenet/vit5_hybrid/hybrid_ha_small_init.py", yaml_friendly)
    return tmp_path


def test_the_network_tree_builds_without_the_reference(repo):
    before_modules, before_path = set(sys.modules), list(sys.path)
    tree = vit5.load_nvsubquadratic_config(repo / "examples/vit5_imagenet/vit5_hybrid/hybrid_ha.py")
    assert not (repo / "experiments_ran").exists()  # the repository's experiments package is never run
    assert sys.path == before_path and not any(
        name.startswith(("examples", "experiments", "apex", "mamba_ssm"))
        for name in set(sys.modules) - before_modules
    )
    attention = tree.layer_types.A.sequence_mixer_cfg
    assert attention.num_patches_h == 4 and attention.qk_norm.dim == 16
    kernel = tree.layer_types.H.sequence_mixer_cfg.inner_mixer_cfg.mixer_cfg.global_conv_cfg.kernel_cfg
    assert kernel.L_cache == 5 and kernel["__target__"].endswith("BlockDiagonalMultiOmegaSIRENKernelND")
    net = instantiate(tree)
    assert isinstance(net, vit5.ViT5ClassificationNet)
    assert net({"input": torch.randn(2, 32, 32, 3)})["logits"].shape == (2, 5)
    whole = vit5.load_nvsubquadratic_config(
        repo / "examples/vit5_imagenet/vit5_hybrid/hybrid_ha.py", key=None
    )
    assert whole.wandb.job_group == "hybrid" and whole.train.batch_size == 8
    with pytest.raises(ValueError, match=r"^optimizer: apex\.optimizers\.FusedLAMB is not provided by vit5"):
        instantiate(whole.optimizer)


def test_placeholders_raise_one_line_naming_class_and_key(repo):
    tree = vit5.load_nvsubquadratic_config(repo / "examples/vit5_imagenet/vit5_hybrid/full_mamba.py")
    message = (
        r"^net\.layer_types\.M\.sequence_mixer_cfg\.mamba_layer_cfg: mamba_ssm\.Mamba is not provided by vit5"
    )
    with pytest.raises(ValueError, match=message) as error:
        instantiate(tree.layer_types.M.sequence_mixer_cfg)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="no key 'model'"):
        vit5.load_nvsubquadratic_config(repo / "examples/vit5_imagenet/vit5_hybrid/hybrid_ha.py", key="model")
    with pytest.raises(ValueError, match=r"must be a \.py file"):
        vit5.load_nvsubquadratic_config(repo / "pyproject.toml")


@pytest.mark.parity
@requires_reference
def test_same_network_as_the_reference_builds_from_the_same_file(repo):
    """The reference imports the file itself (with stand-ins for its training packages)."""
    from nvsubquadratic.lazy_config import instantiate as reference_instantiate
    from nvsubquadratic.lazy_config import save_config as reference_save
    from omegaconf import OmegaConf

    from vit5.config.arithmetic import safe_arithmetic

    for relative, text in {
        "apex/__init__.py": "", "apex/optimizers.py": "class FusedLAMB:\n    def __init__(self, **kw): pass\n",
        "mamba_ssm/__init__.py": "class Mamba:\n    def __init__(self, **kw): pass\n",
        "experiments/__init__.py": "",
        "experiments/default_cfg.py": "class _C:\n    def __init__(self, **kw): self.__dict__.update(kw)\n"
                                      "ExperimentConfig = TrainConfig = WandbConfig = _C\n",
        "experiments/lightning_wrappers/__init__.py": "",
        "experiments/lightning_wrappers/classification_wrapper.py": "class ClassificationWrapper: pass\n",
    }.items():  # fmt: skip
        _write(repo, relative, text)
    x = {"input": torch.randn(2, 32, 32, 3)}
    for name in ("hybrid_ha", "hybrid_ha_small_init"):
        path = repo / f"examples/vit5_imagenet/vit5_hybrid/{name}.py"
        ours = instantiate(vit5.load_nvsubquadratic_config(path))
        sys.path.insert(0, str(repo))
        try:
            module = importlib.import_module(f"examples.vit5_imagenet.vit5_hybrid.{name}")
            if not OmegaConf.has_resolver("eval"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    OmegaConf.register_new_resolver("eval", safe_arithmetic)
            root = OmegaConf.create({"net": module.get_config().net}, flags={"allow_objects": True})
            OmegaConf.resolve(root)
            reference = reference_instantiate(root.net)
            reference_save(root, str(repo / f"{name}.yaml"))  # the YAML the reference writes
        finally:
            sys.path.remove(str(repo))
            for stale in [
                n for n in sys.modules if n.split(".")[0] in ("examples", "experiments", "apex", "mamba_ssm")
            ]:
                del sys.modules[stale]
        copy_state(reference, ours)
        reference.eval(), ours.eval()
        with torch.no_grad():
            expected = reference(x)["logits"]
            assert_parity(ours(x)["logits"], expected)
        if name == "hybrid_ha":  # its MLP init is a closure: the YAML names it, and is refused in one line
            with pytest.raises(ValueError, match=r"!!python/name:nvsubquadratic\.utils\.init\._factory"):
                vit5.load_config(repo / f"{name}.yaml")
            continue
        from_yaml = instantiate(vit5.load_config(repo / f"{name}.yaml").net)
        copy_state(reference, from_yaml)
        with torch.no_grad():
            assert_parity(from_yaml.eval()(x)["logits"], expected)


def test_the_tree_saves_and_reloads_as_yaml(repo, tmp_path):
    tree = vit5.load_nvsubquadratic_config(repo / "examples/vit5_imagenet/vit5_hybrid/hybrid_ha.py")
    assert (
        tree.layer_types.A.mlp_cfg.init_method_in["__target__"] == "vit5.ops.init.trunc_normal_init_factory"
    )
    path = save_config(tree, tmp_path / "net.yaml")
    torch.manual_seed(0)
    first = instantiate(tree)
    torch.manual_seed(0)
    second = instantiate(vit5.load_config(path))
    for (key, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), key


def test_cli_info_reads_the_network_of_an_nvsubquadratic_file(repo, capsys):
    from vit5.cli import main

    path = repo / "examples/vit5_imagenet/vit5_hybrid/hybrid_ha.py"
    assert (
        main(["info", "--nvsubquadratic", "--config", str(path), "net.patch_size=16", "net.num_classes=7"])
        == 0
    )
    out = capsys.readouterr().out
    assert "tokens: [4 patches (2x2)" in out and "logits [B, 7]" in out  # derived sizes follow the override
    assert main(["info", "--nvsubquadratic", "--preset", "vit5_tiny_attention"]) == 2
    assert "--nvsubquadratic reads the network" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_train_with_the_network_of_an_nvsubquadratic_file(repo, tmp_path):
    from vit5.cli import main

    run = tmp_path / "run"
    path = repo / "examples/vit5_imagenet/vit5_hybrid/hybrid_ha.py"
    args = [
        "train",
        "--nvsubquadratic",
        "--config",
        str(path),
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--out",
        str(run),
    ]
    assert main([*args, "model.in_channels=1", "model.num_classes=10", "data.max_train_images=64"]) == 0
    saved = vit5.load_config(run / "config.yaml")  # the run's config reloads (registered targets only)
    assert saved.model.image_size == 32 and saved.data.image_size == 32
    assert vit5.load_model(run).num_classes == 10
