"""Crash safety and hostile files: SIGKILL at random moments, non-finite losses, crafted pickles."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_cli import QUICK, run_cli, summary_of
from vit5.config import load_config
from vit5.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_weights
from vit5.weights import load_model_and_config as load_model

MARKER = Path("/tmp/vit5-reliability-exploit")


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


@pytest.fixture()
def evil_pickle(tmp_path) -> Path:
    MARKER.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": {"weight": Exploit()}}))
    yield path
    assert not MARKER.exists(), "the crafted pickle ran code"


def test_nonfinite_loss_stops_with_step_and_batch_and_keeps_the_last_good_checkpoint(
    tmp_path, capsys, monkeypatch
):
    from vit5.train import loop

    original = loop.Trainer._forward_loss

    def nan_at_step_three(self, images, labels, micro):
        loss, correct = original(self, images, labels, micro)
        return (loss * float("nan"), correct) if self.step == 3 else (loss, correct)

    monkeypatch.setattr(loop.Trainer, "_forward_loss", nan_at_step_three)
    run = tmp_path / "nan"
    code, _, err = run_cli(["train", "--out", str(run), *QUICK, "train.checkpoint_every_steps=1"], capsys)
    assert code == 2 and "non-finite loss at step 4 (epoch 1, batch 4 of the epoch)" in err
    assert f"checkpoints written before it are kept in {run / 'checkpoints'}" in err
    early = tmp_path / "early"  # no checkpoint yet: the message must not point at one
    code, _, err = run_cli(["train", "--out", str(early), *QUICK], capsys)
    assert code == 2 and "no checkpoint had been written yet" in err and not (early / "checkpoints").exists()
    last = load_checkpoint(run / "checkpoints" / "last")
    assert last.state["progress"]["step"] == 3
    assert all(torch.isfinite(t).all() for t in last.model.values())

    skipping = tmp_path / "skip"
    code, out, err = run_cli(["train", "--out", str(skipping), *QUICK, "--skip-nonfinite"], capsys)
    assert code == 0, err
    assert summary_of(out)["skipped_nonfinite"] == 1
    with open(skipping / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[-1]["skipped_nonfinite"] == "1"
    weights, _ = load_weights(skipping / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_crafted_pickle_is_refused_by_eval_predict_and_python_loaders(evil_pickle, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    for args in (["eval", str(evil_pickle)], ["predict", str(evil_pickle), str(image)]):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and "evil.pt" in err and "run code" in err
    with pytest.raises(CheckpointError, match="run code"):
        load_model(evil_pickle)


def test_crafted_state_file_is_refused_on_resume(evil_pickle, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(["train", "--out", str(run), *QUICK, "--epochs", "1"], capsys)[0] == 0
    state = run / "checkpoints" / "last" / "state.pt"
    state.write_bytes(evil_pickle.read_bytes())
    meta_path = run / "checkpoints" / "last" / "meta.json"
    meta = json.loads(meta_path.read_text())  # an attacker who also fixes the checksum
    meta["files"]["state.pt"] = hashlib.sha256(state.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(run / "checkpoints" / "last")
    code, _, err = run_cli(["train", "--resume", str(run)], capsys)
    assert code == 2 and "refused to load" in err


def test_a_checkpoint_write_cut_by_a_kill_is_cleaned_up_and_best_comes_before_last(
    tmp_path, capsys, monkeypatch
) -> None:
    """A kill while the final epoch writes its checkpoints leaves a ``.tmp-*`` folder (and maybe an
    ``.old-*`` one); the resumed run has nothing left to train, yet removes them. ``best`` is
    written before ``last``, so a kill between the two resumes before that epoch and writes both."""
    from vit5.train import loop

    written: list[str] = []
    original = loop.save_checkpoint
    monkeypatch.setattr(
        loop, "save_checkpoint", lambda root, name, **kw: written.append(name) or original(root, name, **kw)
    )
    run = tmp_path / "run"
    assert run_cli(["train", "--out", str(run), *QUICK, "--epochs", "1"], capsys)[0] == 0
    assert written == ["best", "last"]  # the first epoch always improves on nothing
    checkpoints = run / "checkpoints"
    partial = checkpoints / ".tmp-best-123-456"
    partial.mkdir()
    (partial / ".model.safetensors.abc.tmp").write_bytes(b"half a file")
    (checkpoints / ".old-best-789").mkdir()
    written.clear()
    assert run_cli(["train", "--resume", str(run)], capsys)[0] == 0
    assert written == []  # nothing was trained again
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best", "last"]
    assert load_checkpoint(checkpoints / "best").meta["epoch"] == 1


def _assert_run_readable(run: Path) -> None:
    """Whatever the moment of the kill, every file of the run directory is complete."""
    if (run / "config.yaml").exists():
        load_config(run / "config.yaml")
    if (run / "metrics.csv").exists():
        with open(run / "metrics.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert all(row["epoch"] and row["test_acc"] for row in rows)
    if (run / "curves.png").exists():
        assert (run / "curves.png").read_bytes()[-8:] == b"IEND\xaeB`\x82"
    if any((run / "checkpoints" / name).exists() for name in ("last", "prev")):
        latest_checkpoint(run)


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "vit5", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


def _wait_for_training(run: Path, process: subprocess.Popen, log_size: int, timeout: float = 600) -> None:
    """Block until the process has logged something new (it is past its start-up) or has exited."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if (run / "log.txt").exists() and (run / "log.txt").stat().st_size > log_size:
            return
        time.sleep(0.05)


