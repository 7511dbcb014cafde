"""Hostile ONNX graphs (issue 30): bombs are refused by a static check before onnxruntime allocates.

Each file is a valid ONNX model carrying valid vit5 metadata, crafted as an attacker would; each
runs ``vit5 predict`` in a forked child (6 GiB address space, one thread, 60 s) and must end in one
line on stderr, exit code 2, nothing written.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.test_hostile_inputs import _onnx_cfg, assert_one_line, cli, image  # noqa: F401 (fixture)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402


def _graph_file(path, nodes, initializers, *, opset=18):
    """``input [B, 16, 16, 3] -> logits [B, 3]``: ``ReduceMean(input)`` plus whatever ``nodes``
    compute into ``extra`` (broadcast-added, so onnxruntime must materialise it)."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["B", 16, 16, 3])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 3])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
    body = [helper.make_node("ReduceMean", ["input", "axes"], ["m"], keepdims=0), *nodes,
            helper.make_node("ReduceMax", ["extra"], ["small"], keepdims=0),
            helper.make_node("Add", ["m", "small"], ["logits"])]  # fmt: skip
    model = helper.make_model(helper.make_graph(body, "g", [x], [y], [axes, *initializers]),
                              opset_imports=[helper.make_opsetid("", opset)])  # fmt: skip
    for key, value in _onnx_cfg().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    path.write_bytes(model.SerializeToString())
    assert path.stat().st_size < 2000
    return path


def _constant_of_shape():
    return [helper.make_node("ConstantOfShape", ["shape"], ["extra"])], [
        helper.make_tensor("shape", TensorProto.INT64, [2], [1, 2**38])
    ]


def _expand():
    return [helper.make_node("Expand", ["one", "shape"], ["extra"])], [
        helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
        helper.make_tensor("shape", TensorProto.INT64, [2], [2**20, 2**20]),
    ]


def _tile():
    return [helper.make_node("Tile", ["one", "repeats"], ["extra"])], [
        helper.make_tensor("one", TensorProto.FLOAT, [1, 1], [1.0]),
        helper.make_tensor("repeats", TensorProto.INT64, [2], [2**19, 2**19]),
    ]


def _data_dependent():
    """The shape comes from the image's values: unknown before running."""
    nodes = [helper.make_node("ReduceSum", ["input"], ["s"], keepdims=0),
             helper.make_node("Cast", ["s"], ["n"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["n", "one_dim"], ["shape"]),
             helper.make_node("ConstantOfShape", ["shape"], ["extra"])]  # fmt: skip
    return nodes, [helper.make_tensor("one_dim", TensorProto.INT64, [1], [1])]


def _hollow_initializer():
    """A 2**40-element initializer holding no data."""
    tensor = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[2**40])  # written field by field
    return [helper.make_node("Identity", ["big"], ["extra"])], [tensor]


def _loop():
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])],
    )  # fmt: skip
    nodes = [helper.make_node("Loop", ["trips", "true"], [], body=body),
             helper.make_node("Identity", ["one"], ["extra"])]  # fmt: skip
    return nodes, [helper.make_tensor("trips", TensorProto.INT64, [], [2**62]),
                   helper.make_tensor("true", TensorProto.BOOL, [], [True]),
                   helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])]  # fmt: skip


@pytest.mark.parametrize(
    "craft, needle",
    [(_constant_of_shape, "activation budget"), (_expand, "activation budget"), (_tile, "activation budget"),
     (_data_dependent, "cannot be determined before running"), (_hollow_initializer, "declares dims"),
     (_loop, "control flow")],
    ids=["constant-of-shape-2**38", "expand-2**40", "tile-2**38", "data-dependent-shape", "hollow-2**40",
         "loop-2**62"],
)  # fmt: skip
def test_onnx_bombs_are_refused_before_onnxruntime(tmp_path, image, craft, needle):  # noqa: F811
    import vit5.export  # noqa: F401  (warm for the child)

    nodes, initializers = craft()
    path = _graph_file(tmp_path / "bomb.onnx", nodes, initializers)
    line = assert_one_line(tmp_path, cli("predict", path, image), needle, str(path))
    assert "onnxruntime" not in line


def test_the_activation_budget_flag_applies_to_onnx(tmp_path, image):  # noqa: F811
    nodes, initializers = _expand()
    initializers[1] = helper.make_tensor("shape", TensorProto.INT64, [2], [1024, 1024])  # 4 MiB
    path = _graph_file(tmp_path / "m.onnx", nodes, initializers)
    assert_one_line(
        tmp_path, cli("predict", path, image, "--max-activation-gib", "0.001"), "activation budget"
    )


def _program_archive(path, text: bytes):
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("m/extra/pretrained_cfg.json", text)
    return path


@pytest.mark.parametrize(
    "text, needle",
    [(b" " * (64 << 20) + b"{}", "declares 67,108,866 bytes"), (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
     (json.dumps(_onnx_cfg(crop_pct=1e-7)).encode(), "crop_pct")],
    ids=["deflate-bomb", "deep-json", "crop-1e-7"],
)  # fmt: skip
def test_pt2_metadata_is_bounded_and_checked(tmp_path, text, needle):
    path = _program_archive(tmp_path / "m.pt2", text)
    assert path.stat().st_size < 200_000

    def read() -> int:
        from vit5.export import read_program_metadata

        try:
            read_program_metadata(path)
        except ValueError as error:
            print(error, file=sys.stderr)
            return 2
        return 0

    assert_one_line(tmp_path, read, needle, str(path))
