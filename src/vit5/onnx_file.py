"""Reading an ONNX file written by :func:`vit5.export.export_onnx`: read once, checked, then run.

The file is data from anywhere: its ``pretrained_cfg`` metadata is validated like a safetensors
file's (:func:`vit5.networks.pretrained_cfg.check_pretrained_cfg`), its graph must be
self-contained (no external data paths), use standard operator domains and have the signature
``input [B, H, W, C] -> logits [B, num_classes]`` the metadata states; onnxruntime's own errors
become one-line ``ValueError`` s naming the file.
"""

from __future__ import annotations

import json
import os
from typing import Any

from vit5.networks.pretrained_cfg import check_pretrained_cfg

__all__ = ["open_onnx", "read_onnx_metadata"]


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
