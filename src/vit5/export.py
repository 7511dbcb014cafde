"""Deployment files: an ONNX model or a ``torch.export`` program of a :class:`ViT5ClassificationNet`.

Both files hold one inference graph (eval mode, float32, CPU weights):

* input ``input``: float32 channels-last images ``[B, H, W, C]``, normalised as the model's
  ``pretrained_cfg`` says (``mean``/``std``), with a dynamic batch ``B``;
* output ``logits``: ``[B, num_classes]``.

It is traced through ``torch.export`` (the ONNX file through ``torch.onnx.export(dynamo=True)``),
which the network sees as capture mode ``"export"`` (:mod:`vit5.ops.capture`): no finiteness check,
no data-pointer caches, no in-place fast paths; the long convolution of Hyena blocks takes the
planner's export path (dense or power-of-two FFTs, see :mod:`vit5.ops`).

Each file also carries what a deployer needs besides the weights, the model's ``pretrained_cfg``
(``input_size``, ``mean``, ``std``, ``interpolation``, ``crop_pct``, ``num_classes``,
``class_names``, ...): in the ONNX file as ``metadata_props`` (one entry per key, every value JSON,
read back by :func:`read_onnx_metadata`), in the ``.pt2`` archive as the extra file
``pretrained_cfg.json`` (:func:`read_program_metadata`). A bare preset exports with the defaults
derived from its config.

Files are written atomically: a failed export leaves no file behind (and an existing file as it
was). ``onnx``, ``onnxscript`` and ``onnxruntime`` are the optional ``export`` extra
(``pip install vit5[export]``); ``export_program`` needs only torch.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vit5._io import atomic_write_bytes
from vit5.networks.pretrained_cfg import check_pretrained_cfg, default_pretrained_cfg
from vit5.networks.vit5_classification import ViT5ClassificationNet

__all__ = [
    "MAX_OPSET",
    "MIN_OPSET",
    "ExportError",
    "LogitsGraph",
    "export_onnx",
    "export_program",
    "open_onnx",
    "pretrained_cfg_of",
    "read_onnx_metadata",
    "read_program_metadata",
]

MIN_OPSET = 18  # torch.onnx's dynamo exporter translates to opset 18 and newer
# Opsets 26+ turn SDPA into the Attention op in a form onnxruntime 1.32 rejects (INVALID_GRAPH);
# 18..25 export and run (tests/test_export.py checks 18, 21 and the default).
MAX_OPSET = 25
PROGRAM_CFG_FILE = "pretrained_cfg.json"
_EXAMPLE_BATCH = 2  # torch.export specialises batch sizes 0 and 1; 2 keeps the batch symbolic


class ExportError(RuntimeError):
    """The exporter could not capture or translate the network (the message is one line)."""


class LogitsGraph(nn.Module):
    """The exported signature: ``input [B, H, W, C]`` -> ``logits [B, num_classes]``.

    Args:
        net: The network (its ``forward`` takes ``{"input": x}`` and returns ``{"logits": ...}``).
    """

    def __init__(self, net: ViT5ClassificationNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002  (the graph input's name)
        return self.net({"input": input})["logits"]  # (B, K)


def pretrained_cfg_of(model: ViT5ClassificationNet) -> dict[str, Any]:
    """The ``pretrained_cfg`` written into the file: the model's (what :func:`vit5.load_model`
    attached, or the defaults of its config for a bare preset), with ``input_size`` and
    ``num_classes`` describing the exported network."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, Mapping):
        cfg = dict(cfg)
    else:
        cfg = default_pretrained_cfg(model.image_size, model.in_channels, model.num_classes)
    cfg["input_size"] = [model.in_channels, model.image_size, model.image_size]
    cfg["num_classes"] = model.num_classes
    return json.loads(json.dumps(cfg, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(
        f"pretrained_cfg value {value!r} of type {type(value).__name__} cannot be written as JSON"
    )


def _prepared(model: Any, image_size: int | None) -> ViT5ClassificationNet:
    """An eval-mode float32 CPU network at ``image_size`` (``model`` itself when it already is one)."""
    if isinstance(model, (str, os.PathLike)):
        from vit5.weights import load_model

        return _prepared(load_model(model, image_size=image_size), None)
    if not isinstance(model, ViT5ClassificationNet):
        inner = getattr(model, "net", None)  # a timm wrapper (vit5.networks.timm_models.TimmViT5)
        if not isinstance(inner, ViT5ClassificationNet):
            raise TypeError(f"model must be a ViT5ClassificationNet, got {type(model).__name__}")
        model = inner
    if image_size is not None and image_size != model.image_size:
        model = _resized(model, image_size)
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in tensors if t.is_floating_point()):
        model = copy.deepcopy(model).to(device="cpu", dtype=torch.float32)
    return model


def _resized(model: ViT5ClassificationNet, image_size: int) -> ViT5ClassificationNet:
    """Checks ``image_size`` for a network object; resizing needs the checkpoint (its config)."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if image_size % model.patch_size:
        raise ValueError(
            f"image_size={image_size} cannot be taken by this model: it must be a multiple of its patch size "
            f"{model.patch_size} (trained at {model.image_size})"
        )
    raise ValueError(
        f"image_size={image_size}: a network object does not carry the config it was built from, so it cannot be "
        "resized here; pass the checkpoint path instead (export_onnx(path, out, image_size=...), as "
        "vit5.load_model(path, image_size=...) resizes), or vit5.resize_model(model, image_size, config=...) first"
    )


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode while tracing; the model's mode is restored afterwards.

    Autograd stays on: the no-grad fast paths (``out=`` / in-place kernels) then stay out of the
    graph whatever the capture checks say, so the program also runs under autograd.
    """
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _example(model: ViT5ClassificationNet, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, model.image_size, model.image_size, model.in_channels, generator=generator)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _check_target(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output path {str(path)!r} is a directory; give a file name")
    return path


def _check_opset(opset: Any) -> int | None:
    import onnx

    newest = min(MAX_OPSET, onnx.defs.onnx_opset_version())
    if opset is None:
        return None
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(
            f"opset must be an int in {MIN_OPSET}..{newest} (torch.onnx's exporter emits {MIN_OPSET} and newer; "
            f"newer than {MAX_OPSET}, attention does not run in onnxruntime), got {opset!r}"
        )
    return opset


def _import_onnx() -> Any:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"ONNX export needs the optional packages onnx and onnxscript ({error}); "
            "install them with `pip install vit5[export]`"
        ) from None
    import onnx

    return onnx


def export_onnx(
    model: ViT5ClassificationNet | str | os.PathLike,
    path: str | os.PathLike,
    *,
    image_size: int | None = None,
    opset: int | None = None,
    dynamic_batch: bool = True,
) -> Path:
    """Write ``model`` as an ONNX file (see the module docstring for the graph and the metadata).

    Args:
        model: The network (a timm wrapper's ``.net`` is taken), or anything :func:`vit5.load_model`
            takes (a run directory, ``.safetensors``, official ``.pth``, ...). It is exported in
            eval mode, in float32 on the CPU (a copy when it is elsewhere); its own mode is left as
            it was.
        path: The ``.onnx`` file to write (replaced atomically).
        image_size: Evaluate the trained model at another square size: the resize of
            :func:`vit5.load_model` (needs a checkpoint path; for a network object only its own
            size); ``None``: the model's size.
        opset: ONNX opset, ``MIN_OPSET`` (18) .. ``MAX_OPSET`` (25); ``None``: torch's default.
        dynamic_batch: A symbolic batch dimension ``B`` (else the graph takes batch 1 only).

    Returns:
        The path written.

    Raises:
        TypeError: ``model`` is not a ViT5ClassificationNet.
        ValueError: An unsupported ``opset``, an ``image_size`` the model cannot take, ``path`` is
            a directory.
        ExportError: The exporter failed (no file is written).
        ImportError: onnx / onnxscript are not installed.
    """
    onnx = _import_onnx()
    opset = _check_opset(opset)
    path = _check_target(path)
    net = _prepared(model, image_size)
    cfg = pretrained_cfg_of(net)
    graph = LogitsGraph(net)
    x = _example(net, _EXAMPLE_BATCH if dynamic_batch else 1)
    dynamic = {"input": {0: torch.export.Dim("batch", min=1)}} if dynamic_batch else None
    with _inference(net), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                graph, (x,), dynamo=True, input_names=["input"], output_names=["logits"],
                dynamic_shapes=dynamic, opset_version=opset, verbose=False, report=False,
            )  # fmt: skip
        except Exception as error:  # the exporter raises many kinds; report one line
            raise ExportError(f"ONNX export of {type(net).__name__} failed: {_one_line(error)}") from error
    proto = program.model_proto
    for key, value in sorted(cfg.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    proto.producer_name = "vit5"
    try:
        onnx.checker.check_model(proto, full_check=True)
        data = proto.SerializeToString()
    except Exception as error:
        raise ExportError(f"the exported ONNX model is not valid: {_one_line(error)}") from error
    return atomic_write_bytes(path, data)


def export_program(
    model: ViT5ClassificationNet | str | os.PathLike,
    path: str | os.PathLike,
    *,
    image_size: int | None = None,
) -> Path:
    """Write ``model`` as a ``torch.export`` program (``.pt2``) with a dynamic batch.

    ``torch.export.load(path).module()(x)`` returns the logits of ``x [B, H, W, C]``;
    :func:`read_program_metadata` reads the stored ``pretrained_cfg``.

    Args:
        model: The network or a checkpoint path (see :func:`export_onnx`).
        path: The ``.pt2`` file to write (replaced atomically).
        image_size: Evaluate the trained model at another square size (``None``: its own).

    Returns:
        The path written.

    Raises:
        TypeError / ValueError: As :func:`export_onnx`.
        ExportError: ``torch.export`` failed (no file is written).
    """
    path = _check_target(path)
    net = _prepared(model, image_size)
    cfg = pretrained_cfg_of(net)
    graph = LogitsGraph(net)
    x = _example(net, _EXAMPLE_BATCH)
    with _inference(net):
        try:
            program = torch.export.export(
                graph, (x,), dynamic_shapes={"input": {0: torch.export.Dim("batch", min=1)}}
            )
        except Exception as error:
            raise ExportError(f"torch.export of {type(net).__name__} failed: {_one_line(error)}") from error
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={PROGRAM_CFG_FILE: json.dumps(cfg)})
    return atomic_write_bytes(path, buffer.getvalue())


