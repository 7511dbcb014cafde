"""Sharing: :func:`save_pretrained` / :func:`push_to_hub` and the :class:`HubMixin` that gives the
network (and timm's wrapper) these as methods, attached from above (the network module does no I/O)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vit5._io import atomic_write_text
from vit5.config import to_container
from vit5.io.hub_repo import CONFIG, WEIGHTS, repo_config
from vit5.io.loader import CONFIG_ATTR  # the config tree a loaded / created network was built from
from vit5.io.weights_file import save_weights
from vit5.networks.pretrained_cfg import CODE_LICENSE, WEIGHTS_LICENSE_NOTE
from vit5.networks.vit5_classification import ViT5ClassificationNet

__all__ = [
    "CONFIG_ATTR",
    "HubMixin",
    "attach_mixin",
    "model_card",
    "push_to_hub",
    "remember",
    "save_pretrained",
]


def remember(model: ViT5ClassificationNet, tree: Any) -> ViT5ClassificationNet:
    """Record on ``model`` the config tree that builds it (what :func:`save_pretrained` writes)."""
    model.__dict__[CONFIG_ATTR] = to_container(tree)
    return model


def _unwrap(model: Any) -> ViT5ClassificationNet:
    net = getattr(model, "net", model)
    if not isinstance(net, ViT5ClassificationNet):
        raise TypeError(
            f"model must be a ViT5ClassificationNet (or timm's TimmViT5), got {type(model).__name__}"
        )
    return net


def _config_of(net: ViT5ClassificationNet, model_config: Any) -> dict[str, Any]:
    if model_config is not None:
        return to_container(model_config)
    recorded = net.__dict__.get(CONFIG_ATTR)
    if recorded is None:
        raise ValueError(
            "save_pretrained: the network does not record the config that built it; pass model_config= "
            "(a LazyConfig tree) or create it with vit5.create_model / vit5.load_model"
        )
    return recorded


def save_pretrained(
    model: Any,
    directory: str | os.PathLike,
    *,
    model_config: Any = None,
    ema: bool = False,
    results: Mapping[str, Any] | None = None,
    data: str | None = None,
) -> Path:
    """Write ``model`` to ``directory`` as vit5 and timm load it: ``config.json``, ``model.safetensors``
    (vit5's keys; its metadata also carries the config, so the file alone loads) and ``README.md``.

    Args:
        model: A :class:`ViT5ClassificationNet` (or timm's wrapper of one).
        directory: Created if needed; the three files are replaced atomically.
        model_config: The network's config tree, when it was not built by :func:`create_model` /
            loaded by :func:`vit5.load_model` (which record it).
        ema: The weights are EMA weights (recorded in ``config.json``).
        results: Metrics for the model card (``{"top1": 0.82, ...}``).
        data: What the model was trained on, for the model card.

    Returns:
        ``directory``.
    """
    net = _unwrap(model)
    tree = _config_of(net, model_config)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = repo_config(net, tree, ema=ema)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_weights(directory / WEIGHTS, state, {"config": {"model": tree}, "pretrained_cfg": net.pretrained_cfg,
                                              "ema": bool(ema)})  # fmt: skip
    atomic_write_text(directory / CONFIG, json.dumps(config, indent=2))
    atomic_write_text(directory / "README.md", model_card(net, config, results=results, data=data))
    return directory


def model_card(net: ViT5ClassificationNet, config: Mapping[str, Any], *, results: Mapping[str, Any] | None = None,
               data: str | None = None, repo_id: str | None = None) -> str:  # fmt: skip
    """A ``README.md`` for the Hub: source, data, results, preprocessing, how to load."""
    cfg = net.pretrained_cfg
    where = f"hf-hub:{repo_id}" if repo_id else "hf-hub:ORG/REPO"
    names = cfg.get("class_names") or []
    lines = [
        "---", "library_name: vit5", "tags:", "- image-classification", "- timm", "- vit5", f"license: {CODE_LICENSE}", "---",
        "", f"# {config['architecture']}", "",
        f"A ViT-5 image classifier ({net.num_classes} classes, {net.image_size} px, "
        f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f}M parameters), saved with vit5.", "",
        "## Source", "", f"- weights: {cfg.get('source') or 'trained or built in memory'}",
        f"- sha256 of the weights read: {cfg.get('sha256') or 'n/a'}",
        f"- EMA weights: {'yes' if (config.get('vit5') or {}).get('ema') else 'no'}", "",
        "## Data", "", f"{data or 'not recorded'}; classes: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}", "",
        "## Results", "",
        *([f"- {k}: {v}" for k, v in results.items()] if results else ["not recorded"]), "",
        "## Preprocessing", "",
        f"RGB in [0, 1], resize the short side to {cfg['input_size'][1]} / {cfg['crop_pct']:g} ({cfg['interpolation']}), "
        f"center crop {cfg['input_size'][1]}, normalise with mean {cfg['mean']} and std {cfg['std']}.", "",
        "## How to load", "", "```python", "import vit5, timm",
        f'model = vit5.from_pretrained("{where}")', f'model = timm.create_model("{where}", pretrained=True)', "```", "",
        f"```bash\nvit5 predict {where} image.jpg\n```", "",
        "## License", "", f"Code: Apache-2.0 (vit5). {WEIGHTS_LICENSE_NOTE if cfg.get('source') else ''}".rstrip(), "",
    ]  # fmt: skip
    return "\n".join(lines)


def push_to_hub(
    model: Any,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    model_config: Any = None,
    ema: bool = False,
    token: str | None = None,
    results: Mapping[str, Any] | None = None,
    data: str | None = None,
) -> str:
    """Create ``repo_id`` if needed (``private``), make branch ``revision`` if it does not exist, and
    commit :func:`save_pretrained`'s files there. Returns the commit URL.

    Raises:
        ValueError: the Hub refuses (authentication, a bad repo id, ...): one line naming the repo.
    """
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hub_errors

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must be ORG/REPO, got {repo_id!r}")
    net = _unwrap(model)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="vit5-push-") as folder:
        save_pretrained(net, folder, model_config=model_config, ema=ema, results=results, data=data)
        card = Path(folder, "README.md")
        config = json.loads(Path(folder, CONFIG).read_text())
        card.write_text(model_card(net, config, results=results, data=data, repo_id=repo_id))
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                                     commit_message=commit_message or f"Upload {config['architecture']} with vit5")  # fmt: skip
        except hub_errors.HfHubHTTPError as error:
            status = error.response.status_code if error.response is not None else "?"
            raise ValueError(
                f"push to {repo_id}: the Hub answered HTTP {status} ({str(error).splitlines()[0]})"
            ) from None
    return str(getattr(info, "commit_url", info))


class HubMixin:
    """``save_pretrained`` / ``push_to_hub`` as methods (attached to the network and timm's wrapper)."""

    def save_pretrained(self, directory: str | os.PathLike, **kwargs: Any) -> Path:
        """:func:`vit5.hub.save_pretrained` of this model."""
        return save_pretrained(self, directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """:func:`vit5.hub.push_to_hub` of this model."""
        return push_to_hub(self, repo_id, **kwargs)


def attach_mixin(cls: type) -> None:
    """Give ``cls`` the :class:`HubMixin` methods (once)."""
    if not issubclass(cls, HubMixin):
        cls.__bases__ = (HubMixin, *cls.__bases__)
