"""save_pretrained / push_to_hub against the loopback Hub, loaded back by vit5 and timm."""

from __future__ import annotations

import json

import pytest
import torch

import vit5
from tests.hub.conftest import run_cli, run_python

PUSH_QUICK = """
import json, torch, vit5
torch.manual_seed(0)
net = vit5.create_model("vit5_tiny_attention", num_classes=3, hidden_dim=32, num_blocks=2)
x = torch.rand(2, 32, 32, 3)
url = net.push_to_hub("me/quick", private=True, commit_message="first")
m = vit5.load_model("hf-hub:me/quick")
print(json.dumps({{"url": url, "diff": float((m({{"input": x}})["logits"] - net({{"input": x}})["logits"]).abs().max()),
                  "source": m.pretrained_cfg["source"]}}))
"""


def test_push_to_hub_then_load_model_from_hf_hub(hub, tmp_path):
    out = run_python(hub, tmp_path / "hf", PUSH_QUICK.format())
    assert out["url"].startswith(hub.endpoint + "/me/quick/commit/") and out["diff"] == 0.0
    assert out["source"] == "hf-hub:me/quick"
    repo = hub.repos["me/quick"]
    assert repo.private
    commit = repo.commits[repo.branches["main"]]
    assert {"config.json", "model.safetensors", "README.md"} <= set(commit)
    assert json.loads(commit["config.json"])["architecture"] == "vit5_tiny_attention_patch4_32"

    # --print-config of a fine-tune from the repo needs only its config.json: no weights downloaded
    hub.requests.clear()
    printed = run_cli(hub, tmp_path / "fresh-hf", ["train", "--finetune", "hf-hub:me/quick", "--dataset", "digits",
                                                   "--out", str(tmp_path / "run"), "--print-config"])  # fmt: skip
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert "finetune: hf-hub:me/quick" in printed.stdout and "hidden_dim: 32" in printed.stdout
    fetched = {path.rsplit("/", 1)[-1] for _, path in hub.requests}
    assert "config.json" in fetched and "model.safetensors" not in fetched, hub.requests
    assert not (tmp_path / "run").exists()


PUSH_AND_LOAD = """
import json, torch, timm, vit5
torch.manual_seed(0)
net = vit5.create_model("vit5_tiny_attention", num_classes=3, hidden_dim=32, num_blocks=2)
net.pretrained_cfg = vit5.networks.pretrained_cfg.updated_pretrained_cfg(net.pretrained_cfg, class_names=["cat", "dog", "eft"])
x = torch.rand(2, 3, 32, 32)
ref = net({{"input": x.permute(0, 2, 3, 1)}})["logits"]
url = net.push_to_hub("me/tiny", private=True, commit_message="first")
url_b = vit5.push_to_hub(net, "me/tiny", revision="v2")
out = {{"url": url, "url_b": url_b}}
for source in ("hf-hub:me/tiny", "hf-hub:me/tiny@v2", "hf-hub:me/tiny/model.safetensors"):
    m = vit5.load_model(source)
    out[source] = float((m({{"input": x.permute(0, 2, 3, 1)}})["logits"] - ref).abs().max())
    out[source + " names"] = m.pretrained_cfg["class_names"]
t = timm.create_model("hf-hub:me/tiny").eval()
with torch.no_grad():
    out["timm"] = float((t(x) - ref).abs().max())
out["timm_labels"] = t.pretrained_cfg.get("label_names")
net.save_pretrained({local!r})
d = timm.create_model("local-dir:{local}", pretrained=True).eval()
with torch.no_grad():
    out["local-dir"] = float((d(x) - ref).abs().max())
out["from_pretrained"] = float((vit5.from_pretrained({local!r})({{"input": x.permute(0, 2, 3, 1)}})["logits"] - ref).abs().max())
print(json.dumps(out))
"""


