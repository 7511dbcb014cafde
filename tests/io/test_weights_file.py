"""Weight files are read without running code: weights_only pickles, inert foreign objects."""

from __future__ import annotations

import argparse
import builtins
import os
import subprocess
import sys

import pytest
import torch

from vit5.io import CheckpointError, load_pickle_inert, plain_data, read_weights_file, torch_load_safely


def test_deit_style_args_namespace_is_accepted(tmp_path):
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.1, model="vit5_small"),
                "optimizer": {"state": {0: {"exp_avg": torch.zeros(2)}}, "param_groups": []}}, tmp_path / "c.pth")  # fmt: skip
    loaded = torch_load_safely(tmp_path / "c.pth")
    assert isinstance(loaded["args"], argparse.Namespace) and loaded["args"].model == "vit5_small"
    assert torch.equal(read_weights_file(tmp_path / "c.pth")["model"]["w"], torch.ones(2))


def test_omegaconf_hyper_parameters_read_as_plain_data(tmp_path):
    from omegaconf import OmegaConf

    hyper = OmegaConf.create(
        {"net": {"__target__": "x.Y", "dims": [1, 2, {"c": 3.5}], "name": None}, "lr": 0.1}
    )
    torch.save({"state_dict": {"net.w": torch.ones(1)}, "hyper_parameters": hyper}, tmp_path / "l.ckpt")
    with pytest.raises(CheckpointError, match="refused to load"):
        torch_load_safely(tmp_path / "l.ckpt")
    loaded = load_pickle_inert(tmp_path / "l.ckpt")
    assert plain_data(loaded["hyper_parameters"]) == {
        "net": {"__target__": "x.Y", "dims": [1, 2, {"c": 3.5}], "name": None}, "lr": 0.1,
    }  # fmt: skip
    assert torch.equal(loaded["state_dict"]["net.w"], torch.ones(1))


CALLS = [
    (os.system, lambda marker: (f"touch {marker}",)),
    (subprocess.call, lambda marker: (["touch", str(marker)],)),
    (builtins.exec, lambda marker: (f"open({str(marker)!r}, 'w').close()",)),
    (builtins.eval, lambda marker: (f"open({str(marker)!r}, 'w')",)),
    (open, lambda marker: (str(marker), "w")),
]


@pytest.mark.parametrize("call, arguments", CALLS, ids=lambda c: getattr(c, "__name__", ""))
@pytest.mark.parametrize("zip_format", [True, False])
def test_crafted_pickles_are_refused_and_run_nothing(tmp_path, call, arguments, zip_format):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (call, arguments(marker))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "hyper_parameters": {"x": Payload()}}, path,
               _use_new_zipfile_serialization=zip_format)  # fmt: skip
    for reader in (torch_load_safely, load_pickle_inert, lambda p: read_weights_file(p, inert=True)):
        with pytest.raises(CheckpointError, match="refused to load") as error:
            reader(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert not marker.exists()


def test_truncated_and_foreign_files_are_one_line_errors(tmp_path):
    path = tmp_path / "c.pth"
    torch.save({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    for reader in (torch_load_safely, load_pickle_inert, read_weights_file):
        with pytest.raises(CheckpointError, match="c.pth: ") as error:
            reader(path)
        assert "\n" not in str(error.value)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a weights file"):
        read_weights_file(tmp_path / "notes.txt")
    with pytest.raises(CheckpointError, match="is a directory"):
        read_weights_file(tmp_path)


def test_import_vit5_does_not_import_training_code():
    code = "import sys, vit5, vit5.weights, vit5.io; print(sorted(m for m in sys.modules if m.startswith('vit5.train')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
