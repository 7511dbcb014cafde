"""Run records: ``metrics.csv`` (one row per epoch), ``curves.png`` and ``confusion.png``.

Every file is rewritten atomically, so a crash leaves the previous complete version.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vit5._io import atomic_write, atomic_write_text
from vit5._text import terminal_text

COLUMNS = (
    "epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "test_acc5", "test_acc_ema",
    "skipped_nonfinite", "seconds",
)  # fmt: skip


class MetricsLog:
    """The per-epoch rows of a run, persisted to ``metrics.csv``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if self.path.is_file():
            with open(self.path, newline="") as handle:
                self.rows = [dict(row) for row in csv.DictReader(handle)]

    def truncate(self, epochs_done: int) -> None:
        """Forget rows of epochs that a resumed run will redo."""
        self.rows = [row for row in self.rows if int(row["epoch"]) <= epochs_done]
        self._write()

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append({key: row.get(key, "") for key in COLUMNS})
        self._write()

    def _write(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        for row in self.rows:
            writer.writerow({key: _format(row.get(key, "")) for key in COLUMNS})
        atomic_write_text(self.path, buffer.getvalue())

    def column(self, name: str) -> list[float]:
        return [float(row[name]) if row.get(name) not in ("", None) else float("nan") for row in self.rows]


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _save_figure(figure: Any, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def plot_curves(log: MetricsLog, path: str | os.PathLike, title: str = "") -> Path:
    """Loss and accuracy per epoch (train, test, and EMA test when present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = log.column("epoch")
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, log.column("train_loss"), "o-", label="train")
    loss_ax.plot(epochs, log.column("test_loss"), "s-", label="test")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_ax.plot(epochs, log.column("train_acc"), "o-", label="train")
    acc_ax.plot(epochs, log.column("test_acc"), "s-", label="test")
    ema = log.column("test_acc_ema")
    if not all(np.isnan(ema)):
        acc_ax.plot(epochs, ema, "^-", label="test (EMA)")
    acc_ax.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        figure.suptitle(title)
    _save_figure(figure, Path(path))
    plt.close(figure)
    return Path(path)


def _plot_text(text: object) -> str:
    """A name from a file as plain text in a figure: control characters escaped, ``$`` literal
    (matplotlib would read ``$...$`` as mathtext, and a malformed one fails the whole plot)."""
    return terminal_text(text).replace("$", r"\$")


def plot_confusion(
    matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """A row-normalised confusion matrix (rows: true class, columns: prediction)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = matrix.astype(np.float64)
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    size = max(5.0, min(20.0, 0.45 * n + 2))
    figure, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046)
    if n <= 40:
        labels = [_plot_text(name) for name in class_names]
        ax.set_xticks(range(n), labels, rotation=90)
        ax.set_yticks(range(n), labels)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if counts[i, j]:
                        color = "white" if normalised[i, j] > 0.5 else "black"
                        ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set(xlabel="predicted", ylabel="true", title=_plot_text(title) if title else "confusion matrix")
    _save_figure(figure, Path(path))
    plt.close(figure)
    return Path(path)