@pytest.mark.slow
def test_push_to_hub_then_vit5_and_timm_load_the_saved_logits(hub, tmp_path):
    out = run_python(hub, tmp_path / "hf", PUSH_AND_LOAD.format(local=str(tmp_path / "saved")))
    assert out["url"].startswith(hub.endpoint + "/me/tiny/commit/")
    for key in ("hf-hub:me/tiny", "hf-hub:me/tiny@v2", "hf-hub:me/tiny/model.safetensors", "timm", "local-dir",
                "from_pretrained"):  # fmt: skip
        assert out[key] <= 1e-6, key
    assert out["hf-hub:me/tiny names"] == ["cat", "dog", "eft"] and out["timm_labels"] == [
        "cat",
        "dog",
        "eft",
    ]
    repo = hub.repos["me/tiny"]
    assert repo.private and set(repo.branches) == {"main", "v2"}
    files = repo.commits[repo.branches["main"]]
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    config = json.loads(files["config.json"])
    assert config["architecture"] == "vit5_tiny_attention_patch4_32"
    assert config["model_args"] == {"hidden_dim": 32, "num_blocks": 2, "num_classes": 3}
    assert config["pretrained_cfg"]["label_names"] == ["cat", "dog", "eft"]
    assert "vit5.from_pretrained" in files["README.md"].decode()


def test_save_pretrained_directory_round_trip_and_config_tree_form(tmp_path):
    torch.manual_seed(0)
    net = vit5.create_model("vit5_tiny_hybrid", hidden_dim=32, num_blocks=2)
    saved = vit5.save_pretrained(net, tmp_path / "preset")
    x = torch.rand(1, 32, 32, 3)
    reloaded = vit5.load_model(saved)
    assert torch.equal(reloaded({"input": x})["logits"], net({"input": x})["logits"])
    reloaded.save_pretrained(tmp_path / "again")  # a loaded model knows its config: saved as the same preset
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["architecture"] == "vit5_tiny_hybrid_patch4_32"
    assert again["model_args"] == {"hidden_dim": 32, "num_blocks": 2}
    tree = vit5.model_config("vit5_tiny_attention", hidden_dim=32, num_blocks=2)
    tree.block_cfg.sequence_mixer_cfg.rope_base = 500.0  # a full tree: saved as vit5_from_config
    other = vit5.instantiate(tree)
    with pytest.raises(ValueError, match="model_config="):
        vit5.save_pretrained(other, tmp_path / "nope")
    vit5.save_pretrained(other, tmp_path / "tree", model_config=tree)
    config = json.loads((tmp_path / "tree" / "config.json").read_text())
    assert config["architecture"] == "vit5_from_config" and "__target__" in config["model_args"]["config"]
    loaded = vit5.load_model(tmp_path / "tree")
    assert torch.equal(loaded({"input": x})["logits"], other({"input": x})["logits"])
    config["model_args"]["config"]["__target__"] = "os.system"
    (tmp_path / "tree" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="os.system"):
        vit5.load_model(tmp_path / "tree")


@pytest.mark.slow
def test_vit5_push_command_pushes_the_best_checkpoint(hub, tmp_path):
    from vit5.io.run import save_checkpoint

    net = vit5.create_model("vit5_tiny_attention", hidden_dim=32, num_blocks=2)
    tree = vit5.model_config("vit5_tiny_attention", hidden_dim=32, num_blocks=2)
    meta = {"config": {"model": vit5.config.to_container(tree)}, "data": {}}
    for name in ("last", "best"):
        save_checkpoint(tmp_path / "run" / "checkpoints", name, model=net.state_dict(), meta=meta)
    result = run_cli(
        hub, tmp_path / "hf", ["push", str(tmp_path / "run"), "me/run", "--commit-message", "from a run"]
    )
    assert result.returncode == 0, result.stderr
    assert "checkpoints/best" in result.stdout + result.stderr
    assert "config.json" in hub.repos["me/run"].commits[hub.repos["me/run"].branches["main"]]
