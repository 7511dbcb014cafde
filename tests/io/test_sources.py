"""The source resolver's parsing and precedence, and the URL downloader against a loopback server."""

from __future__ import annotations

import hashlib
import logging

import pytest

from tests.hub.loopback_hub import LoopbackHub
from vit5.io import CheckpointError
from vit5.io.download import fetch_url
from vit5.io.sources import parse_hub_id, published_name, resolve_source


def test_hub_ids_parse_and_bad_ones_are_one_line_errors():
    assert parse_hub_id("hf-hub:org/repo") == ("org/repo", None, None)
    assert parse_hub_id("hf-hub:org/repo@v2") == ("org/repo", "v2", None)
    assert parse_hub_id("hf-hub:org/repo@v2/sub/file.pth") == ("org/repo", "v2", "sub/file.pth")
    for bad in ("hf-hub:org", "hf-hub:org/", "hf-hub:org/repo@", "hf-hub:org/repo//x"):
        with pytest.raises(CheckpointError, match="expected hf-hub:ORG/REPO"):
            parse_hub_id(bad)


def test_published_names_and_aliases():
    assert published_name("vit5_small") == "vit5_small_patch16_224"
    assert published_name("vit5_large_patch16_384") == "vit5_large_patch16_384"
    assert published_name("vit5_xlarge") is None and published_name(3) is None


def test_a_local_path_wins_over_a_published_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vit5_small_patch16_224").write_bytes(b"local")
    resolved = resolve_source("vit5_small_patch16_224")
    assert resolved.kind == "path" and resolved.path.read_bytes() == b"local"
    with pytest.raises(CheckpointError, match="not a published name"):
        resolve_source("vit5_nonexistent")


def test_a_url_read_from_a_config_file_needs_trust():
    with pytest.raises(CheckpointError, match="only with --trust-config"):
        resolve_source("https://example.invalid/w.pth", from_config_file=True)


@pytest.fixture
def server():
    hub = LoopbackHub().start()
    hub.commit("org/files", {"w.pth": bytes(range(256)) * 400, "small.txt": b"hello"})
    yield hub
    hub.stop()


def _gets(hub):
    """Downloads of the file's bytes (from the CDN port the resolve URL redirects to)."""
    return [path for method, path in hub.requests if method == "GET" and path.startswith("/blobs/")]


def test_url_download_is_cached_verified_and_redirects_are_logged(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    url = f"{server.endpoint}/org/files/resolve/main/w.pth"
    data = bytes(range(256)) * 400
    with caplog.at_level(logging.INFO, logger="vit5.download"):
        first = fetch_url(url)
    assert first.path.read_bytes() == data and first.sha256 == hashlib.sha256(data).hexdigest()
    assert first.path.parent == tmp_path / "hf" / "vit5" / "urls"
    assert first.resolved_url.startswith(server.cdn) and "redirects to another host" in caplog.text
    count = len(server.requests)
    assert fetch_url(url).path == first.path and len(server.requests) == count  # cached: no request
    first.path.write_bytes(data[:-1] + b"x")  # damaged after download: deleted, fetched once more
    assert fetch_url(url).path.read_bytes() == data and len(_gets(server)) == 2
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch_url(url).path.read_bytes() == data
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        fetch_url(f"{server.endpoint}/org/files/resolve/main/small.txt")


def test_url_digest_mismatch_retries_once_then_refuses(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    url = f"{server.endpoint}/org/files/resolve/main/w.pth"
    with pytest.raises(CheckpointError, match="expected " + "0" * 64):
        fetch_url(url, sha256="0" * 64)
    assert len(_gets(server)) == 2  # the download and its one retry
    assert not [p for p in (tmp_path / "hf").rglob("*") if p.is_file()]
    server.corrupt[("org/files", "w.pth")] = 1
    good = hashlib.sha256(bytes(range(256)) * 400).hexdigest()
    assert fetch_url(url, sha256=good).sha256 == good and len(_gets(server)) == 4  # bad once


def test_truncated_url_download_keeps_only_a_partial_and_resumes(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    url = f"{server.endpoint}/org/files/resolve/main/w.pth"
    server.truncate[("org/files", "w.pth")] = 1
    with pytest.raises(CheckpointError, match="truncated download|cannot download"):
        fetch_url(url)
    files = [p.name for p in (tmp_path / "hf").rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].endswith(".incomplete")
    done = fetch_url(url)
    assert done.path.read_bytes() == bytes(range(256)) * 400
    assert [p.name for p in (tmp_path / "hf").rglob("*.incomplete")] == []
