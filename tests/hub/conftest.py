"""Fixtures for the Hub tests: a loopback Hub serving official-style checkpoints, and a client that
runs in a subprocess (huggingface_hub reads HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE when imported)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.hub.loopback_hub import LoopbackHub
from tests.official_model import OfficialViT5, save_training_checkpoint

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED_REPO = "FengWang3211/ViT-5"
#: The served "published" checkpoints: the official layout, reduced (1000 classes, as published).
TINY = dict(dim=64, depth=2, heads=2, image_size=32, patch=16, registers=4, num_classes=1000)


def official_training_file(seed: int, **layout) -> tuple[bytes, OfficialViT5, OfficialViT5]:
    """A DeiT-style training dict as the official main.py writes it (model, model_ema, optimizer, args)."""
    torch.manual_seed(seed)
    model, ema = OfficialViT5(**{**TINY, **layout}), OfficialViT5(**{**TINY, **layout})
    for module in (model, ema):
        for parameter in module.parameters():
            torch.nn.init.normal_(parameter, std=0.2)
    buffer = io.BytesIO()
    save_training_checkpoint(buffer, model, ema)
    return buffer.getvalue(), model.eval(), ema.eval()


@pytest.fixture(scope="session")
def hub():
    server = LoopbackHub().start()
    data, model, ema = official_training_file(0)
    data384, model384, _ = official_training_file(1, image_size=48)
    server.commit(PUBLISHED_REPO, {"vit5_small_patch16_224.pth": data, "vit5_base_patch16_384.pth": data384,
                                   "README.md": b"# ViT-5\n"})  # fmt: skip
    server.mirror_file, server.mirror_model, _ = official_training_file(2)
    server.official = {"vit5_small_patch16_224": (model, ema), "vit5_base_patch16_384": (model384, None)}
    yield server
    server.stop()


def client_env(hub: LoopbackHub, home: Path, offline: bool = False) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(home), HF_HUB_OFFLINE="1" if offline else "0",
               HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               HF_TOKEN="hf_loopback_token", PYTHONPATH=str(ROOT), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")  # fmt: skip
    return env


def run_python(
    hub: LoopbackHub, home: Path, code: str, *, offline: bool = False, timeout: float = 240
) -> dict:
    """Run ``code`` in a fresh interpreter against the loopback Hub; it prints one JSON line last."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=client_env(hub, home, offline),
                            capture_output=True, text=True, timeout=timeout, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_cli(hub: LoopbackHub, home: Path, args: list[str], *, offline: bool = False,
            timeout: float = 240) -> subprocess.CompletedProcess:  # fmt: skip
    return subprocess.run([sys.executable, "-m", "vit5", *args], env=client_env(hub, home, offline),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)  # fmt: skip
