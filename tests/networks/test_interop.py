"""nvSubquadratic / Lightning-style checkpoints: one loader finds the weights wherever they are."""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers import assert_parity, randomize_, requires_reference
from vit5 import create_model, load_nvsubquadratic_checkpoint
from vit5.networks.interop import extract_state_dict, find_state_dicts
from vit5.train.checkpoint import CheckpointError

TINY = dict(
    hidden_dim=32, num_heads=2, num_blocks=2, image_size=16, patch_size=4, num_classes=5, siren_hidden_dim=8
)


def tiny(seed=0, **overrides):
    torch.manual_seed(seed)
    return create_model("vit5_tiny_hybrid", **{**TINY, **overrides})


def randomized_state(seed):
    return {k: v.clone() for k, v in randomize_(tiny(), seed=seed).state_dict().items()}


def prefixed(state, prefix):
    return {prefix + k: v for k, v in state.items()}


def lightning(state_dict, **extra):
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": state_dict,
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-3}]}],
        "lr_schedulers": [{"last_epoch": 3}],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 1e-3, "net": {"hidden_dim": 32}},
        **extra,
    }


def assert_loaded(model, state):
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("prefix", ["", "net.", "model.", "model._orig_mod.", "module.", "net.module."])
def test_model_weights_under_any_prefix(prefix):
    state, ema = randomized_state(1), randomized_state(2)
    other = {"criterion.weight": torch.ones(5)} if prefix else {}  # another sub-module of the LightningModule
    checkpoint = lightning({**prefixed(state, prefix), **prefixed(ema, "ema.module."), **other})
    assert_loaded(load_nvsubquadratic_checkpoint(tiny(), checkpoint), state)
    assert_loaded(load_nvsubquadratic_checkpoint(tiny(), checkpoint, ema=True), ema)


def test_plain_state_dict_and_ema_entries():
    state, ema = randomized_state(1), randomized_state(2)
    assert_loaded(load_nvsubquadratic_checkpoint(tiny(), state), state)
    for checkpoint in (
        {"state_dict": prefixed(state, "net."), "state_dict_ema": ema},  # timm train.py
        {**state, "model_ema": ema},
        lightning(prefixed(state, "net."), callbacks={"EMA": {"ema_state_dict": prefixed(ema, "net.")}}),
        lightning(prefixed(state, "net."), ema_model=prefixed(ema, "module.")),
        {
            "state_dict": prefixed(state, "net."),
            "averaged_model": {**prefixed(ema, "module."), "n_averaged": torch.tensor(4)},
        },
    ):
        assert_loaded(load_nvsubquadratic_checkpoint(tiny(), checkpoint), state)
        assert_loaded(load_nvsubquadratic_checkpoint(tiny(), checkpoint, ema=True), ema)


def test_missing_ema_and_only_ema():
    state = randomized_state(1)
    with pytest.raises(ValueError, match=r"no EMA weights.*found only \['state_dict'\] with prefix 'net.'"):
        load_nvsubquadratic_checkpoint(tiny(), lightning(prefixed(state, "net.")), ema=True)
    with pytest.raises(ValueError, match="pass ema=True"):
        load_nvsubquadratic_checkpoint(tiny(), {"state_dict_ema": state})


def test_ambiguous_copies_need_a_prefix():
    a, b = randomized_state(1), randomized_state(2)
    checkpoint = {"state_dict": {**prefixed(a, "net."), **prefixed(b, "model.")}}
    with pytest.raises(ValueError, match="several different copies"):
        load_nvsubquadratic_checkpoint(tiny(), checkpoint)
    assert_loaded(load_nvsubquadratic_checkpoint(tiny(), checkpoint, prefix="model."), b)
    same = {"state_dict": {**prefixed(a, "net."), **prefixed(a, "model.")}}  # an aliased sub-module
    assert_loaded(load_nvsubquadratic_checkpoint(tiny(), same), a)


def test_mismatches_are_listed():
    state = randomized_state(1)
    missing = {k: v for k, v in state.items() if k != "out_norm.weight"}
    with pytest.raises(ValueError, match=r"no model weights .*missing 1 keys: \['out_norm.weight'\]"):
        load_nvsubquadratic_checkpoint(tiny(), lightning(prefixed(missing, "net.")))
    extra = {**state, "register_neck.weight": torch.zeros(8, 32)}
    with pytest.raises(ValueError, match=r"unexpected keys \['register_neck.weight'\]"):
        load_nvsubquadratic_checkpoint(tiny(), {"state_dict": prefixed(extra, "net.")})
    with pytest.raises(
        ValueError, match=r"wrong shapes \['out_proj.weight: checkpoint \(5, 32\), model \(7, 32\)"
    ):
        load_nvsubquadratic_checkpoint(tiny(num_classes=7), state)
    with pytest.raises(ValueError, match="contains no tensors"):
        load_nvsubquadratic_checkpoint(tiny(), {"epoch": 1})
    with pytest.raises(TypeError, match="path_or_checkpoint must be a file path or a mapping"):
        load_nvsubquadratic_checkpoint(tiny(), [1, 2])
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        load_nvsubquadratic_checkpoint("net", state)


def test_exclude_loads_everything_but_a_new_head():
    state = randomized_state(1)
    model = load_nvsubquadratic_checkpoint(
        tiny(num_classes=9), lightning(prefixed(state, "net.")), exclude=("out_proj.",)
    )
    for key, value in model.state_dict().items():
        if not key.startswith("out_proj."):
            assert torch.equal(value, state[key]), key
    assert model.out_proj.weight.shape == (9, 32)


def test_find_state_dicts_reports_locations():
    state = randomized_state(1)
    found = find_state_dicts({"state_dict": prefixed(state, "net."), "ema": state}, list(state))
    assert (("state_dict",), "net.", False) in found and (("ema",), "", True) in found
    with pytest.raises(ValueError, match="expected_keys is empty"):
        extract_state_dict(state, [])


def test_files_are_read_safely(tmp_path):
    state = randomized_state(1)
    path = tmp_path / "epoch=3-step=120.ckpt"
    torch.save(lightning(prefixed(state, "net.")), path)
    assert_loaded(load_nvsubquadratic_checkpoint(tiny(), path), state)
    from safetensors.torch import save_file

    save_file(prefixed(state, "model."), str(tmp_path / "weights.safetensors"))
    assert_loaded(load_nvsubquadratic_checkpoint(tiny(), str(tmp_path / "weights.safetensors")), state)

    class Exploit:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "pwned"),))

    torch.save(lightning(prefixed(state, "net."), hyper_parameters={"x": Exploit()}), tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="(?s)refused to load.*posix.mkdir.*could run code"):
        load_nvsubquadratic_checkpoint(tiny(), tmp_path / "evil.ckpt")
    assert not (tmp_path / "pwned").exists()


@requires_reference
@pytest.mark.parity
def test_reference_lightning_checkpoint_gives_the_reference_logits():
    from tests.reference import build_reference
    from vit5.networks.presets import model_config

    cfg = model_config("vit5_small_hybrid", **{**TINY, "num_blocks": 2, "rope_impl": "nvsubquadratic"})
    torch.manual_seed(0)
    reference = randomize_(build_reference(cfg), seed=3).eval()
    checkpoint = lightning(prefixed(reference.state_dict(), "net."))
    ours = load_nvsubquadratic_checkpoint(
        create_model("vit5_small_hybrid", **{**TINY, "num_blocks": 2}), checkpoint
    ).eval()
    x = torch.randn(2, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_parity(ours({"input": x})["logits"], reference({"input": x, "condition": None})["logits"])
