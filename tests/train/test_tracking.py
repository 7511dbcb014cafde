"""Trackers: TensorBoard (read back with its event reader), MLflow (MlflowClient on a sqlite URI) and
W&B (a stand-in module; one real offline run is `slow`), continued by --resume."""

from __future__ import annotations

import json
import sys
import types

import pytest

from vit5.cli import main
from vit5.train.tracking import flatten, parse_trackers

QUICK = ["--batch-size", "32", "data.max_train_images=128", "data.max_test_images=32", "model.hidden_dim=16",
         "model.num_blocks=2", "model.siren_hidden_dim=8", "train.log_every_seconds=0",
         "train.log_every_steps=2"]  # fmt: skip


class StandInWandb(types.ModuleType):
    """Records what vit5 asks of wandb: init keywords, logged dicts with their steps, finish."""

    def __init__(self):
        super().__init__("wandb")
        self.inits, self.logs, self.finished = [], [], 0
        outer = self

        class Run:
            def log(self, values, step=None):
                outer.logs.append((step, dict(values)))

            def finish(self):
                outer.finished += 1

        self.Run = Run

    def init(self, **kwargs):
        self.inits.append(kwargs)
        return self.Run()

    def Image(self, path):  # noqa: N802 - wandb's name
        return ("image", path)


def test_parse_trackers():
    assert parse_trackers("TensorBoard, mlflow") == ["tensorboard", "mlflow"] and parse_trackers(None) == []
    with pytest.raises(ValueError, match="unknown tracker 'comet'"):
        parse_trackers("tensorboard,comet")
    assert flatten({"optim": {"lr": 0.1, "betas": [0.9, 0.99]}}) == {
        "optim.lr": 0.1,
        "optim.betas": "[0.9, 0.99]",
    }


def test_trackers_continue_the_same_runs_after_a_resume(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vit5.train.tracking import Trackers

    wandb = StandInWandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # a sqlite tracking store keeps artifacts under ./mlruns
    Image.new("RGB", (8, 6), (255, 0, 0)).save(tmp_path / "curves.png")
    config = {"optim": {"name": "adamw", "lr": 0.001}, "schedule": {"epochs": 2}}
    first = Trackers(["tensorboard", "wandb", "mlflow"], tmp_path, config)
    for step in (1, 2, 3, 4):
        first.scalars({"train/loss": 1.0 / step, "val/top1": step / 10}, step)
    first.image("curves", tmp_path / "curves.png", 2)
    first.close()  # then the process "dies" after step 4; the checkpoint was at step 2
    again = Trackers(["tensorboard", "wandb", "mlflow"], tmp_path, config, start_step=2)
    for step in (3, 4, 5):
        again.scalars({"train/loss": 2.0 / step, "val/top1": step / 5}, step)
    again.close()
    ids = json.loads((tmp_path / "trackers.json").read_text())
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [step for step, _ in loss] == [1, 2, 3, 4, 5] and loss[2][1] == pytest.approx(
        2 / 3
    )  # purged, rewritten
    assert events.Tags()["images"] == ["curves"]
    client = MlflowClient(tracking_uri=uri)
    history = sorted((m.step, m.value) for m in client.get_metric_history(ids["mlflow"], "val/top1"))
    assert [step for step, _ in history] == [1, 2, 3, 4, 5]  # steps logged before are skipped, not doubled
    assert client.get_run(ids["mlflow"]).data.params == {"optim.name": "adamw", "optim.lr": "0.001",
                                                         "schedule.epochs": "2"}  # fmt: skip
    assert [init["id"] for init in wandb.inits] == [ids["wandb"]] * 2 and wandb.finished == 2
    assert all(init["resume"] == "allow" for init in wandb.inits)
    assert [step for step, _ in wandb.logs if "train/loss" in _] == [1, 2, 3, 4, 3, 4, 5]


@pytest.mark.slow
def test_tensorboard_mlflow_and_wandb_follow_a_resumed_run(tmp_path, capsys, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    wandb = StandInWandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # a sqlite tracking store keeps artifacts under ./mlruns
    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--epochs", "2", "--log", "tensorboard,wandb,mlflow", *QUICK]
    assert main(args) == 0, capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0, capsys.readouterr().err
    ids = json.loads((run / "trackers.json").read_text())
    # TensorBoard: one stream of scalars over both processes (4 steps per epoch)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    assert [e.step for e in events.Scalars("val/top1")] == [4, 8, 12]
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8, 10, 12]
    assert {"curves", "confusion"} <= set(events.Tags()["images"])
    lrs = [e.value for e in events.Scalars("train/lr")]
    assert lrs[0] > lrs[2] > 0
    # MLflow: the same run continued, every step once, the config as parameters
    client = MlflowClient(tracking_uri=uri)
    history = client.get_metric_history(ids["mlflow"], "val/top1")
    assert sorted(m.step for m in history) == [4, 8, 12]
    params = client.get_run(ids["mlflow"]).data.params
    assert params["optim.name"] == "adamw" and params["schedule.epochs"] == "2"
    assert client.get_run(ids["mlflow"]).info.status == "FINISHED"
    # W&B: the same id resumed, per-step scalars, images, finished twice
    assert [init["id"] for init in wandb.inits] == [ids["wandb"]] * 2
    assert (
        all(init["resume"] == "allow" for init in wandb.inits)
        and wandb.inits[0]["config"]["optim.lr"] == 0.002
    )
    steps = [step for step, values in wandb.logs if "val/top1" in values]
    assert steps == [4, 8, 12] and wandb.finished == 2
    assert any(values.get("confusion") == ("image", str(run / "confusion.png")) for _, values in wandb.logs)


def test_a_missing_tracker_package_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    code = main(["train", "--out", str(tmp_path / "run"), "--log", "mlflow", *QUICK])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'vit5[mlflow]'" in err and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_real_wandb_offline_run(tmp_path, capsys, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--epochs", "1", "--log", "wandb", *QUICK]) == 0
    folders = list((run / "wandb").glob("offline-run-*"))
    assert len(folders) == 1
    # wandb >= 0.19 keeps config and history in the offline run's transaction log until `wandb sync`
    log = next(folders[0].glob("*.wandb")).read_bytes()
    assert b"optim.lr" in log and b"val/top1" in log and b"train/grad_norm" in log
    images = sorted(p.name.split("_")[0] for p in (folders[0] / "files" / "media" / "images").glob("*.png"))
    assert images == ["confusion", "curves"]