_MAX_PROGRAM_CFG_BYTES = 16 << 20


def read_program_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``pretrained_cfg`` stored in a ``.pt2`` file written by :func:`export_program`.

    Read from the archive's ``extra/pretrained_cfg.json`` as plain JSON: nothing in the file is
    deserialised, and bounded (the entry may hold at most 16 MiB, checked before it is inflated;
    deep nesting is an error), and its values are checked like a safetensors or ONNX file's
    (:func:`vit5.networks.pretrained_cfg.check_pretrained_cfg`). vit5 never runs a program
    (``torch.export.load`` itself unpickles parts of an archive, so load programs only from
    sources you trust).

    Raises:
        ValueError: The file is not a ``.pt2`` archive with vit5 metadata, or the metadata is too
            large, nested too deeply or out of range (one line naming the file and the field).
    """
    name = os.fspath(path)
    try:
        with zipfile.ZipFile(name) as archive:
            infos = [i for i in archive.infolist() if i.filename.endswith(f"extra/{PROGRAM_CFG_FILE}")]
            if infos and infos[0].file_size > _MAX_PROGRAM_CFG_BYTES:
                raise ValueError(f"{name}: its {PROGRAM_CFG_FILE} declares {infos[0].file_size:,} bytes, more "
                                 f"than a pretrained_cfg needs ({_MAX_PROGRAM_CFG_BYTES:,})")  # fmt: skip
            with archive.open(infos[0]) if infos else contextlib.nullcontext() as handle:  # bounded read
                data = handle.read(_MAX_PROGRAM_CFG_BYTES + 1) if handle is not None else None
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as error:
        raise ValueError(f"{name}: not a readable torch.export archive ({_one_line(error)})") from None
    if data is None:
        raise ValueError(f"{name}: carries no vit5 pretrained_cfg (was it written by vit5 export?)")
    if len(data) > _MAX_PROGRAM_CFG_BYTES:
        raise ValueError(f"{name}: its {PROGRAM_CFG_FILE} inflates past {_MAX_PROGRAM_CFG_BYTES:,} bytes")
    try:
        cfg = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{name}: damaged pretrained_cfg metadata") from None
    except RecursionError:
        raise ValueError(f"{name}: pretrained_cfg metadata nested too deeply (a crafted file)") from None
    return check_pretrained_cfg(cfg, name)


from vit5.onnx_file import open_onnx, read_onnx_metadata  # noqa: E402  (readers of the files written above)
