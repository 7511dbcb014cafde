"""Bad sources: one-line errors naming the source, nothing run, nothing half-written under a final
name; a digest mismatch is deleted and downloaded once more."""

from __future__ import annotations

import io
import pickle

import torch

from tests.hub.conftest import PUBLISHED_REPO, run_python

MARKER = "/tmp/vit5-hub-exploit-marker"


class _Exploit:
    def __reduce__(self):
        return (open, (MARKER, "w"))


BAD = """
import json, pathlib, vit5
out = dict()
for source in ("hf-hub:nobody/missing", "hf-hub:FengWang3211/ViT-5", "hf-hub:FengWang3211/ViT-5/nope.pth",
               "hf-hub:FengWang3211/ViT-5@no-such-branch/vit5_small_patch16_224.pth", "hf-hub:evil/repo/model.pth",
               "hf-hub:flaky/repo/twice.pth", "hf-hub:flaky/repo/once.pth", "hf-hub:flaky/repo/cut.pth", "not_a_name"):
    try:
        model = vit5.load_model(source)
        out[source] = "loaded"
    except ValueError as error:
        out[source] = str(error)
home = pathlib.Path({home!r})
out["final_names"] = sorted(p.name for p in home.rglob("blobs/*") if not p.name.endswith(".incomplete"))
print(json.dumps(out))
"""


def test_bad_sources_are_one_line_errors_and_leave_nothing_under_a_final_name(hub, tmp_path):
    import os

    os.unlink(MARKER) if os.path.exists(MARKER) else None
    good = hub.repos[PUBLISHED_REPO].commits[hub.repos[PUBLISHED_REPO].branches["main"]][
        "vit5_small_patch16_224.pth"
    ]
    buffer = io.BytesIO()
    torch.save({"model": {"x": torch.zeros(1)}}, buffer)
    hub.commit("evil/repo", {"model.pth": pickle.dumps({"model": _Exploit()})})
    files = {"twice.pth": good + b"2", "once.pth": good + b"1", "cut.pth": good + b"3"}
    hub.commit("flaky/repo", files)
    hub.corrupt[("flaky/repo", "twice.pth")] = 2
    hub.corrupt[("flaky/repo", "once.pth")] = 1
    hub.truncate[("flaky/repo", "cut.pth")] = 50
    out = run_python(hub, tmp_path / "hf", BAD.format(home=str(tmp_path / "hf")))
    for source, message in out.items():
        if source != "final_names" and source != "hf-hub:flaky/repo/once.pth":
            assert "\n" not in message and source in message, (source, message)
    assert "no such repo nobody/missing" in out["hf-hub:nobody/missing"]
    assert "has no config.json" in out["hf-hub:FengWang3211/ViT-5"]
    assert "vit5_small_patch16_224.pth" in out["hf-hub:FengWang3211/ViT-5"]  # lists the loadable files
    assert "has no file 'nope.pth'" in out["hf-hub:FengWang3211/ViT-5/nope.pth"]
    assert (
        "no revision 'no-such-branch'"
        in out["hf-hub:FengWang3211/ViT-5@no-such-branch/vit5_small_patch16_224.pth"]
    )
    assert "refused" in out["hf-hub:evil/repo/model.pth"] and not os.path.exists(MARKER)
    assert "after downloading it again" in out["hf-hub:flaky/repo/twice.pth"]
    assert out["hf-hub:flaky/repo/once.pth"] == "loaded"
    assert (
        "download failed" in out["hf-hub:flaky/repo/cut.pth"] or "truncat" in out["hf-hub:flaky/repo/cut.pth"]
    )
    assert "not a published name" in out["not_a_name"]
    import hashlib

    sha = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    assert sha["twice.pth"] not in out["final_names"] and sha["cut.pth"] not in out["final_names"]
    assert sha["once.pth"] in out["final_names"]
