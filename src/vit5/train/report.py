"""The evaluation report: per-class precision, recall and F1 beside accuracy (``report.json`` and
``report.csv``); above 100 classes, the most confused pairs instead of a confusion-matrix image."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vit5._io import atomic_write_text
from vit5._text import csv_field

__all__ = ["MATRIX_CLASSES", "classification_report", "write_report"]

#: Up to this many classes the report has a confusion-matrix image; above, the most confused pairs.
MATRIX_CLASSES = 100


def _ratio(top: float, bottom: float) -> float | None:
    return None if bottom == 0 else top / bottom


def classification_report(confusion: np.ndarray, names: Sequence[str], pairs: int = 20) -> dict[str, Any]:
    """Per-class precision / recall / F1 / support of ``confusion`` (rows: true class, columns:
    predicted), their macro and support-weighted means, and the ``pairs`` most confused (true,
    predicted) pairs. A class without images (recall) or predictions (precision) has ``None``."""
    matrix = np.asarray(confusion, dtype=np.int64)
    support, predicted, hits = matrix.sum(1), matrix.sum(0), np.diag(matrix)
    classes = []
    for k, name in enumerate(names):
        precision, recall = _ratio(hits[k], predicted[k]), _ratio(hits[k], support[k])
        f1 = None
        if precision is not None and recall is not None:
            f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        classes.append({"class": name, "precision": precision, "recall": recall, "f1": f1,
                        "support": int(support[k])})  # fmt: skip

    def mean(key: str, weighted: bool) -> float | None:
        rows = [(row[key], row["support"]) for row in classes if row[key] is not None and row["support"] > 0]
        if not rows:
            return None
        weights = [w if weighted else 1 for _, w in rows]
        return float(sum(v * w for (v, _), w in zip(rows, weights)) / sum(weights))

    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None, kind="stable")[::-1][:pairs]
    confused = [
        {"true": names[i], "predicted": names[j], "count": int(off[i, j]),
         "fraction_of_true": float(off[i, j] / support[i]) if support[i] else None}
        for i, j in zip(*np.unravel_index(order, off.shape)) if off[i, j] > 0
    ]  # fmt: skip
    total = int(matrix.sum())
    return {
        "accuracy": float(hits.sum() / total) if total else None,
        "count": total,
        "macro": {key: mean(key, False) for key in ("precision", "recall", "f1")},
        "weighted": {key: mean(key, True) for key in ("precision", "recall", "f1")},
        "classes": classes,
        "most_confused": confused,
    }


def _number(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6f}"


def write_report(out: str | Path, report: dict[str, Any], extra: dict[str, Any] | None = None) -> list[Path]:
    """``report.json`` (everything) and ``report.csv`` (one row per class) in ``out``; above
    :data:`MATRIX_CLASSES` classes also ``confused_pairs.csv``. Returns the files written."""
    out = Path(out)
    written = [atomic_write_text(out / "report.json", json.dumps({**(extra or {}), **report}, indent=1))]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class", "precision", "recall", "f1", "support"])
    for row in report["classes"]:
        writer.writerow([csv_field(row["class"]), _number(row["precision"]), _number(row["recall"]), _number(row["f1"]),
                         row["support"]])  # fmt: skip
    written.append(atomic_write_text(out / "report.csv", buffer.getvalue()))
    if len(report["classes"]) > MATRIX_CLASSES:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["true", "predicted", "count", "fraction_of_true"])
        for pair in report["most_confused"]:
            writer.writerow(
                [
                    csv_field(pair["true"]),
                    csv_field(pair["predicted"]),
                    pair["count"],
                    _number(pair["fraction_of_true"]),
                ]
            )
        written.append(atomic_write_text(out / "confused_pairs.csv", buffer.getvalue()))
    return [Path(p) for p in written]
