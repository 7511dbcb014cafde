"""One resolver for every place a checkpoint is named (:func:`resolve_source`).

In this order: an existing local path (wins over a name); a published name
(:data:`~vit5.networks.pretrained_cfg.PUBLISHED`, e.g. ``vit5_small_patch16_224``);
``hf-hub:ORG/REPO[@REVISION]`` (a repo as :func:`vit5.hub.save_pretrained` writes it);
``hf-hub:ORG/REPO[@REVISION]/FILE`` (any file :func:`vit5.load_model` reads); an ``http(s)://`` URL.

Hub files come through ``huggingface_hub.hf_hub_download``, one file at a time, into its cache
(shared with timm and transformers; ``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_OFFLINE``, ``HF_HOME``
as it reads them); URLs through :func:`vit5.io.download.fetch_url`. Every resolution checks the
file against its digest: a Hub blob is stored under its ETag, which is the SHA-256 of an LFS file
or the git blob hash of a small one, so the check needs no request; a mismatch deletes the copy and
downloads once more, then errors. Names and ``hf-hub:`` ids always resolve against
``HF_ENDPOINT``; a raw URL read from a config file (not typed on the command line) is refused
unless ``trust_config``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vit5.io.download import fetch_url, is_offline, is_url
from vit5.io.weights_file import CheckpointError, file_digest
from vit5.networks.pretrained_cfg import PUBLISHED

__all__ = [
    "HUB_PREFIX",
    "LOADABLE_SUFFIXES",
    "REPO_CONFIG",
    "REPO_WEIGHTS",
    "ResolvedSource",
    "hub_file",
    "parse_hub_id",
    "published_name",
    "resolve_source",
]

logger = logging.getLogger("vit5.download")

HUB_PREFIX = "hf-hub:"
REPO_CONFIG, REPO_WEIGHTS = "config.json", "model.safetensors"
LOADABLE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_ALIASES = {"vit5_small": "vit5_small_patch16_224", "vit5_base": "vit5_base_patch16_224",
            "vit5_large": "vit5_large_patch16_224"}  # fmt: skip
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass
class ResolvedSource:
    """A source resolved to a local file or directory, and where it came from.

    Attributes:
        given: What the caller passed.
        path: The local file or directory to read.
        kind: ``"path"``, ``"published"``, ``"hf-hub"`` (a saved repo), ``"hf-hub-file"`` or ``"url"``.
        resolved_url: The URL downloaded, after redirects (``None`` for a local path).
        revision: The Hub commit (``None`` unless from the Hub).
        sha256: SHA-256 of the weights file read (``None`` for a local path: the loader hashes it).
    """

    given: str
    path: Path
    kind: str = "path"
    resolved_url: str | None = None
    revision: str | None = None
    sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How messages name the source: what the user gave."""
        return self.given

    def provenance(self) -> dict[str, Any]:
        """``pretrained_cfg`` fields recording a download (empty for a local path)."""
        if self.kind == "path":
            return {}
        return {"source": self.given, "resolved_url": self.resolved_url, "revision": self.revision,
                "sha256": self.sha256}  # fmt: skip


def published_name(name: object) -> str | None:
    """The published checkpoint ``name`` refers to (a name of :data:`PUBLISHED` or a 224 px alias such
    as ``vit5_small``), else ``None``."""
    if not isinstance(name, str):
        return None
    name = _ALIASES.get(name, name)
    return name if name in PUBLISHED else None


def parse_hub_id(text: str) -> tuple[str, str | None, str | None]:
    """``hf-hub:ORG/REPO[@REVISION][/FILE]`` -> ``(ORG/REPO, REVISION or None, FILE or None)``.

    Raises:
        CheckpointError: not of that form.
    """
    body = text[len(HUB_PREFIX) :] if text.startswith(HUB_PREFIX) else text
    parts = body.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1] or any(not p for p in parts[2:]):
        raise CheckpointError(f"{text}: expected hf-hub:ORG/REPO[@REVISION][/FILE]")
    if any(
        p in (".", "..") or "\\" in p or "\x00" in p for p in parts
    ):  # names inside the repo and the cache
        raise CheckpointError(
            f"{text}: '.', '..' and '\\' are not allowed in hf-hub:ORG/REPO[@REVISION][/FILE]"
        )
    repo, _, revision = parts[1].partition("@")
    if not repo or (_ and not revision) or revision in (".", "..") or repo in (".", ".."):
        raise CheckpointError(f"{text}: expected hf-hub:ORG/REPO[@REVISION][/FILE]")
    return f"{parts[0]}/{repo}", revision or None, "/".join(parts[2:]) or None


