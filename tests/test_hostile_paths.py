"""Hostile and broken inputs (issue 30): paths a received file records stay inside the places the
user named — a run's ``data_dir``, manifest rows, ``datasets`` image paths.

Each attack runs in a forked child (one thread, 6 GiB address space, 60 s) as in
``tests/test_hostile_inputs.py``; the test asserts exit code 2, one line on stderr, nothing written.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.data.test_owndata import make_flat_folder
from tests.test_hostile_inputs import assert_one_line, cli, in_child, snapshot
from vit5.io.run_origin import ORIGIN, check_recorded_data_dir, is_own_run, record_origin

TINY = ["--epochs", "1", "--batch-size", "8", "--image-size", "8", "model.hidden_dim=16", "model.num_blocks=2",
        "model.siren_hidden_dim=8", "train.log_every_seconds=0"]  # fmt: skip


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """A finished tiny run on a flat class folder, made by this user here (it has ``origin.json``)."""
    from vit5.cli import main

    base = tmp_path_factory.mktemp("own")
    data = make_flat_folder(base / "pets", per_class=4, size=8)
    run = base / "run"
    assert main(["train", "--dataset", "imagefolder", "--data-dir", str(data), "--out", str(run), *TINY]) == 0
    assert (run / ORIGIN).is_file() and is_own_run(run)
    return run, data


def _received(own_run, tmp_path, data_dir=None):
    """The run as someone else sends it: copied (a new directory), ``data_dir`` set as they chose."""
    run, _ = own_run
    received = tmp_path / "received"
    shutil.copytree(run, received)
    if data_dir is not None:
        config = yaml.safe_load((received / "config.yaml").read_text())
        config["data"]["data_dir"] = data_dir
        (received / "config.yaml").write_text(yaml.safe_dump(config))
    return received


def test_the_own_run_still_evaluates_without_data_dir(own_run):
    run, _ = own_run
    code, out, err = in_child(cli("eval", run, "--out", run.parent / "eval-own"))
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["count"] > 0


@pytest.mark.parametrize(
    "recorded", [None, "/", "../../pets", "~/"], ids=["as-recorded", "root", "dotdot", "home"]
)
def test_a_received_run_does_not_choose_what_eval_reads(own_run, tmp_path, recorded):
    received = _received(own_run, tmp_path, recorded)
    assert not is_own_run(received)
    assert_one_line(tmp_path, cli("eval", received, "--out", tmp_path / "eval"), "pass --data-dir DIR",
                    "config.yaml")  # fmt: skip


def test_a_received_run_evaluates_on_the_data_the_user_names(own_run, tmp_path):
    _, data = own_run
    received = _received(own_run, tmp_path, "/")
    code, out, err = in_child(cli("eval", received, "--data-dir", data, "--out", tmp_path / "eval"))
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["count"] == 12


def test_a_received_run_does_not_choose_what_resume_reads(own_run, tmp_path):
    received = _received(own_run, tmp_path, "/")
    assert_one_line(tmp_path, cli("train", "--resume", received, "--epochs", "2"), "pass --data-dir DIR")


def test_a_moved_marker_or_a_forged_one_is_not_the_own_run(own_run, tmp_path):
    run, _ = own_run
    received = _received(own_run, tmp_path)
    forged = json.loads((run / ORIGIN).read_text())
    forged["run_dir"] = str(received.resolve())  # the attacker guessed where it would be unpacked
    (received / ORIGIN).write_text(json.dumps(forged))
    assert not is_own_run(received)  # the inode differs
    with pytest.raises(ValueError, match="pass --data-dir DIR"):
        check_recorded_data_dir("/data", received, "config.yaml")
    (received / ORIGIN).write_text("[" * 100_000)
    assert not is_own_run(received)
    record_origin(received)  # what a resume with --data-dir writes: from then on the user's own
    assert is_own_run(received) and check_recorded_data_dir("/data", received, "x") == "/data"
    assert check_recorded_data_dir(None, received, "x") is None


def test_documented_caches_are_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    inside = str(tmp_path / "hf" / "datasets" / "pets")
    assert check_recorded_data_dir(inside, None, "x.safetensors") == inside
    with pytest.raises(ValueError, match="x.safetensors records data.data_dir"):
        check_recorded_data_dir(str(tmp_path / "hf" / ".." / "secret"), None, "x.safetensors")


# --------------------------------------------------------------------------------------------------
# Manifest rows and datasets tables


def _png(path, value=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def secret(tmp_path):
    """An image outside the data folder the user names (what a manifest row must not reach)."""
    return _png(tmp_path / "secret" / "b.png", 200)


def _model(tmp_path):
    from tests.test_hostile_inputs import tiny_vit5

    folder = tmp_path / "model"
    folder.mkdir()
    return tiny_vit5(folder, class_names=["a", "b", "c"])


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink"])
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_manifest_rows_stay_in_the_manifest_folder(tmp_path, secret, kind, suffix):
    data = tmp_path / "data"
    _png(data / "a" / "0.png")
    (data / "link.png").symlink_to(secret)
    row = {"absolute": str(secret), "dotdot": "../secret/b.png", "symlink": "link.png"}[kind]
    manifest = data / f"m{suffix}"
    rows = [("a/0.png", "a"), (row, "b")]
    if suffix == ".csv":
        manifest.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    else:
        manifest.write_text("".join(json.dumps({"path": p, "label": label}) + "\n" for p, label in rows))
    model = _model(tmp_path)
    line = assert_one_line(tmp_path, cli("eval", model, "--dataset", "manifest", "--data-dir", manifest,
                                         "--out", tmp_path / "eval"), f"{manifest}, row", "path")  # fmt: skip
    assert ("row 3" if suffix == ".csv" else "row 2") in line


@pytest.mark.parametrize("body", ["[" * 100_000 + "\n", 'path,label\n"' + "x" * 200_000 + '",a\n'],
                         ids=["deep-jsonl", "huge-csv-field"])  # fmt: skip
def test_malformed_manifests_are_one_line(tmp_path, body):
    manifest = tmp_path / ("m.jsonl" if body.startswith("[") else "m.csv")
    manifest.write_text(body)
    model = _model(tmp_path)
    assert_one_line(tmp_path, cli("eval", model, "--dataset", "manifest", "--data-dir", manifest,
                                  "--out", tmp_path / "eval"), str(manifest), "line 1")  # fmt: skip


def test_datasets_table_image_paths_stay_in_its_folder(tmp_path, secret):
    pytest.importorskip("datasets")  # vit5 shows its "Generating train split" bar only on a terminal
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array([{"bytes": None, "path": str(secret)}] * 3, type=image),
                      "label": pa.array(["a", "b", "c"])})  # fmt: skip
    (tmp_path / "dd").mkdir()
    pq.write_table(table, tmp_path / "dd" / "train-00000-of-00001.parquet")
    model = _model(tmp_path)
    assert_one_line(tmp_path, cli("eval", model, "--dataset", "hf", "--data-dir", tmp_path / "dd",
                                  "--out", tmp_path / "eval"), "image path", str(secret))  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Names are data in log lines too


def test_log_arguments_are_escaped_on_the_terminal_and_in_log_txt(tmp_path):
    def run() -> int:
        import logging

        from vit5.cli.common import setup_logging

        setup_logging(tmp_path / "run")
        name = "cat\x1b[2J\n12:00:00 I epoch 9/9  test acc 1.0000\u202e"
        logging.getLogger("vit5.data").warning(
            "%s; using the next image instead (%d left, %.1f s)", name, 3, 0.5
        )
        return 0

    code, _, err = in_child(run)
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "\x1b" not in err and "\u202e" not in err, err
    assert "cat\\x1b[2J\\x0a12:00:00 I epoch" in lines[0] and "(3 left, 0.5 s)" in lines[0]
    assert (tmp_path / "run" / "log.txt").read_text().strip() == lines[0]


@pytest.mark.parametrize("where", ["dataset_dict", "state", "parquet-symlink"])
def test_a_saved_datasets_folder_names_only_files_inside_it(tmp_path, where):
    datasets = pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = datasets.Dataset.from_dict({"image": [{"bytes": _png(tmp_path / "p.png").read_bytes(), "path": None}],
                                        "label": ["a"]})  # fmt: skip
    other = tmp_path / "other"  # someone else's dataset, outside the folder the user names
    datasets.DatasetDict({"train": table}).save_to_disk(str(other))
    data = tmp_path / "data"
    if where == "dataset_dict":
        datasets.DatasetDict({"train": table}).save_to_disk(str(data))
        (data / "dataset_dict.json").write_text(json.dumps({"splits": ["../other/train"]}))
        needle = "dataset_dict.json: split"
    elif where == "state":
        datasets.DatasetDict({"train": table}).save_to_disk(str(data))
        state = json.loads((data / "train" / "state.json").read_text())
        state["_data_files"] = [{"filename": "../../other/train/data-00000-of-00001.arrow"}]
        (data / "train" / "state.json").write_text(json.dumps(state))
        needle = "state.json: data file"
    else:
        data.mkdir()
        pq.write_table(pa.table({"label": ["a"]}), tmp_path / "outside.parquet")
        (data / "train-00000-of-00001.parquet").symlink_to(tmp_path / "outside.parquet")
        needle = "parquet file"
    model = _model(tmp_path)
    assert_one_line(tmp_path, cli("eval", model, "--dataset", "hf", "--data-dir", data, "--out", tmp_path / "eval"),
                    needle)  # fmt: skip


def test_a_received_run_without_checkpoints_does_not_choose_a_local_finetune_file(own_run, tmp_path):
    _, data = own_run
    received = _received(own_run, tmp_path)
    shutil.rmtree(received / "checkpoints")
    bait = tmp_path / "elsewhere.safetensors"
    bait.write_bytes(b"x")
    config = yaml.safe_load((received / "config.yaml").read_text())
    config["train"]["finetune"] = str(bait)
    (received / "config.yaml").write_text(yaml.safe_dump(config))
    assert_one_line(tmp_path, cli("train", "--resume", received, "--data-dir", data), "train.finetune",
                    "start a new run with --finetune")  # fmt: skip


@pytest.mark.parametrize("source", ["hf-hub:org/repo/../../../../tmp/x.safetensors", "hf-hub:../x", "hf-hub:org/repo@..",
                                    "hf-hub:org/repo/sub\\..\\x.pth"])  # fmt: skip
def test_hub_ids_cannot_walk_out_of_the_repo_or_the_cache(tmp_path, monkeypatch, source):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # never reached: refused while parsing
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert_one_line(tmp_path, cli("info", source), "hf-hub:ORG/REPO[@REVISION][/FILE]")
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("link", ["checkpoints/best", "checkpoints/best/meta.json"])
def test_run_checkpoints_linking_out_of_the_run_are_refused(own_run, tmp_path, link):
    run, data = own_run
    elsewhere = tmp_path / "elsewhere"  # another run's checkpoint (on the victim's disk)
    shutil.copytree(run / "checkpoints" / "best", elsewhere)
    received = _received(own_run, tmp_path)
    for name in ("best", "last", "prev"):  # every checkpoint of the run links out: none is usable
        target = received / link.replace("best", name)
        if target.exists():
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
            target.symlink_to(elsewhere / ("meta.json" if link.endswith(".json") else ""))
    for command in (["eval", received, "--data-dir", data, "--out", tmp_path / "eval"], ["info", received]):
        assert_one_line(tmp_path, cli(*command), "outside", "symlink")


def test_a_fifo_named_like_an_image_does_not_hang(tmp_path):
    """A received manifest folder (a tar keeps FIFOs) listing ``a.png`` that is a FIFO: one line, no hang;
    in ``predict`` a per-image error while the other images are predicted."""
    data = tmp_path / "data"
    good = _png(data / "b" / "0.png")
    os.mkfifo(data / "a.png")
    (data / "m.csv").write_text("path,label\na.png,a\nb/0.png,b\n")
    model = _model(tmp_path)
    assert_one_line(tmp_path, cli("eval", model, "--dataset", "manifest", "--data-dir", data / "m.csv",
                                  "--out", tmp_path / "eval"), "not a regular file")  # fmt: skip
    code, out, err = in_child(cli("predict", model, data / "a.png", good), timeout=30)
    assert code == 1 and "not a regular file" in err and str(good) in out


@pytest.mark.parametrize("body", ['path,label,split\n"' + "x" * 200_000 + '",a,train\n#sha256\n', "path,label,split\n#sha256\n",
                                  "path,label,split\n\xff\n"], ids=["huge-field", "no-digest", "not-utf8"])  # fmt: skip
def test_damaged_split_files_are_one_line(tmp_path, body):
    path = tmp_path / "split.csv"
    path.write_bytes(body.encode("latin-1"))

    def read() -> int:
        from vit5.data.owndata import read_split_file

        try:
            read_split_file(path)
        except ValueError as error:
            print(error, file=sys.stderr)
            return 2
        return 0

    assert_one_line(tmp_path, read, str(path), "split file")


# --------------------------------------------------------------------------------------------------
# The readers of a received run and of received data, once more


def test_a_received_run_with_a_pickle_bomb_in_its_state_cannot_be_resumed(own_run, tmp_path):
    from tests.test_hostile_inputs import reduce_pickle, torch_file_with_pickle
    from vit5.io.weights_file import file_digest

    _, data = own_run
    received = _received(own_run, tmp_path)
    for name in ("last", "prev"):
        checkpoint = received / "checkpoints" / name
        if not checkpoint.is_dir():
            continue
        torch_file_with_pickle(checkpoint / "state.pt", reduce_pickle("__builtin__", "bytearray", 2**40))
        meta = json.loads((checkpoint / "meta.json").read_text())
        meta["files"]["state.pt"] = file_digest(checkpoint / "state.pt")  # as an attacker recomputes it
        (checkpoint / "meta.json").write_text(json.dumps(meta))
    before = snapshot(tmp_path)
    code, _, err = in_child(cli("train", "--resume", received, "--data-dir", data, "--epochs", "2"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "bytearray(1099511627776)" in lines[0], err[-3000:]
    changed = {path for path, size in snapshot(tmp_path).items() if before.get(path) != size}
    assert changed == {str(received / "log.txt")}  # the failure's traceback, in the run resumed


def _bomb_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("where", ["manifest", "datasets"])
def test_pixel_bombs_in_manifests_and_datasets_tables_are_one_line(tmp_path, where):
    data = tmp_path / "data"
    data.mkdir()
    if where == "manifest":
        (data / "bomb.png").write_bytes(_bomb_png())
        _png(data / "b.png")
        (data / "m.csv").write_text("path,label\nbomb.png,a\nb.png,b\n")
        args = ["--dataset", "manifest", "--data-dir", data / "m.csv"]
    else:
        pytest.importorskip("datasets")
        import pyarrow as pa
        import pyarrow.parquet as pq

        image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        rows = [
            {"bytes": _bomb_png(), "path": None},
            {"bytes": _png(tmp_path / "b.png").read_bytes(), "path": None},
        ]
        pq.write_table(pa.table({"image": pa.array(rows, type=image), "label": pa.array(["a", "b"])}),
                       data / "train-00000-of-00001.parquet")  # fmt: skip
        args = ["--dataset", "hf", "--data-dir", data]
    model = _model(tmp_path)
    assert_one_line(tmp_path, cli("eval", model, *args, "--out", tmp_path / "eval"), "900000000 pixels")


def test_class_names_are_plain_text_in_the_confusion_plot(tmp_path):
    from tests.test_hostile_inputs import tiny_vit5

    names = ["$\\frac{$", "red\x1b[31m", "c"]
    data = tmp_path / "data"
    for name in names:
        _png(data / name / "0.png")
    folder = tmp_path / "model"
    folder.mkdir()
    model = tiny_vit5(folder, class_names=names)
    code, out, err = in_child(cli("eval", model, "--data-dir", data, "--out", tmp_path / "eval"))
    assert code == 0 and err.strip() == "", err[-2000:]
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 0 and "\x1b" not in out


def test_a_parquet_file_declaring_millions_of_rows_is_refused_from_its_footer(tmp_path):
    pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    data.mkdir()
    rows = 1_200_000  # dictionary-encoded: a few KB on disk, a Python object per row once loaded
    image = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(rows, dtype=np.int32)), pa.array([b"x"], pa.binary())
    )
    pq.write_table(pa.table({"image": image, "label": pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(rows, dtype=np.int32)), pa.array(["a"]))}), data / "train-00000-of-00001.parquet")  # fmt: skip
    assert (data / "train-00000-of-00001.parquet").stat().st_size < 100_000
    model = _model(tmp_path)
    assert_one_line(tmp_path, cli("eval", model, "--dataset", "hf", "--data-dir", data, "--out", tmp_path / "eval"),
                    "declares 1,200,000 rows")  # fmt: skip
