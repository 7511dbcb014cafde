"""Published weights by name, ``hf-hub:`` sources, and sharing models on the Hugging Face Hub.

* :func:`create_model` — ``vit5.create_model(name, pretrained=False, ema=False, cache_dir=None, **config)``:
  a preset, or with ``pretrained=True`` the published official weights
  (:data:`~vit5.networks.pretrained_cfg.PUBLISHED`, :func:`list_pretrained`) (:mod:`vit5.hub.pretrained`).
* :func:`from_pretrained` — :func:`vit5.load_model` by another name (a directory or ``hf-hub:ORG/REPO``).
* :func:`save_pretrained` / :func:`push_to_hub` — a directory / Hub repo that vit5 and timm load
  (``config.json`` in timm's layout, ``model.safetensors``, a ``README.md`` model card,
  :mod:`vit5.io.hub_repo`); :class:`HubMixin` gives the network (and timm's wrapper) these as
  methods, attached from here: the network module itself does no I/O (:mod:`vit5.hub.share`).
* :func:`~vit5.hub.timm_weights.timm_pretrained` — the loader behind ``timm.create_model(name,
  pretrained=True)``, ``timm.create_model("hf-hub:ORG/REPO")`` and ``("local-dir:DIR")``, installed
  by ``import vit5`` when timm is installed (:mod:`vit5.hub.timm_weights`).

Where files come from (names, ``hf-hub:``, URLs, caches, digests) is :mod:`vit5.io.sources`.
"""

import importlib.util

from vit5.hub.pretrained import create_model, from_pretrained, list_pretrained
from vit5.hub.share import HubMixin, attach_mixin, model_card, push_to_hub, save_pretrained
from vit5.networks.vit5_classification import ViT5ClassificationNet

__all__ = [
    "HubMixin",
    "create_model",
    "from_pretrained",
    "list_pretrained",
    "model_card",
    "push_to_hub",
    "save_pretrained",
    "timm_pretrained",
]

attach_mixin(ViT5ClassificationNet)

if importlib.util.find_spec("timm") is not None:
    from vit5.hub.timm_weights import install_timm, timm_pretrained

    install_timm()
else:  # pragma: no cover - the core install has no timm

    def timm_pretrained(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        raise ImportError("timm_pretrained needs timm (pip install timm)")