def resolve_source(
    source: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    from_config_file: bool = False,
    trust_config: bool = False,
    sha256: str | None = None,
) -> ResolvedSource:
    """The local copy of ``source`` (see the module docstring), downloaded and verified if remote.

    Args:
        source: A path, published name, ``hf-hub:`` id or URL.
        cache_dir: The Hugging Face cache for Hub files (default ``$HF_HOME/hub``).
        from_config_file: The source was read from a config file (``train.finetune:``).
        trust_config: Allow a raw URL read from a config file.
        sha256: The expected SHA-256 of the file (URLs and single files), checked.

    Raises:
        CheckpointError: nothing of that name, a missing repo / file / revision, offline without a
            cached copy, a download that fails or does not match its digest (one line naming the
            source).
    """
    given = os.fspath(source) if isinstance(source, os.PathLike) else source
    if not isinstance(given, str):
        raise TypeError(f"source must be a path, name, hf-hub: id or URL, got {type(source).__name__}")
    local = Path(given).expanduser()
    if not is_url(given) and not given.startswith(HUB_PREFIX) and local.exists():
        if sha256 is not None and local.is_file() and file_digest(local) != sha256.lower():
            raise CheckpointError(
                f"{given}: sha256 {file_digest(local)} differs from the expected {sha256.lower()}"
            )
        return ResolvedSource(given, local)
    name = published_name(given)
    if name is not None:
        entry = PUBLISHED[name]
        resolved = hub_file(
            entry.hf_hub_id, entry.hf_hub_filename, None, cache_dir, label=given, sha256=sha256
        )
        resolved.kind = "published"
        return resolved
    if given.startswith(HUB_PREFIX):
        repo, revision, filename = parse_hub_id(given)
        if filename is not None:
            resolved = hub_file(repo, filename, revision, cache_dir, label=given, sha256=sha256)
            resolved.kind = "hf-hub-file"
            return resolved
        return _hub_repo(given, repo, revision, cache_dir)
    if is_url(given):
        if from_config_file and not trust_config:
            raise CheckpointError(
                f"{given}: a URL read from a config file is fetched only with --trust-config (or give it on "
                "the command line)"
            )
        download = fetch_url(given, sha256)
        return ResolvedSource(given, download.path, "url", download.resolved_url, None, download.sha256)
    raise CheckpointError(
        f"{given}: no such file or directory, and not a published name ({', '.join(PUBLISHED)}), an "
        "hf-hub:ORG/REPO[@REVISION][/FILE] id or an http(s) URL"
    )


def _hub_repo(given: str, repo: str, revision: str | None, cache_dir: Any) -> ResolvedSource:
    """A repo as save_pretrained writes it: ``config.json`` and ``model.safetensors``, one snapshot."""
    try:
        config = hub_file(repo, REPO_CONFIG, revision, cache_dir, label=given)
    except _MissingEntry:
        files = _list_loadable(repo, revision)
        raise CheckpointError(
            f"{given}: the repo has no {REPO_CONFIG} (not written by save_pretrained); load one of its files "
            f"as hf-hub:{repo}{'@' + revision if revision else ''}/FILE: {', '.join(files) or 'none loadable'}"
        ) from None
    weights = hub_file(repo, REPO_WEIGHTS, config.revision or revision, cache_dir, label=given)
    if weights.path.parent != config.path.parent:
        raise CheckpointError(f"{given}: {REPO_CONFIG} and {REPO_WEIGHTS} came from different revisions")
    return ResolvedSource(given, config.path.parent, "hf-hub", weights.resolved_url, weights.revision,
                          weights.sha256)  # fmt: skip


class _MissingEntry(CheckpointError):
    """The repo exists but has no such file."""


def _list_loadable(repo: str, revision: str | None) -> list[str]:
    if is_offline():
        return []
    from huggingface_hub import HfApi

    try:
        files = HfApi().list_repo_files(repo, revision=revision)
    except Exception:  # a listing is a hint in an error message; its failure must not hide that error
        return []
    return sorted(f for f in files if f.endswith(LOADABLE_SUFFIXES))


