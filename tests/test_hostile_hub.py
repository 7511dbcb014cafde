"""Hostile Hub repos and saved-model folders (issue 30): a received ``config.json`` is budgeted like
every other file and does not choose what vit5 reads.

The folder attacks run ``vit5 info`` / ``timm.create_model("local-dir:...")`` in a forked child
(6 GiB, one thread, 60 s) and must end in one line; the Hub attack runs a client in a subprocess
against the loopback Hub (``tests/hub/loopback_hub.py``).
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

import vit5
from tests.hub.conftest import hub, run_python  # noqa: F401 (the session fixture)
from tests.test_hostile_inputs import assert_one_line, cli


def _saved(tmp_path, edit):
    torch.manual_seed(0)
    net = vit5.create_model("vit5_tiny_attention", num_classes=3, hidden_dim=32, num_blocks=2)
    folder = vit5.save_pretrained(net, tmp_path / "saved")
    config = json.loads((folder / "config.json").read_text())
    text = edit(config)
    (folder / "config.json").write_text(text if isinstance(text, str) else json.dumps(config))
    return folder


def _huge(config):
    config["model_args"].update(hidden_dim=32768, num_heads=512)


def _many_blocks(config):
    config["model_args"]["num_blocks"] = 10**8


def _deep(config):
    return '{"architecture": ' + "[" * 100_000 + "]" * 100_000 + "}"


def _from_config_conv3d(config):
    from vit5.config import TARGET_KEY

    tree = vit5.networks.presets.model_config(
        "vit5_tiny_attention", hidden_dim=32, num_blocks=2, num_classes=3
    )
    tree = vit5.config.to_container(tree)
    tree["block_cfg"]["mlp_norm_cfg"] = {TARGET_KEY: "torch.nn.Conv3d", "in_channels": 4096, "out_channels": 4096,
                                         "kernel_size": 64}  # fmt: skip
    config.update(architecture="vit5_from_config", model_args={"config": tree})


def _timm_local_dir(folder):
    def run() -> int:
        import timm

        try:
            timm.create_model(f"local-dir:{folder}")
        except ValueError as error:
            print(str(error).splitlines()[0], file=sys.stderr)
            return 2
        return 0

    return run


@pytest.mark.parametrize(
    "edit, needle",
    [(_huge, "more than the budget"), (_many_blocks, "more than 1024 blocks"), (_deep, "nested too deeply"),
     (_from_config_conv3d, "more than the budget")],
    ids=["hidden_dim-32768", "num_blocks-1e8", "deep-json", "from-config-conv3d"],
)  # fmt: skip
def test_a_saved_folder_config_json_is_budgeted(tmp_path, edit, needle):
    pytest.importorskip("timm")
    folder = _saved(tmp_path, edit)
    assert_one_line(tmp_path, cli("info", folder), needle, "config.json" if edit is _deep else str(folder))
    if edit is not _deep:  # timm parses config.json itself first (its RecursionError is timm's)
        assert_one_line(tmp_path, _timm_local_dir(folder), needle)


HUB_CLIENT = """
import json, timm, torch, vit5
out = {}
for repo in ("evil/pointer", "evil/huge"):
    try:
        model = timm.create_model("hf-hub:" + repo)
        out[repo] = "loaded " + str(model.net.pretrained_cfg["source"])
    except ValueError as error:
        out[repo] = str(error)
print(json.dumps(out))
"""


def test_a_hub_config_json_does_not_choose_local_files_or_sizes(hub, tmp_path):  # noqa: F811
    pytest.importorskip("timm")
    torch.manual_seed(0)
    net = vit5.create_model("vit5_tiny_attention", num_classes=3, hidden_dim=32, num_blocks=2)
    folder = vit5.save_pretrained(net, tmp_path / "saved")
    config = json.loads((folder / "config.json").read_text())
    bait = tmp_path / "local-secret.pth"
    bait.write_bytes(b"not weights")  # what the repo points at: must never be read
    pointer = {
        **config,
        "pretrained_cfg": {**config["pretrained_cfg"], "file": str(bait), "url": "http://127.0.0.1:9/x"},
    }
    huge = {**config, "model_args": {**config["model_args"], "hidden_dim": 32768, "num_heads": 512}}
    weights = (folder / "model.safetensors").read_bytes()
    hub.commit("evil/pointer", {"config.json": json.dumps(pointer).encode(), "model.safetensors": weights})
    hub.commit("evil/huge", {"config.json": json.dumps(huge).encode(), "model.safetensors": weights})
    out = run_python(hub, tmp_path / "hf", HUB_CLIENT)
    assert out["evil/pointer"] == "loaded hf-hub:evil/pointer", out
    assert "more than the budget" in out["evil/huge"], out
