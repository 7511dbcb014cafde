"""Load the weights users have (kept for its import path; the loaders live in :mod:`vit5.io`).

* :func:`load_model` / :func:`load_model_and_config` — any source (:mod:`vit5.io.loader`,
  :mod:`vit5.io.sources`): a local path, a published name, ``hf-hub:``, an https URL.
* :func:`load_official_vit5` — official ViT-5 weights (:mod:`vit5.io.official`).
* :func:`load_nvsubquadratic_checkpoint` — nvSubquadratic / Lightning weights (:mod:`vit5.io.nvsubq`).
"""

from vit5.io.loader import LoadedModel, load_model, load_model_and_config
from vit5.io.nvsubq import load_nvsubquadratic_checkpoint
from vit5.io.official import load_official_vit5, official_model_config
from vit5.io.weights_file import read_weights_file


def load_for_timm(path, preset, overrides):  # noqa: ANN001, ANN201  (kept for its old import path)
    """The network of ``timm.create_model(preset, pretrained=True, pretrained_cfg_overlay=dict(file=path))``
    (:func:`vit5.hub.timm_pretrained`)."""
    from vit5.hub import timm_pretrained

    return timm_pretrained(preset, {"file": str(path)}, overrides)


__all__ = [
    "LoadedModel",
    "load_for_timm",
    "load_model",
    "load_model_and_config",
    "load_nvsubquadratic_checkpoint",
    "load_official_vit5",
    "official_model_config",
    "read_weights_file",
]
