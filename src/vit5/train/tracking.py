"""Experiment trackers: ``--log tensorboard,wandb,mlflow`` (any subset; ``metrics.csv`` is always written).

Each tracker receives the training loss, learning rate, gradient norm and throughput (every
``train.log_every_steps`` optimizer steps), the validation top-1 / top-5 / loss (EMA too) after
each epoch, ``curves.png`` and ``confusion.png`` as images, and the resolved config flattened to
hyper-parameters (within each backend's limits). Only rank 0 logs under DDP.

``--resume`` continues the same tracker run: the run ids are stored in the run directory
(``trackers.json``); TensorBoard reopens its folder with ``purge_step`` (events after the resume
step are dropped), W&B resumes the same id (``resume="allow"``), MLflow the same ``run_id`` and
skips steps it has already logged. Where the runs go: TensorBoard ``RUN/tensorboard``; W&B as
configured by its environment (``WANDB_PROJECT`` default ``vit5``, ``WANDB_MODE``, files under
``RUN``); MLflow ``MLFLOW_TRACKING_URI`` (default ``RUN/mlruns``), experiment
``MLFLOW_EXPERIMENT_NAME`` (default ``vit5``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vit5._extras import require
from vit5._io import atomic_write_text

__all__ = ["TRACKERS", "Trackers", "flatten", "parse_trackers"]

TRACKERS = ("tensorboard", "wandb", "mlflow")
IDS_FILE = "trackers.json"


def parse_trackers(value: Any) -> list[str]:
    """``"tensorboard,wandb"`` (or a list) as a checked list of tracker names; None / "" / "none" -> []."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    if names == ["none"]:
        return []
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise ValueError(
            f"--log / train.log: unknown tracker {unknown[0]!r}; expected any of {', '.join(TRACKERS)}"
        )
    return list(dict.fromkeys(names))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optim.lr": 1e-3, ...}``: a nested config as dotted keys (lists as their JSON text)."""
    out: dict[str, Any] = {}
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    value = json.dumps(tree) if isinstance(tree, (list, tuple)) else tree
    return {prefix[:-1]: value}


class _TensorBoard:
    def __init__(self, run_dir: Path, config: dict[str, Any], start_step: int, ids: dict[str, Any]) -> None:
        require("tensorboard", "tensorboard", "--log tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        # events after the checkpoint (step > start_step) were logged by the process that died: dropped
        self.writer = SummaryWriter(
            str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None
        )
        if not start_step:
            text = "\n".join(f"    {key}: {value}" for key, value in config.items())
            self.writer.add_text("config", text, 0)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def image(self, name: str, path: Path, step: int) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image(name, pixels, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run_dir: Path, config: dict[str, Any], start_step: int, ids: dict[str, Any]) -> None:
        self.wandb = require("wandb", "wandb", "--log wandb")
        run_id = ids.get("wandb") or f"{run_dir.name[:48]}-{os.urandom(4).hex()}"
        ids["wandb"] = run_id
        self.run = self.wandb.init(project=os.environ.get("WANDB_PROJECT", "vit5"), name=run_dir.name, id=run_id,
                                   resume="allow", dir=str(run_dir), config=config)  # fmt: skip

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def image(self, name: str, path: Path, step: int) -> None:
        self.run.log({name: self.wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    MAX_PARAMS = 100  # per log_batch call
    MAX_VALUE = 500  # characters of a parameter value (MLflow's limit before 2.x raised it)

    def __init__(self, run_dir: Path, config: dict[str, Any], start_step: int, ids: dict[str, Any]) -> None:
        mlflow = require("mlflow", "mlflow", "--log mlflow")
        from mlflow.entities import Metric, Param

        self.Metric = Metric
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
        self.client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        self.logged: dict[str, int] = {}
        if ids.get("mlflow"):
            self.run_id = ids["mlflow"]
            self.client.update_run(self.run_id, status="RUNNING")
            for key in ("train/loss", "val/top1"):
                history = self.client.get_metric_history(self.run_id, key)
                self.logged[key] = max((m.step for m in history), default=-1)
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "vit5")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        ids["mlflow"] = self.run_id
        params = [Param(key[:250], str(value)[: self.MAX_VALUE]) for key, value in config.items()]
        for start in range(0, len(params), self.MAX_PARAMS):
            self.client.log_batch(self.run_id, params=params[start : start + self.MAX_PARAMS])

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        first = next(iter(values), None)
        if first is not None and step <= self.logged.get(first, -1):
            return  # logged before the run was resumed
        now = int(time.time() * 1000)
        metrics = [self.Metric(key, float(value), now, step) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def image(self, name: str, path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path="images")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


_BACKENDS = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}


class Trackers:
    """The trackers of one run (none: every call is a no-op)."""

    def __init__(self, names: Sequence[str], run_dir: str | os.PathLike, config: Mapping[str, Any],
                 start_step: int = 0) -> None:  # fmt: skip
        self.run_dir = Path(run_dir)
        self.names = parse_trackers(list(names))
        path = self.run_dir / IDS_FILE
        ids: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        flat = flatten(config)
        self.backends = [_BACKENDS[name](self.run_dir, flat, start_step, ids) for name in self.names]
        if self.names:
            atomic_write_text(path, json.dumps(ids, indent=1))

    def __bool__(self) -> bool:
        return bool(self.backends)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        clean = {key: float(value) for key, value in values.items() if value == value and value is not None}
        for backend in self.backends:
            backend.scalars(clean, step)

    def image(self, name: str, path: Path, step: int) -> None:
        if Path(path).is_file():
            for backend in self.backends:
                backend.image(name, Path(path), step)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
        self.backends = []
