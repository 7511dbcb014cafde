"""Reading an ONNX file written by :func:`vit5.export.export_onnx`: read once, checked, then run.

The file is data from anywhere: its ``pretrained_cfg`` metadata is validated like a safetensors
file's (:func:`vit5.networks.pretrained_cfg.check_pretrained_cfg`), its graph must be
self-contained (no external data paths), use standard operator domains and have the signature
``input [B, H, W, C] -> logits [B, num_classes]`` the metadata states, and be sized statically
before onnxruntime allocates anything (:func:`check_graph_sizes`); onnxruntime's own errors
become one-line ``ValueError`` s naming the file.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from vit5.networks.pretrained_cfg import check_pretrained_cfg

__all__ = ["check_graph_sizes", "open_onnx", "read_onnx_metadata"]


def _helpers() -> tuple[Any, Any]:
    from vit5.export import _import_onnx, _one_line

    return _import_onnx, _one_line


def _load_onnx_proto(path: str | os.PathLike) -> tuple[Any, bytes]:
    """The ONNX model in ``path`` read once into memory (the bytes later given to onnxruntime)."""
    _import_onnx, _one_line = _helpers()
    onnx = _import_onnx()
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read()
        proto = onnx.load_model_from_string(data)
    except OSError as error:
        raise ValueError(f"{name}: cannot read the file ({error.strerror or error})") from None
    except Exception as error:  # protobuf's decode errors have no common base class
        raise ValueError(f"{name}: not a readable ONNX file ({_one_line(error)})") from None
    return proto, data


def _metadata(proto: Any, name: str) -> dict[str, Any]:
    try:
        cfg = {entry.key: json.loads(entry.value) for entry in proto.metadata_props}
    except json.JSONDecodeError:
        cfg = {}
    except RecursionError:
        raise ValueError(f"{name}: metadata nested too deeply (a crafted file)") from None
    if "input_size" not in cfg:
        raise ValueError(f"{name}: carries no vit5 pretrained_cfg metadata (was it written by vit5 export?)")
    return cfg


#: Operators whose output size is chosen by the *values* of their inputs (a 1 KB file can ask for
#: terabytes); their output shapes must be known statically.
_SHAPED_BY_DATA = frozenset({"ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Upsample", "Pad", "OneHot",
                             "RandomNormal", "RandomUniform", "CenterCropPad", "Col2Im"})  # fmt: skip
#: All values of a graph together (never live at once: onnxruntime reuses buffers) may take this
#: many times the activation budget; one value alone, the budget.
_ALL_VALUES = 8
#: Control flow runs subgraphs an unbounded number of times; vit5 exports have none.
_CONTROL_FLOW = frozenset({"Loop", "Scan", "If", "SequenceMap"})


def _itemsize(data_type: int) -> float:
    """Bytes per element of ONNX data type ``data_type`` (4-bit types: 0.5; unknown types: 1)."""
    from onnx import helper

    if data_type in (21, 22, 23):  # UINT4, INT4, FLOAT4E2M1: two per byte
        return 0.5
    try:
        dtype = helper.tensor_dtype_to_np_dtype(data_type)
    except Exception:  # an unknown type: onnxruntime refuses it later
        return 1
    return 1 if dtype.kind in "OSU" else dtype.itemsize


def _declared_bytes(tensor: Any) -> tuple[int, int]:
    """(bytes the tensor's dims declare, bytes of data the file holds for it)."""
    itemsize = _itemsize(tensor.data_type)
    held = len(tensor.raw_data)
    for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        held += math.ceil(len(getattr(tensor, field)) * (itemsize if field != "string_data" else 1))
    return math.ceil(math.prod(int(d) for d in tensor.dims) * itemsize), held


def check_graph_sizes(proto: Any, name: str) -> None:
    """Refuse an ONNX graph that would allocate more than it justifies, before onnxruntime sees it.

    Statically, without running anything: every initializer and constant tensor must hold the data
    its dims declare (no 2**40-element tensor from a few bytes); control flow (``Loop``, ``Scan``,
    ``If``) and sparse initializers are refused (vit5 exports have none); then, with the batch
    fixed to 1, ONNX shape inference (with data propagation) sizes every value: an operator whose
    output size comes from its input values (``ConstantOfShape``, ``Expand``, ``Tile``, ``Range``,
    ``Resize``, ...) must get a known shape, each value must fit the batch-1 activation budget
    (``--max-activation-gib``, default 32 GiB) and all values together 8 times that (a ViT-L
    hybrid at 384 px sums to about 20 GB of values at batch 1).

    Raises:
        ValueError: one line naming the file, the value or operator, and the size.
    """
    _import_onnx, _ = _helpers()
    onnx = _import_onnx()
    from onnx import shape_inference

    from vit5.networks.budget import current_budgets

    graph = proto.graph
    if len(graph.sparse_initializer):
        raise ValueError(f"{name}: has sparse initializers (vit5 export writes none)")
    limit = current_budgets()[1] * 2**30
    constants = [*graph.initializer, *(a.t for node in graph.node for a in node.attribute if a.HasField("t"))]
    for tensor in constants:
        declared, held = _declared_bytes(tensor)
        if declared > held:
            raise ValueError(f"{name}: tensor {tensor.name or '(constant)'!r} declares dims {list(tensor.dims)[:8]} "
                             f"({declared:,} bytes) but the file holds {held:,} bytes for it")  # fmt: skip
    for node in graph.node:
        if node.op_type in _CONTROL_FLOW or any(a.type in (5, 10) for a in node.attribute):  # GRAPH, GRAPHS
            raise ValueError(
                f"{name}: uses control flow ({node.op_type} {node.name!r}); vit5 exports have none"
            )
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    for value in fixed.graph.input:
        for dim in value.type.tensor_type.shape.dim[:1]:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    try:
        inferred = shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True).graph
    except Exception as error:  # onnx's inference errors have no common public base
        raise ValueError(
            f"{name}: the graph is inconsistent ({str(error).strip().splitlines()[0][:200]})"
        ) from None
    shapes = {v.name: v.type.tensor_type for v in (*inferred.value_info, *inferred.output, *inferred.input)}
    total = 0
    for node in inferred.node:
        for output in node.output:
            kind = shapes.get(output)
            known = (
                kind is not None
                and kind.HasField("shape")
                and all(d.HasField("dim_value") for d in kind.shape.dim)
            )
            if not known:
                if node.op_type in _SHAPED_BY_DATA:
                    raise ValueError(f"{name}: the size of {node.op_type} output {output!r} cannot be determined "
                                     "before running (vit5 exports have static sizes at batch 1)")  # fmt: skip
                continue
            size = math.prod(max(int(d.dim_value), 0) for d in kind.shape.dim) * _itemsize(kind.elem_type)
            total += size
            if size > limit or total > _ALL_VALUES * limit:
                what = "needs" if size > limit else "takes all values of the graph past 8x"
                raise ValueError(
                    f"{name}: {node.op_type} output {output!r} of shape {[d.dim_value for d in kind.shape.dim][:8]} "
                    f"{what} the activation budget of {limit / 2**30:g} GiB at batch 1 (raise it with "
                    "--max-activation-gib if the file is yours)"
                )


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``pretrained_cfg`` stored in an ONNX file written by :func:`export_onnx`, validated.

    The values are checked like a safetensors file's (:func:`vit5.networks.pretrained_cfg.check_pretrained_cfg`:
    ``crop_pct`` in [0.05, 1], ``input_size`` at most 8192, one class name per logit, ...).

    Raises:
        ValueError: The file is not an ONNX model, carries no vit5 metadata, or the metadata is
            out of range (one line naming the file and the field).
    """
    proto, _ = _load_onnx_proto(path)
    return check_pretrained_cfg(_metadata(proto, os.fspath(path)), os.fspath(path))


def open_onnx(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """An onnxruntime CPU session on an exported file and its validated ``pretrained_cfg``.

    The file is read into memory once; that copy is checked and handed to onnxruntime. Refused
    (one-line ``ValueError``): tensors stored outside the file (vit5 writes self-contained files),
    operators outside the standard ONNX domains, a graph whose input is not ``[B, H, W, C]`` and
    output ``[B, num_classes]`` as the metadata says, and any error onnxruntime raises while loading.
    """
    import onnxruntime

    _import_onnx, _one_line = _helpers()
    onnx = _import_onnx()
    name = os.fspath(path)
    proto, data = _load_onnx_proto(path)
    cfg = check_pretrained_cfg(_metadata(proto, name), name)
    graph = proto.graph
    tensors = [*graph.initializer, *(a.t for node in graph.node for a in node.attribute if a.HasField("t"))]
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors):
        raise ValueError(
            f"{name}: refers to tensor data outside the file (vit5 export writes self-contained files)"
        )
    domains = {node.domain for node in graph.node} - {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
    if domains:
        raise ValueError(f"{name}: uses operators of unknown domains {sorted(domains)[:5]}")
    check_graph_sizes(proto, name)
    channels, size, _ = cfg["input_size"]
    try:
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's errors derive from Exception only
        raise ValueError(f"{name}: onnxruntime cannot load it ({_one_line(error)})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != "input" or not any(o.name == "logits" for o in outputs):
        raise ValueError(f"{name}: expected one input 'input' and an output 'logits' (a vit5 export), got inputs "
                         f"{[i.name for i in inputs][:5]} and outputs {[o.name for o in outputs][:5]}")  # fmt: skip
    shape = list(inputs[0].shape)
    logits = next(o for o in outputs if o.name == "logits").shape
    if len(shape) != 4 or shape[1:] != [size, size, channels]:
        raise ValueError(
            f"{name}: the graph takes input {shape}, but its metadata says [B, {size}, {size}, {channels}]"
        )
    if len(logits) != 2 or (isinstance(logits[1], int) and logits[1] != cfg["num_classes"]):
        raise ValueError(f"{name}: the graph returns logits {list(logits)}, but its metadata says "
                         f"{cfg['num_classes']} classes")  # fmt: skip
    return session, cfg
