"""Hostile and broken inputs, round two: bounded, one line, nothing escapes (issue 30).

Each attack is a file written the way an attacker would write it (real formats, zip CRCs and
vit5 checksums recomputed) and is run in a forked child of this process (torch already imported)
with one thread, a 6 GiB address-space cap and a 60 s timeout. The child runs ``vit5.cli.main``
(or one reader); the test asserts exit code 2 with exactly one line on stderr naming the problem,
and that the directory holding the inputs is unchanged (nothing written, no payload ran).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import vit5.cli  # noqa: F401  (imported once here, so each forked child starts warm)
from tests.official_model import OfficialViT5
from vit5.config import TARGET_KEY, to_container
from vit5.io import save_weights

CAP = 6 << 30
TIMEOUT = 60.0


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as handle:
            lines = handle.read().splitlines()
        for line in lines:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def in_child(function, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    """Run ``function()`` in a forked child under the caps; its exit code, stdout and stderr.

    The cap is 6 GiB of address space, or the parent's current size plus 2 GiB when importing
    torch already mapped more than 4 GiB (CUDA builds map large libraries).
    """
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 (read back after the child)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            cap = max(CAP, _vm_size() + (2 << 30))
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            torch.set_num_threads(1)
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), write_through=True)  # noqa: SIM115
            sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), write_through=True)  # noqa: SIM115
            code = function()
            code = 0 if code is None else int(code)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 98
        except BaseException:
            traceback.print_exc()
            code = 97
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the child ran past {timeout} s (a hang)")
        time.sleep(0.02)
    out.seek(0)
    err.seek(0)
    code = os.waitstatus_to_exitcode(status)
    return code, out.read().decode(errors="replace"), err.read().decode(errors="replace")


def cli(*args: str):
    def run() -> int:
        from vit5.cli import main

        return main([str(a) for a in args])

    return run


def snapshot(folder) -> dict:
    return {str(p): p.stat().st_size for p in folder.rglob("*")}


def assert_one_line(folder, function, *needles: str, code: int = 2) -> str:
    before = snapshot(folder)
    got, out, err = in_child(function)
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, (got, out[-2000:], err[-4000:])
    assert len(lines) == 1, err[-4000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert snapshot(folder) == before, "the command wrote files"
    return lines[0]


# --------------------------------------------------------------------------------------------------
# Crafting files


def torch_file_with_pickle(path, payload: bytes, *, deflate: bool = False):
    """A torch.save zip archive whose data.pkl is ``payload`` (CRCs recomputed by zipfile)."""
    buffer = io.BytesIO()
    torch.save({}, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = payload if info.filename.endswith("/data.pkl") else source.read(info)
            target.writestr(info.filename, data, zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
    return path


def reduce_pickle(module: str, name: str, argument: int) -> bytes:
    """``{"x": module.name(argument)}`` as protocol-2 opcodes."""
    return (b"\x80\x02}q\x00X\x01\x00\x00\x00xc" + f"{module}\n{name}\n".encode() + b"\x8a\x08"
            + struct.pack("<q", argument) + b"\x85R" + b"s.")  # fmt: skip


def deep_list_pickle(depth: int) -> bytes:
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def official_state(**extra):
    state = OfficialViT5(64, 1, 2, 16, 4, 1, 3).randomize().state_dict()
    state.update(extra)
    return state


def tiny_vit5(tmp_path, **cfg_changes):
    """A vit5 .safetensors file for vit5_tiny_attention at 16 px with 3 classes; ``cfg_changes``
    edit its recorded pretrained_cfg (the checksum is recomputed, as an attacker would)."""
    from vit5.networks.presets import create_model, model_config

    config = to_container(model_config("vit5_tiny_attention", image_size=16, num_classes=3))
    model = create_model("vit5_tiny_attention", image_size=16, num_classes=3)
    pretrained = {**model.pretrained_cfg, **cfg_changes}
    path = tmp_path / "model.safetensors"
    save_weights(path, model.state_dict(), {"config": {"model": config}, "pretrained_cfg": pretrained})
    return path


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.full((20, 20, 3), 90, dtype=np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------------------------------
# Pickles: allocation, expansion, nesting


@pytest.mark.parametrize(
    "payload, needle",
    [
        (reduce_pickle("__builtin__", "bytearray", 2**40), "bytearray(1099511627776)"),
        (reduce_pickle("torch", "FloatStorage", 2**38), "torch.FloatStorage"),
        pytest.param(deep_list_pickle(20_000), "nested deeper", marks=pytest.mark.slow),
    ],
    ids=["bytearray-2**40", "storage-2**38", "deep-nesting"],
)
def test_small_pickles_asking_for_huge_or_deep_structures(tmp_path, payload, needle):
    path = torch_file_with_pickle(tmp_path / "evil.pth", payload)
    assert path.stat().st_size < 50_000
    for command in ("info", "convert"):
        extra = ["--out", tmp_path / "c.safetensors"] if command == "convert" else []
        assert_one_line(tmp_path, cli(command, path, *extra), needle, str(path))


def test_legacy_pickle_with_bytearray_bomb(tmp_path):
    path = tmp_path / "legacy.pth"
    body = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {}))
    path.write_bytes(body + reduce_pickle("__builtin__", "bytearray", 2**40))
    assert path.stat().st_size < 800
    assert_one_line(tmp_path, cli("info", path), "bytearray(1099511627776)")


def test_stride_zero_tensor_cannot_stand_in_for_weights(tmp_path):
    state = official_state()
    state["blocks.0.mlp.fc1.weight"] = torch.zeros(1).expand(*state["blocks.0.mlp.fc1.weight"].shape)
    path = tmp_path / "official.pth"
    torch.save({"model": state}, path)
    assert_one_line(tmp_path, cli("info", path), "stride-0", "model.blocks.0.mlp.fc1.weight")


def test_deflated_records_may_not_inflate(tmp_path):
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(4_000_000)}, buffer)  # 16 MB of zeros deflate to about 16 KB
    path = tmp_path / "deflated.pth"
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    assert_one_line(tmp_path, cli("info", path), "inflate")


def test_shared_reference_bomb_in_hyper_parameters(tmp_path):
    leaf = [1]
    for _ in range(40):  # 2**40 leaves once copied
        leaf = [leaf, leaf]
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "hyper_parameters": {"net": leaf}}, path)
    assert_one_line(tmp_path, cli("info", path), "expand to more than")


def test_official_layout_with_a_huge_block_index(tmp_path):
    path = tmp_path / "official.pth"
    torch.save({"model": official_state(**{"blocks.100000000.norm1.weight": torch.ones(64)})}, path)
    assert_one_line(tmp_path, cli("info", path), "unexpected keys ['blocks.100000000.norm1.weight']")


# --------------------------------------------------------------------------------------------------
# Configs asking for huge networks; metadata out of range


COMPACT = {TARGET_KEY: "vit5.networks.presets.build_vit5", "hidden_dim": 64, "num_blocks": 2, "num_heads": 2,
           "patch_size": 4, "image_size": 16, "num_classes": 3}  # fmt: skip


def _with_config(tmp_path, mutate):
    from vit5.networks.presets import model_config

    if mutate in (_conv3d,):
        config = to_container(model_config("vit5_tiny_attention", image_size=16, num_classes=3))
    else:
        config = dict(COMPACT)
    mutate(config)
    path = tmp_path / "tiny.safetensors"
    save_weights(path, {"w": torch.zeros(2)}, {"config": {"model": config}})
    assert path.stat().st_size < 8000
    return path


def _wide(config):
    config.update(hidden_dim=32768, num_heads=512)


def _conv3d(config):
    config["block_cfg"]["mlp_norm_cfg"] = {TARGET_KEY: "torch.nn.Conv3d", "in_channels": 4096,
                                           "out_channels": 4096, "kernel_size": 64}  # fmt: skip


def _blocks(config):
    config["num_blocks"] = 100_000_000


def _image(config):
    config["image_size"] = 2**20  # a 2**36-token grid


@pytest.mark.parametrize(
    "mutate, needle",
    [(_wide, "parameters, more than the budget"), (_conv3d, "parameters, more than the budget"),
     (_blocks, "more than 1024 blocks"), (_image, "parameters, more than the budget")],
    ids=["hidden_dim-32768", "conv3d-4096", "num_blocks-1e8", "image_size-2**20"],
)  # fmt: skip
def test_small_safetensors_asking_for_a_huge_network(tmp_path, image, mutate, needle):
    path = _with_config(tmp_path, mutate)
    line = assert_one_line(tmp_path, cli("predict", path, image), needle, str(path))
    assert "--max-params" in line or "blocks" in line


def test_activation_budget_and_its_flag(tmp_path, image):
    def large_image(config):
        config.update(image_size=4096, patch_size=16)  # 65k tokens: the attention matrix alone is tens of GiB

    path = _with_config(tmp_path, large_image)
    assert_one_line(tmp_path, cli("info", path), "GiB of activations", "--max-activation-gib")


def test_max_params_flag_and_environment(tmp_path, image, monkeypatch):
    path = tiny_vit5(tmp_path)
    line = assert_one_line(tmp_path, cli("predict", path, image, "--max-params", "1000"), "budget of 1,000")
    assert "--max-params" in line
    monkeypatch.setenv("VIT5_MAX_PARAMS", "1000")
    assert_one_line(tmp_path, cli("info", path), "budget of 1,000")


@pytest.mark.parametrize(
    "changes, needle",
    [({"crop_pct": 1e-7}, "crop_pct"), ({"input_size": [3, 100000, 100000]}, "input_size"),
     ({"class_names": ["a", "b"]}, "class_names has 2 names for 3 classes"),
     ({"mean": {"x": 1}}, "mean needs 3 values")],
    ids=["crop_pct-1e-7", "input_size-100000", "too-few-names", "mean-dict"],
)  # fmt: skip
def test_pretrained_cfg_out_of_range_in_safetensors(tmp_path, image, changes, needle):
    path = tiny_vit5(tmp_path, **changes)
    assert_one_line(tmp_path, cli("predict", path, image), needle, str(path))


def test_deep_json_in_safetensors_metadata(tmp_path, image):
    from safetensors.torch import save

    header = {"format": "x", "config": "[" * 100_000 + "]" * 100_000}
    path = tmp_path / "deep.safetensors"
    path.write_bytes(save({"w": torch.zeros(1)}, metadata=header))
    assert_one_line(tmp_path, cli("info", path), "nested too deeply", str(path))


# --------------------------------------------------------------------------------------------------
# ONNX files


def _onnx_file(path, metadata, *, domain="", inputs=True, external=False, raw=None):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["B", 16, 16, 3])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 3])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [3], [0.0, 1.0, 2.0])
    if external:
        weight.data_location = TensorProto.EXTERNAL
        weight.ClearField("float_data")
        for key, value in (("location", "../../../etc/passwd"), ("offset", "0"), ("length", "12")):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
    nodes = [helper.make_node("ReduceMean", ["input", "axes"], ["m"], keepdims=0, domain=domain),
             helper.make_node("Add", ["m", "w"], ["logits"])]  # fmt: skip
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
    graph = helper.make_graph(nodes, "g", [x] if inputs else [], [y], [weight, axes])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("evil", 1)]
    )
    for key, value in {**{k: json.dumps(v) for k, v in metadata.items()}, **(raw or {})}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path.write_bytes(model.SerializeToString())
    return path


def _onnx_cfg(**changes):
    cfg = {"input_size": [3, 16, 16], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
           "crop_pct": 1.0, "num_classes": 3, "class_names": None}  # fmt: skip
    cfg.update(changes)
    return cfg


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"metadata": _onnx_cfg(num_classes=10**12)}, "num_classes"),
     pytest.param({"metadata": _onnx_cfg(crop_pct=1e-7)}, "crop_pct", marks=pytest.mark.slow),
     pytest.param({"metadata": _onnx_cfg(input_size=[3, 100000, 100000])}, "input_size", marks=pytest.mark.slow),
     pytest.param({"metadata": _onnx_cfg(class_names=["a"])}, "class_names has 1 names for 3 classes", marks=pytest.mark.slow),
     ({"metadata": _onnx_cfg(), "raw": {"deep": "[" * 100_000 + "]" * 100_000}}, "nested too deeply"),
     pytest.param({"metadata": _onnx_cfg(), "inputs": False}, "onnxruntime cannot load it", marks=pytest.mark.slow),
     pytest.param({"metadata": _onnx_cfg(), "domain": "evil"}, "unknown domains", marks=pytest.mark.slow),
     ({"metadata": _onnx_cfg(), "external": True}, "outside the file")],
    ids=["classes-1e12", "crop-1e-7", "size-100000", "names-short", "deep-json", "no-inputs", "custom-domain",
         "external-data"],
)  # fmt: skip
def test_onnx_metadata_and_graph_checked_before_running(tmp_path, image, kwargs, needle):
    pytest.importorskip("onnxruntime")
    import vit5.export  # noqa: F401  (warm for the child)

    path = _onnx_file(tmp_path / "m.onnx", **kwargs)
    assert_one_line(tmp_path, cli("predict", path, image), needle, str(path))


def test_a_valid_hand_written_onnx_file_predicts(tmp_path, image):
    pytest.importorskip("onnxruntime")
    path = _onnx_file(tmp_path / "m.onnx", _onnx_cfg(class_names=["a", "b", "c"]))
    code, out, err = in_child(cli("predict", path, image))
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])[0]["top"][0]["label"] == "c"


# --------------------------------------------------------------------------------------------------
# Dataset files


def test_cifar_pickle_declaring_a_huge_array(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Huge:
        def __reduce__(self):
            return (np.ndarray, ((2**36,),))

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({"data": Huge(), "labels": [0]}, protocol=2))

    def read() -> int:
        from vit5.data.sources import load_cifar

        try:
            load_cifar(tmp_path, 10)
        except ValueError as error:
            print(error, file=sys.stderr)
            return 2
        return 0

    assert_one_line(tmp_path, read, "larger than the file")


def test_idx_gzip_inflating_to_gigabytes(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as handle:
        handle.write(b"\x00\x00\x08\x03" + struct.pack(">3I", 60000, 320, 320))
        zeros = bytes(1 << 20)
        for _ in range(32):
            handle.write(zeros)

    def read() -> int:
        from vit5.data.sources import read_idx

        try:
            read_idx(path)
        except ValueError as error:
            print(error, file=sys.stderr)
            return 2
        return 0

    assert_one_line(tmp_path, read, "declares (60000, 320, 320)")


# --------------------------------------------------------------------------------------------------
# Images, names, the error path


def test_a_tiny_png_claiming_20000_squared_fails_alone(tmp_path, image):
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))  # fmt: skip
    assert bomb.stat().st_size < 120
    model = tiny_vit5(tmp_path)
    code, out, err = in_child(cli("predict", model, bomb, image))
    assert code == 1, err
    assert len([line for line in err.splitlines() if "bomb.png" in line]) == 1
    assert str(image) in out and "bomb.png" not in out.splitlines()[-1]


def test_class_names_are_escaped_on_the_terminal_and_guarded_in_csv(tmp_path, image):
    names = ["\x1b[31mred\x1b[0m", '=HYPERLINK("http://x")', "two\nlines\u202e"]
    model = tiny_vit5(tmp_path, class_names=names)
    out_csv = tmp_path / "p.csv"
    code, out, err = in_child(cli("predict", model, image, "--out", out_csv))
    assert code == 0, err
    code, out, err = in_child(cli("predict", model, image, "--top-k", "3"))
    assert code == 0, err
    shown = out.splitlines()[0]
    assert "\x1b" not in out and "\u202e" not in out and "\\x1b[31mred" in shown and "\\u202e" in shown
    assert len(out.strip().splitlines()) == 2  # one result line, then JSON
    text = out_csv.read_text()
    assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text


def test_class_names_are_never_joined_to_the_data_dir(tmp_path):
    from vit5.data.sources import list_image_folder

    root = tmp_path / "val"
    (root / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(root / "cat" / "a.png")
    outside = tmp_path / "secret"
    outside.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(outside / "b.png")
    split = list_image_folder(root, ["cat", "../secret", str(outside), "/"])
    assert [p.name for p in split.paths] == ["a.png"]


def test_every_failure_is_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    path = torch_file_with_pickle(tmp_path / "cyclic.pth", b"\x80\x02]q\x00h\x00a.")
    line = assert_one_line(tmp_path, cli("info", path), str(path))
    assert "Traceback" not in line
    code, _, err = in_child(cli("info", path, "--debug"))
    assert code != 0 and "Traceback" in err
    monkeypatch.setenv("VIT5_DEBUG", "1")
    code, _, err = in_child(cli("info", path))
    assert code != 0 and "Traceback" in err


def test_interrupt_exits_130(tmp_path, monkeypatch):
    import vit5.cli as cli_module

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli_module.COMMANDS, "info", interrupted)
    code, _, err = in_child(cli("info", "--preset", "vit5_tiny_attention"))
    assert code == 130 and err.strip() == "vit5 info: interrupted"


def test_memory_and_recursion_errors_are_one_line(tmp_path, monkeypatch):
    import vit5.cli as cli_module

    for error in (
        MemoryError(),
        RecursionError("maximum recursion depth exceeded"),
        IndexError("list index"),
    ):

        def failing(args, error=error):
            raise error

        monkeypatch.setitem(cli_module.COMMANDS, "info", failing)
        line = assert_one_line(tmp_path, cli("info", tmp_path / "x.pth"))
        assert str(tmp_path / "x.pth") in line


# --------------------------------------------------------------------------------------------------
# Paths recorded in a run stay inside it


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.bin", "link.bin"])
def test_meta_json_cannot_make_resume_hash_files_outside_the_checkpoint(tmp_path, monkeypatch, name):
    from vit5.io import run as run_layout
    from vit5.io.weights_file import CheckpointError

    checkpoint = tmp_path / "run" / "checkpoints" / "last"
    checkpoint.mkdir(parents=True)
    (tmp_path / "run" / "outside.bin").write_bytes(b"secret")
    (checkpoint / "link.bin").symlink_to(tmp_path / "run" / "outside.bin")
    hashed = []
    monkeypatch.setattr(run_layout, "file_digest", lambda path: hashed.append(path) or "0" * 64)
    with pytest.raises(CheckpointError, match="inside|outside") as error:
        run_layout.verify_checkpoint(checkpoint, {"files": {name: "0" * 64}})
    assert len(str(error.value).splitlines()) == 1 and hashed == []


def test_eval_does_not_write_through_a_run_eval_symlink(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {}\n")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (run / "eval").symlink_to(target)
    assert_one_line(tmp_path, cli("eval", run, "--data-dir", tmp_path), "is a symlink", "--out")
    assert list(target.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# Only .py is code


@pytest.mark.parametrize(
    "name", ["recipe.json", "config.yaml ", "config.yml\t", "recipe.txt", "recipe.py.bak"]
)
def test_only_py_config_files_run(tmp_path, name):
    marker = tmp_path / "pwned"
    (tmp_path / name).write_text(f"import pathlib; pathlib.Path({str(marker)!r}).touch()\nmodel = 1\n")
    for command in (["info", "--config"], ["train", "--out", tmp_path / "run", "--config"]):
        assert_one_line(tmp_path, cli(*command, tmp_path / name), repr(str(tmp_path / name))[1:-1])
        assert not marker.exists()


def test_a_failed_run_writes_its_traceback_to_log_txt(tmp_path, monkeypatch):
    import vit5.train.loop as loop

    def failing(cfg, run_dir, **kwargs):
        (run_dir / "config.yaml").write_text("model: {}\n")  # the run has started
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(loop, "train", failing)
    run = tmp_path / "run"
    code, _, err = in_child(cli("train", "--out", run, "--epochs", "1"))
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1] == "vit5 train: error: RuntimeError: boom", err
    log = (run / "log.txt").read_text()
    assert "Traceback" in log and "second line" in log


@pytest.mark.slow
def test_onnx_constant_of_shape_bomb_is_one_line(tmp_path, image):
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["B", 16, 16, 3])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 2**38])
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"]),
             helper.make_node("ReduceMean", ["input", "axes"], ["m"], keepdims=0),
             helper.make_node("Add", ["m", "big"], ["logits"])]  # fmt: skip
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [shape, axes]),
                              opset_imports=[helper.make_opsetid("", 18)])  # fmt: skip
    for key, value in _onnx_cfg().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    path = tmp_path / "bomb.onnx"
    path.write_bytes(model.SerializeToString())
    assert_one_line(tmp_path, cli("predict", path, image), str(path), "activation budget")
