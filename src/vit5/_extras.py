"""Optional packages: importing one that is missing is a one-line error naming the extra to install."""

from __future__ import annotations

import importlib
from typing import Any

#: extra -> what it adds (pyproject.toml's [project.optional-dependencies]).
EXTRAS = {
    "train": "training (timm, scikit-learn, tqdm)",
    "export": "ONNX export and ONNX Runtime inference",
    "hf": "Hugging Face datasets on disk (--dataset hf)",
    "tensorboard": "--log tensorboard",
    "wandb": "--log wandb",
    "mlflow": "--log mlflow",
    "log": "all three trackers",
}


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the pip extra that brings it."""


def require(module: str, extra: str, what: str) -> Any:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install 'vit5[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and error.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but one of its own imports failed: show that
        raise MissingExtraError(
            f"{what} needs the Python package {module.split('.')[0]!r}, which is not installed: "
            f"pip install 'vit5[{extra}]'"
        ) from None
