"""Published names through the loopback Hub: vit5 and timm load the official checkpoint's ``model``
(or ``model_ema``) entry with the official model's logits; the second load is offline and makes no
request; provenance is recorded."""

from __future__ import annotations

import pytest
import torch

from tests.hub.conftest import run_python

CHECK = """
import json, sys, torch, timm, vit5
x = torch.load(sys.argv[1] if len(sys.argv) > 1 else {images!r})
out = {{}}
m = vit5.create_model("vit5_small_patch16_224", pretrained=True, cache_dir={cache!r})
out["vit5"] = m({{"input": x.permute(0, 2, 3, 1)}})["logits"].tolist()
out["cfg"] = {{k: m.pretrained_cfg[k] for k in ("source", "resolved_url", "revision", "sha256", "crop_pct", "interpolation")}}
out["names"] = m.pretrained_cfg["class_names"][:2] + m.pretrained_cfg["class_descriptions"][:1]
e = vit5.create_model("vit5_small", pretrained=True, ema=True, cache_dir={cache!r})
out["ema"] = e({{"input": x.permute(0, 2, 3, 1)}})["logits"].tolist()
t = timm.create_model("vit5_small_patch16_224", pretrained=True, cache_dir={cache!r}).eval()
with torch.no_grad():
    out["timm"] = t(x).tolist()
out["timm_cfg"] = [t.pretrained_cfg["hf_hub_id"], t.pretrained_cfg["hf_hub_filename"], len(t.pretrained_cfg["label_names"])]
h = vit5.create_model("vit5_small_patch16_224", pretrained=True, num_classes=7, cache_dir={cache!r})
out["head"] = [h.num_classes, h.pretrained_cfg["class_names"], torch.equal(h.patch_embed.weight, m.patch_embed.weight) if hasattr(h, "patch_embed") else None]
out["listed"] = timm.list_pretrained("vit5*")
o = timm.create_model("vit5_small_patch16_224", pretrained=True, cache_dir={cache!r},
                      pretrained_cfg_overlay=dict(hf_hub_id="mirror/vit5")).eval()
with torch.no_grad():
    out["overlay"] = o(x).tolist()
out["overlay_source"] = o.net.pretrained_cfg["source"]
print(json.dumps(out))
"""


QUICK = """
import json, torch, vit5
x = torch.load({images!r})
m = vit5.create_model("vit5_small_patch16_224", pretrained=True)
out = {{"vit5": m({{"input": x.permute(0, 2, 3, 1)}})["logits"].tolist(), "revision": m.pretrained_cfg["revision"],
       "names": m.pretrained_cfg["class_names"][:1]}}
import os
if os.environ["HF_HUB_OFFLINE"] == "1":
    try:
        vit5.load_model("vit5_base_patch16_384")  # never downloaded: offline, it cannot load
    except ValueError as error:
        out["uncached"] = str(error)
print(json.dumps(out))
"""


def test_a_published_name_downloads_once_then_loads_offline(hub, tmp_path):
    model, _ = hub.official["vit5_small_patch16_224"]
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.save(images, tmp_path / "x.pt")
    code = QUICK.format(images=str(tmp_path / "x.pt"))
    out = run_python(hub, tmp_path / "hf", code)
    with torch.no_grad():
        assert (torch.tensor(out["vit5"]) - model(images)).abs().max() <= 1e-5
    assert out["names"] == ["n01440764"] and len(out["revision"]) == 40
    before = len(hub.requests)
    again = run_python(hub, tmp_path / "hf", code, offline=True)
    assert len(hub.requests) == before  # offline: from the cache, no request
    assert (
        again["uncached"] == "vit5_base_patch16_384: not in the Hugging Face cache and HF_HUB_OFFLINE is set"
    )
    assert {k: again[k] for k in ("vit5", "revision", "names")} == {
        k: out[k] for k in ("vit5", "revision", "names")
    }


@pytest.mark.slow
def test_published_names_load_the_official_model_entry_and_the_second_load_is_offline(hub, tmp_path):
    model, ema = hub.official["vit5_small_patch16_224"]
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32)
    torch.save(images, tmp_path / "x.pt")
    with torch.no_grad():
        expected, expected_ema = model(images), ema(images)
    mirror = dict(hub.repos["FengWang3211/ViT-5"].commits[hub.repos["FengWang3211/ViT-5"].branches["main"]])
    mirror["vit5_small_patch16_224.pth"] = hub.mirror_file
    hub.commit("mirror/vit5", mirror)
    cache = tmp_path / "models"
    code = CHECK.format(images=str(tmp_path / "x.pt"), cache=str(cache))
    before = len(hub.requests)
    out = run_python(hub, tmp_path / "hf", code)
    assert len(hub.requests) > before
    for key, reference in (("vit5", expected), ("timm", expected), ("ema", expected_ema)):
        assert (torch.tensor(out[key]) - reference).abs().max() <= 1e-5, key
    cfg = out["cfg"]
    assert cfg["source"] == "vit5_small_patch16_224" and len(cfg["revision"]) == 40
    assert cfg["resolved_url"].startswith(hub.cdn + "/blobs/")  # the LFS redirect target
    assert cfg["sha256"] == cfg["resolved_url"].rsplit("/", 1)[-1]
    assert (cfg["crop_pct"], cfg["interpolation"]) == (1.0, "bicubic")
    assert out["names"] == ["n01440764", "n01443537", "tench, Tinca tinca"]
    assert out["timm_cfg"] == ["FengWang3211/ViT-5", "vit5_small_patch16_224.pth", 1000]
    assert out["head"] == [7, None, True]
    with torch.no_grad():  # pretrained_cfg_overlay=dict(hf_hub_id=...) reads that repo's file
        assert (torch.tensor(out["overlay"]) - hub.mirror_model(images)).abs().max() <= 1e-5
    assert (
        out["overlay_source"] == "hf-hub:mirror/vit5/vit5_small_patch16_224.pth"
    )  # a fresh 7-class head on the pretrained backbone
    assert {"vit5_small_patch16_224", "vit5_base_patch16_384", "vit5_large_patch16_384"} <= set(out["listed"])
    assert list(cache.glob("models--FengWang3211--ViT-5/blobs/*")), "cache_dir= is where the file went"
    assert not (tmp_path / "hf" / "hub").exists()

    before = len(hub.requests)
    again = run_python(hub, tmp_path / "hf", code, offline=True)
    assert len(hub.requests) == before, hub.requests[before:]  # offline: from the cache, no request
    assert again["vit5"] == out["vit5"] and again["cfg"]["revision"] == cfg["revision"]
