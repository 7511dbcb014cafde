"""The evaluation report: per-class precision / recall / F1 and the most confused pairs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from vit5.train.report import classification_report, write_report


def test_per_class_precision_recall_f1(tmp_path):
    # rows: true class, columns: predicted
    confusion = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    report = classification_report(confusion, ["a", "b", "c"])
    a, b, c = report["classes"]
    assert a["precision"] == pytest.approx(8 / 9) and a["recall"] == pytest.approx(0.8)
    assert a["f1"] == pytest.approx(2 * (8 / 9) * 0.8 / (8 / 9 + 0.8)) and a["support"] == 10
    assert b["precision"] == pytest.approx(3 / 5) and b["recall"] == pytest.approx(3 / 4)
    assert c == {"class": "c", "precision": None, "recall": None, "f1": None, "support": 0}
    assert report["accuracy"] == pytest.approx(11 / 14)
    assert report["macro"]["recall"] == pytest.approx((0.8 + 0.75) / 2)
    assert report["weighted"]["recall"] == pytest.approx((0.8 * 10 + 0.75 * 4) / 14)
    assert report["most_confused"][0] == {"true": "a", "predicted": "b", "count": 2, "fraction_of_true": 0.2}
    files = write_report(tmp_path, report, {"top1": 11 / 14})
    assert [f.name for f in files] == ["report.json", "report.csv"]
    rows = list(csv.reader((tmp_path / "report.csv").open()))
    assert rows[0] == ["class", "precision", "recall", "f1", "support"] and rows[3] == ["c", "", "", "", "0"]
    assert json.loads((tmp_path / "report.json").read_text())["top1"] == pytest.approx(11 / 14)


def test_many_classes_list_the_most_confused_pairs(tmp_path):
    k = 120
    confusion = np.eye(k, dtype=np.int64) * 5
    confusion[7, 9] = 4
    confusion[3, 2] = 2
    report = classification_report(confusion, [f"c{i}" for i in range(k)])
    assert [(p["true"], p["predicted"], p["count"]) for p in report["most_confused"]] == [("c7", "c9", 4),
                                                                                         ("c3", "c2", 2)]  # fmt: skip
    names = [f.name for f in write_report(tmp_path, report)]
    assert "confused_pairs.csv" in names
    assert (tmp_path / "confused_pairs.csv").read_text().splitlines()[1] == "c7,c9,4,0.444444"
