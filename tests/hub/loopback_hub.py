"""A loopback (127.0.0.1) stand-in for the Hugging Face Hub: what huggingface_hub 2.4 calls.

Downloads: ``HEAD``/``GET /ORG/REPO/resolve/REV/FILE`` with ``X-Repo-Commit``, ``ETag`` (the git
blob sha1 of a small file; for LFS files ``X-Linked-Etag`` = sha256 and ``X-Linked-Size``),
``Content-Length``, ``Range`` -> 206, 404s with ``X-Error-Code`` (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``). LFS files redirect (302) to a second loopback port
standing in for the CDN. Listing: ``GET /api/models/REPO/tree/REV``.

Uploads: ``POST /api/repos/create`` (409 when it exists), ``POST /api/validate-yaml``,
``POST /api/models/REPO/preupload/REV`` (every file ``"uploadMode": "regular"``),
``POST /api/models/REPO/commit/REV`` (NDJSON), ``POST /api/models/REPO/branch/NAME``.

Faults for tests: ``corrupt[(repo, file)] = n`` serves n corrupted copies (same length, wrong
bytes), ``truncate[(repo, file)] = n`` closes n responses half-way. Every request is recorded in
``requests`` as ``(method, path)``.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
import urllib.parse
from dataclasses import dataclass, field

LFS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    private: bool = False


class LoopbackHub:
    """The Hub on 127.0.0.1 (``endpoint``) and its CDN on a second port; ``start()`` / ``stop()``."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.corrupt: dict[tuple[str, str], int] = {}
        self.truncate: dict[tuple[str, str], int] = {}
        self.blobs: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self._servers: list[http.server.ThreadingHTTPServer] = []

    # ---------------------------------------------------------------- content
    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        repo = self.repos.setdefault(repo_id, Repo())
        parent = repo.commits.get(repo.branches.get(branch, ""), {})
        content = {**parent, **files}
        oid = hashlib.sha1(
            json.dumps([repo_id, branch, len(repo.commits), sorted(content)]).encode()
        ).hexdigest()
        repo.commits[oid] = content
        repo.branches[branch] = oid
        for data in files.values():
            self.blobs[hashlib.sha256(data).hexdigest()] = data
        return oid

    def _resolve(self, repo_id: str, revision: str) -> tuple[Repo | None, str | None]:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, None
        if revision in repo.commits:
            return repo, revision
        return repo, repo.branches.get(revision)

    # ---------------------------------------------------------------- servers
    def start(self) -> LoopbackHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        for _ in range(2):
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    hub: LoopbackHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    # ------------------------------------------------------------- helpers
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:  # fmt: skip
        self.send_response(status)
        headers = {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, value: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), headers)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._json(
            status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})}
        )

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _on_cdn(self) -> bool:
        return self.server.server_address[1] == self.hub._servers[1].server_address[1]

    # ------------------------------------------------------------- routing
    def do_HEAD(self) -> None:  # noqa: N802
        self._get()

    def do_GET(self) -> None:  # noqa: N802
        self._get()

    def _get(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        with self.hub.lock:
            self.hub.requests.append((self.command, path))
        if self._on_cdn():
            return self._serve_blob(path.strip("/").split("/")[-1], None, None)
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
            return self._tree(f"{parts[2]}/{parts[3]}", parts[5])
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve_file(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        self._error(404, "NotFound", f"no route {path}")

    def do_POST(self) -> None:  # noqa: N802
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        with self.hub.lock:
            self.hub.requests.append(("POST", path))
        body = self._body()
        parts = path.strip("/").split("/")
        if path == "/api/repos/create":
            return self._create(json.loads(body))
        if path == "/api/validate-yaml":
            return self._json(200, {"errors": [], "warnings": []})
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            repo_id, action, rest = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
            if repo_id not in self.hub.repos:
                return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            if action == "preupload":
                files = json.loads(body)["files"]
                return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                  for f in files]})  # fmt: skip
            if action == "commit":
                return self._commit(repo_id, rest, body)
            if action == "branch":
                return self._branch(repo_id, rest, json.loads(body or b"{}"))
        self._error(404, "NotFound", f"no route {path}")

    # ------------------------------------------------------------- downloads
    def _resolve_file(self, repo_id: str, revision: str, filename: str) -> None:
        repo, commit = self.hub._resolve(repo_id, revision)
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        files = repo.commits[commit]
        if filename not in files:
            return self._error(404, "EntryNotFound", f"{filename} does not exist on {revision}",
                               {"X-Repo-Commit": commit})  # fmt: skip
        data = files[filename]
        headers = {"X-Repo-Commit": commit}
        if filename.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            headers.update({"X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)), "ETag": f'"{git_blob_sha1(data)}"',
                            "Location": f"{self.hub.cdn}/blobs/{sha}"})  # fmt: skip
            return self._send(302, b"", headers)
        self._serve_bytes(data, (repo_id, filename), {**headers, "ETag": f'"{git_blob_sha1(data)}"'})

    def _serve_blob(self, sha: str, repo_id: str | None, filename: str | None) -> None:
        data = self.hub.blobs.get(sha)
        if data is None:
            return self._send(404, b"no such blob")
        key = next(((r, f) for r, repo in self.hub.repos.items() for files in repo.commits.values()
                    for f, d in files.items() if d is data), (None, None))  # fmt: skip
        self._serve_bytes(data, key, {"ETag": f'"{sha}"'})

    def _serve_bytes(self, data: bytes, key: tuple, headers: dict[str, str]) -> None:
        with self.hub.lock:
            corrupt = self.hub.corrupt.get(key, 0) > 0 and self.command == "GET"
            truncate = self.hub.truncate.get(key, 0) > 0 and self.command == "GET"
            if corrupt:
                self.hub.corrupt[key] -= 1
            if truncate:
                self.hub.truncate[key] -= 1
        if corrupt:
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start, status = 0, 200
        ranged = self.headers.get("Range")
        if ranged and ranged.startswith("bytes="):
            first = ranged[6:].split("-")[0]
            start = int(first or 0)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if truncate:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body)),
                                "Content-Type": "application/octet-stream"}.items():  # fmt: skip
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(status, body, headers, "application/octet-stream")

    def _tree(self, repo_id: str, revision: str) -> None:
        repo, commit = self.hub._resolve(repo_id, revision)
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        items = [{"type": "file", "path": name, "size": len(data), "oid": git_blob_sha1(data)}
                 for name, data in sorted(repo.commits[commit].items())]  # fmt: skip
        self._json(200, items)

    # ------------------------------------------------------------- uploads
    def _create(self, payload: dict) -> None:
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        if repo_id in self.hub.repos:
            message = "You already created this model repo"  # the Hub also names the repo's url here
            return self._json(409, {"error": message, "url": f"{self.hub.endpoint}/{repo_id}"},
                              {"X-Error-Code": "RepoExists", "X-Error-Message": message})  # fmt: skip
        self.hub.repos[repo_id] = Repo(
            private=payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        )
        self.hub.commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
        self._json(200, {"url": f"{self.hub.endpoint}/{repo_id}", "name": repo_id})

    def _branch(self, repo_id: str, name: str, payload: dict) -> None:
        repo = self.hub.repos[repo_id]
        if name in repo.branches:
            return self._error(409, "BranchExists", f"Branch {name} already exists")
        start = payload.get("startingPoint") or "main"
        repo.branches[name] = repo.branches.get(start, start)
        self._json(200, {})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        repo = self.hub.repos[repo_id]
        if revision not in repo.branches:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        files: dict[str, bytes] = {}
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                value = item["value"]
                files[value["path"]] = base64.b64decode(value["content"])
        oid = self.hub.commit(repo_id, files, revision)
        self._json(200, {"commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid,
                         "pullRequestUrl": None})  # fmt: skip
