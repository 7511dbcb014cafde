"""The one vit5 downloader for plain ``http(s)://`` weight URLs (Hub files go through
``huggingface_hub``, :mod:`vit5.io.sources`).

A URL is fetched once into ``$HF_HOME/vit5/urls/`` (``HF_HOME`` defaults to
``~/.cache/huggingface``) as ``<sha256(url)[:16]>-<file name>`` next to a ``.json`` record of the
URL, the URL after redirects and the file's SHA-256. The bytes go to ``<name>.incomplete`` first (a
later call resumes it with a ``Range`` request) and are renamed to the final name only once
complete and checked, so nothing partial ever sits under a final name. Every later use re-hashes
the file against its record; a mismatch deletes it and downloads once more. ``HF_HUB_OFFLINE=1``
uses only what is cached. A redirect to another host is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from vit5._io import atomic_write_text
from vit5._text import terminal_text
from vit5.io.weights_file import CheckpointError, file_digest

__all__ = ["Download", "fetch_url", "hf_home", "is_offline", "is_url", "url_cache_dir"]

logger = logging.getLogger("vit5.download")
_CHUNK = 1 << 20


@dataclass
class Download:
    """A verified local copy of a URL."""

    path: Path
    url: str
    resolved_url: str
    sha256: str


def is_url(source: object) -> bool:
    """Whether ``source`` is an ``http://`` or ``https://`` URL."""
    return isinstance(source, str) and urllib.parse.urlparse(source).scheme in ("http", "https")


def hf_home() -> Path:
    """``$HF_HOME``, else ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface``."""
    if os.environ.get("HF_HOME"):
        return Path(os.path.expanduser(os.environ["HF_HOME"]))
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"


def url_cache_dir() -> Path:
    """Where :func:`fetch_url` keeps downloads: ``$HF_HOME/vit5/urls``."""
    return hf_home() / "vit5" / "urls"


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` set to a true value (as ``huggingface_hub`` reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


class _LoggingRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        old, new = urllib.parse.urlparse(req.full_url), urllib.parse.urlparse(newurl)
        if (old.hostname, old.port) != (new.hostname, new.port):
            logger.info("%s redirects to another host: %s", req.full_url, newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_url(
    url: str, sha256: str | None = None, directory: str | os.PathLike | None = None, *, timeout: float = 60.0
) -> Download:
    """The verified local copy of ``url`` (see the module docstring).

    Args:
        url: An ``http(s)://`` URL.
        sha256: The expected SHA-256 (hex) of the file, when known; checked on every call.
        directory: Where to keep the file (default :func:`url_cache_dir`).
        timeout: Seconds to wait for the server per request.

    Raises:
        CheckpointError: the download fails (HTTP error, connection, truncated), its digest differs
            from ``sha256`` or from its record twice in a row, or ``HF_HUB_OFFLINE`` is set and the
            file is not cached.
    """
    if not is_url(url):
        raise CheckpointError(f"{url!r}: not an http(s) URL")
    expected = sha256.lower() if sha256 else None
    directory = Path(directory) if directory is not None else url_cache_dir()
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "weights"
    target = directory / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"
    record_path = target.with_name(target.name + ".json")
    for attempt in (1, 2):
        if target.is_file():
            cached = _verified(target, record_path, expected)
            if cached is not None:
                return cached
            if attempt == 2:
                break
        if is_offline():
            raise CheckpointError(f"{url}: not in the download cache ({directory}) and HF_HUB_OFFLINE is set")
        resolved = _download(url, target, timeout)
        digest = file_digest(target.with_name(target.name + ".incomplete"))
        if expected is not None and digest != expected:
            target.with_name(target.name + ".incomplete").unlink(missing_ok=True)
            if attempt == 2:
                raise CheckpointError(f"{url}: downloaded file has sha256 {digest}, expected {expected}")
            logger.warning("%s: downloaded file has sha256 %s, expected %s; downloading it again", url, digest,
                           expected)  # fmt: skip
            continue
        record = {"url": url, "resolved_url": resolved, "sha256": digest}
        os.replace(target.with_name(target.name + ".incomplete"), target)
        atomic_write_text(record_path, json.dumps(record, indent=1))
        logger.info("downloaded %s to %s", url, target)
        return Download(target, url, resolved, digest)
    raise CheckpointError(f"{url}: the cached copy {target} does not match its sha256 after a new download")


def _verified(target: Path, record_path: Path, expected: str | None) -> Download | None:
    """The cached download if it hashes to its record (and to ``expected``); else deletes it."""
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    digest = file_digest(target)
    wanted = expected or record.get("sha256")
    if wanted and digest == wanted and (not record.get("sha256") or record["sha256"] == digest):
        return Download(target, record.get("url", ""), record.get("resolved_url", ""), digest)
    logger.warning("%s: sha256 %s does not match %s; deleting it and downloading again", target, digest,
                   wanted or "its (missing) record")  # fmt: skip
    target.unlink(missing_ok=True)
    record_path.unlink(missing_ok=True)
    return None


def _download(url: str, target: Path, timeout: float) -> str:
    """Download ``url`` into ``<target>.incomplete`` (resuming one that exists); returns the final URL."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".incomplete")
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    opener = urllib.request.build_opener(_LoggingRedirects())
    try:
        with opener.open(request, timeout=timeout) as response:
            resumed = have and response.status == 206
            mode = "ab" if resumed else "wb"
            done = have if resumed else 0
            length = response.headers.get("Content-Length")
            total = done + int(length) if length is not None else None
            progress = _progress(total, done, Path(urllib.parse.urlparse(url).path).name)
            with open(partial, mode) as out:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            progress(None)
            final = response.geturl()
    except urllib.error.HTTPError as error:
        raise CheckpointError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CheckpointError(f"cannot download {url}: {reason}") from None
    if total is not None and done != total:
        raise CheckpointError(
            f"{url}: truncated download ({done} of {total} bytes; the partial file is kept to resume)"
        )
    return final


def _progress(total: int | None, start: int, label: str):  # noqa: ANN202
    """A progress callback on stderr (``tqdm`` when installed and stderr is a terminal)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return lambda step: None
    bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=terminal_text(label), file=sys.stderr,
               disable=None, leave=False)  # fmt: skip
    return lambda step: bar.close() if step is None else bar.update(step)