def hub_file(
    repo: str,
    filename: str,
    revision: str | None,
    cache_dir: Any,
    *,
    label: str | None = None,
    sha256: str | None = None,
) -> ResolvedSource:
    """``hf_hub_download(repo, filename, revision)`` checked against its ETag (see the module docstring).

    Raises:
        CheckpointError: a missing repo, revision or file, offline without a cached copy, a failed
            download, or a digest mismatch after one new download.
    """
    label = label or f"{HUB_PREFIX}{repo}{'@' + revision if revision else ''}/{filename}"
    cache = os.fspath(cache_dir) if cache_dir is not None else None
    path = _download(repo, filename, revision, cache, label, force=False)
    problem = _digest_problem(path, sha256)
    if problem:
        logger.warning("%s: %s; deleting the cached copy and downloading it again", label, problem)
        _remove_cached(path)
        if is_offline():
            raise CheckpointError(
                f"{label}: {problem}; HF_HUB_OFFLINE is set, so it cannot be downloaded again"
            )
        path = _download(repo, filename, revision, cache, label, force=True)
        problem = _digest_problem(path, sha256)
        if problem:
            _remove_cached(path)
            raise CheckpointError(f"{label}: {problem} (after downloading it again)")
    commit = Path(path).parent.name if Path(path).parent.parent.name == "snapshots" else None
    if "/" in filename and commit is None:  # a file in a subfolder: snapshots/<commit>/<dir>/<file>
        parents = Path(path).parents
        commit = next((p.name for p in parents if p.parent.name == "snapshots"), None)
    return ResolvedSource(label, Path(path), "hf-hub-file", _resolved_url(repo, filename, commit, label),
                          commit, file_digest(path))  # fmt: skip


def _download(
    repo: str, filename: str, revision: str | None, cache: str | None, label: str, force: bool
) -> str:
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo, filename, revision=revision, cache_dir=cache, force_download=force)
    except hub_errors.RevisionNotFoundError:
        raise CheckpointError(f"{label}: the repo {repo} has no revision {revision!r}") from None
    except hub_errors.RepositoryNotFoundError:
        raise CheckpointError(
            f"{label}: no such repo {repo} at {_endpoint()} (or it is private: set HF_TOKEN)"
        ) from None
    except hub_errors.RemoteEntryNotFoundError:
        raise _MissingEntry(f"{label}: the repo {repo} has no file {filename!r}") from None
    except hub_errors.LocalEntryNotFoundError:
        raise CheckpointError(
            f"{label}: not in the Hugging Face cache and {'HF_HUB_OFFLINE is set' if is_offline() else 'the Hub cannot be reached'}"
        ) from None
    except hub_errors.HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        raise CheckpointError(f"{label}: the Hub answered HTTP {status}") from None
    except Exception as error:  # httpx protocol errors, OSError, ...: one line naming the source
        text = str(error).splitlines()[0] if str(error) else ""
        raise CheckpointError(f"{label}: download failed ({type(error).__name__}: {text})") from None


def _digest_problem(path: str | os.PathLike, sha256: str | None) -> str | None:
    """Why the cached file does not match its ETag (the blob name) or ``sha256``; ``None`` if it does."""
    digest = file_digest(path)
    if sha256 is not None and digest != sha256.lower():
        return f"sha256 {digest} differs from the expected {sha256.lower()}"
    real = Path(os.path.realpath(path))
    etag = real.name if real.parent.name == "blobs" else None
    if etag is None or not _HEX.match(etag):
        return None  # no symlinked blob (a copy-based cache): nothing recorded to compare with
    if len(etag) == 64 and digest != etag:
        return f"sha256 {digest} differs from its ETag {etag} (a corrupted or truncated download)"
    if len(etag) == 40 and _git_blob_sha1(real) != etag:
        return f"git blob hash differs from its ETag {etag} (a corrupted or truncated download)"
    return None


def _git_blob_sha1(path: Path) -> str:
    hasher = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def _remove_cached(path: str | os.PathLike) -> None:
    real = os.path.realpath(path)
    Path(path).unlink(missing_ok=True)
    Path(real).unlink(missing_ok=True)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _resolved_url(repo: str, filename: str, commit: str | None, label: str) -> str:
    """The URL of the file at ``commit``, after redirects when the Hub can be asked (one HEAD)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo, filename, revision=commit)
    if is_offline():
        return url
    try:
        location = get_hf_file_metadata(url).location
    except Exception:  # the file is already verified; the redirect target is a record, not a requirement
        return url
    old, new = urllib.parse.urlparse(url), urllib.parse.urlparse(location)
    if (old.hostname, old.port) != (new.hostname, new.port):
        logger.info("%s: %s redirects to another host: %s", label, url, location)
    return location