def test_sigkill_at_random_moments_never_corrupts_the_run_and_resume_is_exact(tmp_path):
    _kill_and_resume(
        tmp_path, [*QUICK, "--epochs", "2", "train.checkpoint_every_steps=1", "train.ema_decay=0.9"]
    )


@pytest.mark.slow  # ~1-2 min on 2 cores
def test_sigkill_during_a_finetune_at_a_new_resolution_and_resume_is_exact(tmp_path):
    from tests.train.test_finetune import write_official_checkpoint

    source = tmp_path / "official.pth"
    write_official_checkpoint(source)
    _kill_and_resume(tmp_path, [
        "--finetune", str(source), "--ema", "--image-size", "48", "--dataset", "digits", "--epochs", "2",
        "--batch-size", "32", "data.max_train_images=128", "data.max_test_images=64", "train.log_every_seconds=0",
        "train.checkpoint_every_steps=1", "train.ema_decay=0.9", "optim.layer_decay=0.7", "schedule.name=wsd",
        "schedule.stable_fraction=0.5", "data.repeated_aug=2", "data.randaugment=rand-m9-mstd0.5-inc1",
        "data.random_erasing=0.25", "data.augment=shift",
    ])  # fmt: skip


def _kill_and_resume(tmp_path: Path, config: list[str]) -> None:
    """Kill a run with SIGKILL at random moments and resume it: it must end bit-identical to an
    uninterrupted run of ``config``."""
    straight = tmp_path / "straight"
    started = time.time()
    reference = _start(["--out", str(straight), *config])
    assert reference.wait(timeout=900) == 0, reference.stderr.read()[-2000:]
    duration = time.time() - started  # kill moments scale with it: fast and slow machines alike

    run, rng, kills = tmp_path / "killed", random.Random(1234), 0
    process = _start(["--out", str(run), *config])
    while True:
        if kills < 4:
            if kills == 0:  # the first kill lands anywhere in start-up or the first steps
                time.sleep(rng.uniform(0.05, 0.5) * duration)
            else:  # later ones at a random moment of training, checkpointing or evaluation
                size = (run / "log.txt").stat().st_size if (run / "log.txt").exists() else 0
                _wait_for_training(run, process, size)
                time.sleep(rng.uniform(0.0, 0.25) * duration)
        if kills < 4 and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            _assert_run_readable(run)
            resumable = (run / "config.yaml").exists()
            process = _start(["--resume", str(run)] if resumable else ["--out", str(run), *config])
            continue
        assert process.wait(timeout=900) == 0, process.stderr.read()[-2000:]
        break
    assert kills >= 2, "the run finished before it could be interrupted; lengthen it"
    _assert_run_readable(run)
    a = load_checkpoint(straight / "checkpoints" / "last")
    b = load_checkpoint(run / "checkpoints" / "last")
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]), key
    for key in a.ema:
        assert torch.equal(a.ema[key], b.ema[key]), key
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_acc"] == json.loads((straight / "summary.json").read_text())["test_acc"]
    assert not list(run.rglob("*.tmp")) and not list((run / "checkpoints").glob(".tmp-*"))


def test_asking_for_missing_ema_weights_is_an_error_naming_the_file(tmp_path, capsys):
    run, ema_run = tmp_path / "run", tmp_path / "ema"
    assert run_cli(["train", "--out", str(run), *QUICK, "--epochs", "1"], capsys)[0] == 0
    ema_args = ["train", "--out", str(ema_run), *QUICK, "--epochs", "1", "train.ema_decay=0.9"]
    assert run_cli(ema_args, capsys)[0] == 0
    for source in (run, run / "checkpoints" / "last" / "model.safetensors"):
        with pytest.raises(CheckpointError, match="EMA") as error:
            load_model(source, ema=True)
        assert str(run) in str(error.value)
        code, _, err = run_cli(["eval", str(source), "--ema"], capsys)
        assert code == 2 and "EMA" in err and len(err.strip().splitlines()) == 1
    assert load_model(ema_run / "checkpoints" / "last" / "ema.safetensors", ema=True).ema
    loaded = load_model(ema_run, ema=True)
    assert loaded.ema
    weights, _ = load_weights(ema_run / "checkpoints" / "last" / "ema.safetensors")
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in weights.items())
