"""Checkpoints: round trip, checksums, fallback, and refusal of code-carrying pickles."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from vit5.train.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
    torch_load_safely,
)


def tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "a.weight": torch.randn(4, 3, generator=g),
        "b": torch.arange(5),
        "c": torch.randn(2, generator=g).bfloat16(),
    }


def write(root, name="last", seed=0, step=1):
    return save_checkpoint(root, name, model=tensors(seed), ema=tensors(seed + 1), meta={"step": step, "config": {"x": 1}},
                           state={"optimizer": {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.1}]},
                                  "progress": {"step": step}})  # fmt: skip


def test_round_trip(tmp_path):
    path = write(tmp_path)
    assert sorted(os.listdir(path)) == ["ema.safetensors", "meta.json", "model.safetensors", "state.pt"]
    ckpt = load_checkpoint(path)
    for key, value in tensors(0).items():
        assert torch.equal(ckpt.model[key], value) and ckpt.model[key].dtype == value.dtype
    assert torch.equal(ckpt.ema["a.weight"], tensors(1)["a.weight"])
    assert ckpt.state["progress"]["step"] == 1 and ckpt.config == {"x": 1}


def test_weights_file_carries_its_config(tmp_path):
    save_weights(
        tmp_path / "w.safetensors", tensors(), {"config": {"model": {"a": 1}}, "data": {"name": "digits"}}
    )
    state, meta = load_weights(tmp_path / "w.safetensors")
    assert meta["config"] == {"model": {"a": 1}} and meta["data"]["name"] == "digits"
    assert torch.equal(state["b"], torch.arange(5))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_weights_are_detected_and_named(tmp_path, damage):
    path = tmp_path / "w.safetensors"
    save_weights(path, tensors(), {})
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-3] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="w.safetensors"):
        load_weights(path)


def test_damaged_checkpoint_file_is_reported_and_resume_falls_back(tmp_path, caplog):
    write(tmp_path, seed=0, step=1)
    write(tmp_path, seed=5, step=2)  # the first one becomes "prev"
    assert (tmp_path / "prev").is_dir()
    state = tmp_path / "last" / "state.pt"
    state.write_bytes(state.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="state.pt: checksum mismatch"):
        load_checkpoint(tmp_path / "last")
    run = tmp_path.parent / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("last", "prev"):
        os.replace(tmp_path / name, run / "checkpoints" / name)
    with caplog.at_level("WARNING"):
        ckpt = latest_checkpoint(run)
    assert ckpt.state["progress"]["step"] == 1 and "resuming from the previous one" in caplog.text


def test_no_usable_checkpoint_lists_every_failure(tmp_path):
    with pytest.raises(
        CheckpointError, match="no usable checkpoint.*last: does not exist.*prev: does not exist"
    ):
        latest_checkpoint(tmp_path)


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/vit5-exploit-marker")


def test_crafted_pickle_is_refused_and_never_runs(tmp_path):
    MARKER.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"state": Exploit()}))
    with pytest.raises(CheckpointError, match="refused to load"):
        torch_load_safely(path)
    assert not MARKER.exists()


def test_meta_of_another_format_is_rejected(tmp_path):
    path = write(tmp_path)
    meta = json.loads((path / "meta.json").read_text())
    meta["format"] = "something-else"
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a vit5 checkpoint"):
        load_checkpoint(path)


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    write(tmp_path, seed=0, step=1)
    import vit5.io.run as module  # the run-checkpoint layout lives there

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "file_digest", boom)
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path, seed=3, step=2)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last").state["progress"]["step"] == 1
