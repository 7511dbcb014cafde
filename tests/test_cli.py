"""The `vit5` command end to end: train, resume, eval, predict, info, errors, DDP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vit5.cli import main
from vit5.config import load_config
from vit5.train.checkpoint import load_checkpoint, load_weights

# A run small enough for a test: 128 digits, a 2-block hybrid of width 32, 2 epochs.
QUICK = [
    "--epochs", "2", "--batch-size", "32", "data.max_train_images=128", "data.max_test_images=64",
    "model.hidden_dim=32", "model.num_blocks=2", "model.siren_hidden_dim=8", "train.log_every_seconds=0",
]  # fmt: skip


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def summary_of(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_train_writes_a_complete_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "--out", str(run), *QUICK], capsys)
    assert code == 0, err
    summary = summary_of(out)
    assert {"test_acc", "run_dir", "seconds"} <= set(summary) and summary["run_dir"] == str(run)
    assert 0.0 <= summary["test_acc"] <= 1.0 and summary["steps"] == 8
    for name in ("config.yaml", "metrics.csv", "curves.png", "log.txt", "summary.json"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,lr,train_loss") and len(rows) == 3
    last = load_checkpoint(run / "checkpoints" / "last")
    assert last.meta["epoch"] == 2 and last.state["progress"]["step"] == 8
    assert (run / "checkpoints" / "best" / "model.safetensors").is_file()
    assert "img/s" in err and "ETA" in err  # progress lines with rate and ETA
    # every epoch line has them too (short epochs print no step lines)
    epoch_lines = [line for line in err.splitlines() if "test acc" in line]
    assert len(epoch_lines) == 2 and all("img/s" in line and "ETA" in line for line in epoch_lines)
    # the run directory refuses to be overwritten
    code, _, err = run_cli(["train", "--out", str(run), *QUICK], capsys)
    assert code == 2 and "already holds a run" in err


def test_interrupted_run_resumes_to_identical_weights(tmp_path, capsys, monkeypatch):
    common = [*QUICK, "train.checkpoint_every_steps=1", "train.ema_decay=0.9", "train.mixup=0.2",
              "model.dropout_rate=0.1", "model.max_drop_path_rate=0.1"]  # fmt: skip
    straight = tmp_path / "straight"
    assert run_cli(["train", "--out", str(straight), *common], capsys)[0] == 0

    from vit5.train import loop

    original = loop.Trainer._optimizer_step

    def crash_after_five(self, batches, batch_index):
        if self.step == 5:
            raise KeyboardInterrupt("simulated crash")
        return original(self, batches, batch_index)

    interrupted = tmp_path / "interrupted"
    monkeypatch.setattr(loop.Trainer, "_optimizer_step", crash_after_five)
    code, _, err = run_cli(["train", "--out", str(interrupted), *common], capsys)
    assert (
        code == 130
        and f"interrupted; continue from its last checkpoint with `vit5 train --resume {interrupted}`" in err
    )
    monkeypatch.setattr(loop.Trainer, "_optimizer_step", original)
    assert load_checkpoint(interrupted / "checkpoints" / "last").state["progress"]["step"] == 5
    # --workers may change on resume: per-sample seeding makes the batches independent of it
    code, out, err = run_cli(["train", "--resume", str(interrupted), "--workers", "1"], capsys)
    assert code == 0, err
    assert load_config(interrupted / "config.yaml").data.num_workers == 1
    a = load_checkpoint(straight / "checkpoints" / "last")
    b = load_checkpoint(interrupted / "checkpoints" / "last")
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]), key
    for key in a.ema:
        assert torch.equal(a.ema[key], b.ema[key]), key
    assert summary_of(out)["test_acc"] == json.loads((straight / "summary.json").read_text())["test_acc"]
    assert (straight / "metrics.csv").read_text().count("\n") == (
        interrupted / "metrics.csv"
    ).read_text().count("\n")


@pytest.mark.parametrize(
    "args, message",
    [
        (["model.hiden_dim=3"], "has no key 'hiden_dim'"),
        (["optim.lr=abc"], "optim.lr must be a positive number"),
        (["--dataset", "fashion-mnist", "--data-dir", "/nonexistent"], "Fashion-MNIST not found"),
        (["--dataset", "imagefolder"], "needs --data-dir"),
        (["data.image_size=18"], "divisible by patch_size"),
    ],
)
def test_train_errors_are_one_line_messages(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setattr("vit5.data.sources.FASHION_MNIST_DIRS", ("/nonexistent-debian",))
    code, _, err = run_cli(["train", "--out", str(tmp_path / "new" / "r"), *QUICK, *args], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "new").exists()  # a run that never started leaves no folders behind


def test_a_failed_start_keeps_a_directory_the_user_made(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    code, _, err = run_cli(["train", "--out", str(mine), *QUICK, "--epochs", "0"], capsys)
    assert code == 2 and "schedule.epochs must be an int >= 1, got 0" in err
    assert (mine / "notes.txt").read_text() == "keep"
    code, _, err = run_cli(["train", "--out", str(tmp_path / "typo"), *QUICK, "--epochs", "0"], capsys)
    assert code == 2 and not (tmp_path / "typo").exists()


def test_a_run_config_yaml_reproduces_the_run(trained_run, tmp_path, capsys):
    again = tmp_path / "again"
    code, out, err = run_cli(
        ["train", "--config", str(trained_run / "config.yaml"), "--out", str(again)], capsys
    )
    assert code == 0, err
    assert load_config(again / "config.yaml") == load_config(trained_run / "config.yaml")
    first, _ = load_weights(trained_run / "checkpoints" / "last" / "model.safetensors")
    second, _ = load_weights(again / "checkpoints" / "last" / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_a_model_section_that_builds_no_module_is_an_error(tmp_path, capsys):
    path = tmp_path / "cfg.py"
    path.write_text("model = 5\n")
    code, _, err = run_cli(
        ["train", "--config", str(path), "--out", str(tmp_path / "r"), "--epochs", "1"], capsys
    )
    assert code == 2 and "must build a torch.nn.Module" in err and "gave int 5" in err
    code, _, err = run_cli(["train", "--config", str(path), "--out", str(tmp_path / "r"), *QUICK], capsys)
    assert code == 2 and "model is int 5, not a section with keys" in err


@pytest.mark.parametrize("dataset, cls", [("cifar10", "CIFAR10"), ("fashion-mnist", "FashionMNIST")])
def test_a_failed_download_is_a_one_line_error(tmp_path, capsys, monkeypatch, dataset, cls):
    from urllib.error import URLError

    def offline(root, train, download):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr("vit5.data.sources.FASHION_MNIST_DIRS", ("/nonexistent-debian",))
    monkeypatch.setattr(f"torchvision.datasets.{cls}", offline)
    args = ["train", "--dataset", dataset, "--data-dir", str(tmp_path / "data"), "--download", *QUICK]
    code, _, err = run_cli([*args, "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"into {tmp_path / 'data'} failed: <urlopen error [Errno -2] Name or service not known>" in err


def test_an_output_path_blocked_by_a_file_is_a_one_line_error(tmp_path, trained_run, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    code, _, err = run_cli(["train", "--out", str(blocker), *QUICK], capsys)
    assert (
        code == 2 and f"cannot create the run directory {blocker}: a file of that name is in the way" in err
    )
    code, _, err = run_cli(["train", "--out", str(blocker / "run"), *QUICK], capsys)
    assert code == 2 and f"cannot create the run directory {blocker / 'run'}: Not a directory" in err
    code, _, err = run_cli(["eval", str(trained_run), "--out", str(blocker)], capsys)
    assert code == 2 and "cannot create the output directory" in err
    assert blocker.read_text() == "mine"
    code, _, err = run_cli(["eval", str(blocker)], capsys)
    assert code == 2 and "not a weights file (expected .safetensors or a torch.save" in err


def test_resume_of_a_non_run_is_an_error(tmp_path, capsys):
    code, _, err = run_cli(["train", "--resume", str(tmp_path)], capsys)
    assert code == 2 and "not a run directory" in err


@pytest.mark.parametrize(
    "extra",
    [
        ["--lr", "0.1"],
        ["--seed", "1"],
        ["--compile"],
        ["--preset", "vit5_tiny_attention"],
        ["optim.lr=0.1"],
        ["--batch-size", "8", "schedule.epochs=2"],
    ],  # fmt: skip
)
def test_resume_refuses_options_that_would_be_ignored(trained_run, capsys, extra):
    before = (trained_run / "metrics.csv").read_bytes()
    code, _, err = run_cli(["train", "--resume", str(trained_run), *extra], capsys)
    assert code == 2 and "--resume continues a run as configured" in err
    assert all(item in err for item in extra if item.startswith("-") or "=" in item)
    assert (trained_run / "metrics.csv").read_bytes() == before


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--out", str(run), *QUICK, "data.max_train_images=256"]) == 0
    return run


def test_eval_prints_accuracy_and_writes_confusion(trained_run, tmp_path, capsys):
    code, out, err = run_cli(["eval", str(trained_run), "--out", str(tmp_path)], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert 0 <= result["top1"] <= result["top5"] <= 1 and result["count"] == 360
    assert set(result["per_class"]) == {str(i) for i in range(10)}
    assert "top-1" in out and (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    weights = trained_run / "checkpoints" / "best" / "model.safetensors"
    code, out, _ = run_cli(["eval", str(weights), "--out", str(tmp_path)], capsys)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["top1"] == result["top1"]


def test_predict_prints_top_k(trained_run, tmp_path, capsys):
    from vit5.data.sources import load_digits

    _, test = load_digits()
    paths = []
    for i, suffix in enumerate(("png", "jpg")):
        path = tmp_path / f"digit{i}.{suffix}"
        Image.fromarray(np.repeat(test.images[i], 3, axis=2)).resize((32, 32)).save(path)
        paths.append(str(path))
    code, out, err = run_cli(["predict", str(trained_run), *paths, "--top-k", "3"], capsys)
    assert code == 0, err
    results = json.loads(out.strip().splitlines()[-1])
    assert [r["image"] for r in results] == paths
    for result in results:
        probabilities = [t["probability"] for t in result["top"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert all(t["label"] in {str(d) for d in range(10)} for t in result["top"])
    code, _, err = run_cli(["predict", str(trained_run), str(tmp_path / "missing.png")], capsys)
    assert code == 1 and "cannot read image" in err
    code, out, _ = run_cli(["predict", str(trained_run), paths[0], "--top-k", "50"], capsys)
    assert (
        code == 0 and len(json.loads(out.strip().splitlines()[-1])[0]["top"]) == 10
    )  # capped at the classes


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "RUN", "x.png", "--top-k", "0"], "--top-k: expected an integer >= 1, got 0"),
        (["predict", "RUN", "x.png", "--top-k", "two"], "--top-k: expected an integer >= 1, got 'two'"),
        (["eval", "RUN", "--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
        (["eval", "RUN", "--workers", "-1"], "--workers: expected an integer >= 0, got -1"),
    ],
)
def test_eval_and_predict_reject_bad_counts(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_info_prints_layout_and_blocks(capsys):
    code, out, _ = run_cli(["info", "--preset", "vit5_small_hybrid"], capsys)
    assert code == 0
    assert "parameters: 22,167,744" in out and "196 patches (14x14)" in out and "9 padding" in out
    assert (
        out.count("Hyena (2D grid)") == 6
        and out.count("attention") == 6
        and "210 tokens (sees padding)" in out
    )
    code, _, err = run_cli(["info"], capsys)
    assert code == 2 and "needs a CHECKPOINT, --preset NAME or --config FILE" in err
    # the same model.* overrides as `vit5 train` (preset arguments such as pattern and mlp_ratio)
    code, out, _ = run_cli(["info", "--preset", "vit5_tiny_hybrid", "model.pattern=A"], capsys)
    assert code == 0 and "Hyena" not in out and out.count("attention") == 4
    code, out, err = run_cli(["info", "--preset", "vit5_tiny_hybrid", "model.patern=A"], capsys)
    assert code == 2 and "model has no key 'patern'" in err


def test_info_accepts_a_python_config(tmp_path, capsys):
    path = tmp_path / "cfg.py"
    path.write_text("data = dict(dataset='digits', image_size=32)\n")
    code, out, _ = run_cli(["info", "--config", str(path), "model.num_blocks=2"], capsys)
    assert code == 0 and "64 patches (8x8)" in out and "block  1" in out and "block  2" not in out


@pytest.mark.skipif(
    shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun"
)
def test_ddp_two_processes_match_one_process(tmp_path):
    common = ["--epochs", "1", "--batch-size", "32", "data.max_train_images=256", "data.max_test_images=64",
              "model.hidden_dim=32", "model.num_blocks=2", "model.siren_hidden_dim=8", "data.augment=none",
              "train.label_smoothing=0.0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    ddp = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "vit5", "train", "--out",
                          str(tmp_path / "ddp"), *common], capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count('"test_acc"') == 1  # only rank 0 prints and writes
    assert "Warning" not in ddp.stderr, ddp.stderr[-3000:]  # no torch noise in the user's log
    single = subprocess.run([sys.executable, "-m", "vit5", "train", "--out", str(tmp_path / "one"), *common],
                            capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    a, _ = load_weights(tmp_path / "ddp" / "checkpoints" / "last" / "model.safetensors")
    b, _ = load_weights(tmp_path / "one" / "checkpoints" / "last" / "model.safetensors")
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    assert json.loads(ddp.stdout.strip().splitlines()[-1])["test_acc"] == pytest.approx(
        json.loads(single.stdout.strip().splitlines()[-1])["test_acc"], abs=1 / 64 + 1e-9
    )


@pytest.mark.parametrize("name", ["digits_hybrid", "vit5_s_pretrain"])
def test_shipped_config_files_load_and_describe(name, capsys):
    code, out, err = run_cli(["info", "--config", name], capsys)  # a packaged recipe, by name
    assert code == 0, err
    assert "parameters:" in out and "block  0" in out


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_weights(run / "checkpoints" / "last" / "model.safetensors")[0]


def test_gradient_accumulation_matches_the_large_batch(tmp_path, capsys):
    common = [*QUICK, "--epochs", "1", "data.augment=none", "train.label_smoothing=0.0"]
    assert run_cli(["train", "--out", str(tmp_path / "big"), *common, "--batch-size", "32"], capsys)[0] == 0
    assert run_cli(["train", "--out", str(tmp_path / "acc"), *common, "--batch-size", "16",
                    "optim.accumulate_steps=2"], capsys)[0] == 0  # fmt: skip
    a, b = _final_weights(tmp_path / "big"), _final_weights(tmp_path / "acc")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_bf16_run(tmp_path, capsys):
    code, out, err = run_cli(
        ["train", "--out", str(tmp_path / "bf16"), *QUICK, "--epochs", "1", "--precision", "bf16"], capsys
    )
    assert code == 0, err
    assert summary_of(out)["test_acc"] is not None
    assert all(
        t.dtype == torch.float32 for t in _final_weights(tmp_path / "bf16").values()
    )  # master weights stay fp32


@pytest.mark.slow
def test_compiled_run(tmp_path, capsys):
    code, out, err = run_cli(
        ["train", "--out", str(tmp_path / "c"), *QUICK, "--epochs", "1", "--compile"], capsys
    )
    assert code == 0, err
    assert "_orig_mod" not in " ".join(_final_weights(tmp_path / "c"))
