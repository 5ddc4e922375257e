"""A Hugging Face Hub look-alike on 127.0.0.1, for tests: the real huggingface_hub
client talks to it as it would to huggingface.co.

It serves repositories kept in a temporary folder, with what huggingface_hub reads:

- ``GET /api/models/{repo}[/revision/{rev}]``: model info with ``sha`` and ``siblings``
  (``blobId``, ``size``, ``lfs: {sha256, size, pointerSize}`` when ``?blobs=true``);
- ``GET /api/models?search=&author=&filter=&sort=&limit=``: search;
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: small files directly (ETag = git blob id),
  LFS files as a 302 to a second server (the "CDN") with ``X-Linked-Etag`` (sha256),
  ``X-Linked-Size`` and ``X-Repo-Commit``;
- ``HEAD|GET /lfs/{sha256}`` on the CDN, with Range requests (206, 416);
- the Hub's errors: 401/403 with ``X-Error-Code: GatedRepo``, 401/404 ``RepoNotFound``,
  404 ``RevisionNotFound`` and ``EntryNotFound``.

Faults, set per file name before a request: close the connection after N bytes, stall
after N bytes (until released), answer with an error status, serve damaged bytes. Every
request is logged (method, path, Range, whether a token came, status, bytes sent).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".onnx", ".h5", ".msgpack")
STALL_LIMIT_S = 30.0
_SORT_FIELDS = {
    "downloads": "downloads",
    "likes": "likes",
    "trendingScore": "trendingScore",
    "createdAt": "createdAt",
    "lastModified": "lastModified",
}


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@attrs.define
class RepoFile:
    path: str
    disk: Path
    size: int
    blob_id: str
    sha256: str | None  # set for LFS files
    advertised_size: int | None = None  # a lie told by the metadata (the disk-full test)

    @property
    def listed_size(self) -> int:
        return self.advertised_size if self.advertised_size is not None else self.size


@attrs.define
class Repo:
    repo_id: str
    revisions: dict[str, str] = attrs.Factory(dict)  # name -> commit
    commits: dict[str, dict[str, RepoFile]] = attrs.Factory(dict)
    private: bool = False
    gated: bool = False
    downloads: int = 0
    likes: int = 0
    pipeline_tag: str | None = None
    tags: list[str] = attrs.Factory(list)
    created_at: str = "2025-01-01T00:00:00.000Z"


@attrs.define
class Logged:
    server: str
    method: str
    path: str
    range: str | None
    authorized: bool
    query: str = ""
    status: int = 0
    sent: int = 0


@attrs.define
class Faults:
    """Keyed by a file's path in its repository; each list is used up one request at a time."""

    abort_after: dict[str, list[int]] = attrs.Factory(dict)
    stall_after: dict[str, list[int]] = attrs.Factory(dict)
    status: dict[str, list[int]] = attrs.Factory(dict)
    corrupt: set[str] = attrs.Factory(set)


class HubServer:
    """Start with ``with HubServer(folder) as hub:``; ``hub.url`` is the endpoint."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, RepoFile] = {}
        self.tokens: dict[str, set[str]] = {}  # token -> repos it may read (gated or private)
        self.faults = Faults()
        self.log: list[Logged] = []
        self.release = threading.Event()  # ends every stall
        self.stalled = threading.Event()  # set when a stall begins
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []

    # -- content ---------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        revision: str = "main",
        lfs: tuple[str, ...] = LFS_SUFFIXES,
        advertised_sizes: dict[str, int] | None = None,
        **fields: Any,
    ) -> str:
        """Add (or add a revision to) a repository; returns the new commit's sha."""
        repo = self.repos.get(repo_id) or Repo(repo_id=repo_id, **fields)
        self.repos[repo_id] = repo
        listing = hashlib.sha1(repo_id.encode() + revision.encode())
        for path in sorted(files):
            listing.update(path.encode() + hashlib.sha256(files[path]).digest())
        commit = listing.hexdigest()
        stored: dict[str, RepoFile] = {}
        for path, data in files.items():
            disk = self.folder / repo_id.replace("/", "--") / commit / path
            disk.parent.mkdir(parents=True, exist_ok=True)
            disk.write_bytes(data)
            is_lfs = path.endswith(lfs)
            file = RepoFile(
                path=path,
                disk=disk,
                size=len(data),
                blob_id=git_blob_id(data),
                sha256=hashlib.sha256(data).hexdigest() if is_lfs else None,
                advertised_size=(advertised_sizes or {}).get(path),
            )
            stored[path] = file
            if file.sha256:
                self.lfs[file.sha256] = file
        repo.commits[commit] = stored
        repo.revisions[revision] = commit
        return commit

    def requests(
        self, *, server: str | None = None, method: str | None = None, file: str | None = None
    ) -> list[Logged]:
        """Logged requests, optionally only those of one server, method or file name."""
        with self._lock:
            entries = list(self.log)
        return [
            e
            for e in entries
            if (server is None or e.server == server)
            and (method is None or e.method == method)
            and (file is None or e.path.endswith("/" + file) or self._lfs_path(e.path) == file)
        ]

    def _lfs_path(self, path: str) -> str | None:
        if path.startswith("/lfs/"):
            found = self.lfs.get(path[len("/lfs/") :])
            return found.path if found else None
        return None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> "HubServer":
        for name in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            server.daemon_threads = True
            server.hub = self  # type: ignore[attr-defined]
            server.role = name  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._servers.append(server)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self._servers[0].server_address[1]

    @property
    def cdn_url(self) -> str:
        return "http://127.0.0.1:%d" % self._servers[1].server_address[1]

    def _take(self, table: dict[str, list[int]], path: str) -> int | None:
        with self._lock:
            values = table.get(path)
            return values.pop(0) if values else None

    def _record(self, entry: Logged) -> None:
        with self._lock:
            self.log.append(entry)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubserver/1"

    # -- plumbing ----------------------------------------------------------------------

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_HEAD(self) -> None:
        self._dispatch(body=False)

    def do_GET(self) -> None:
        self._dispatch(body=True)

    def _dispatch(self, body: bool) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(parsed.path)
        self.entry = Logged(
            server=self.server.role,
            method=self.command,
            path=path,  # type: ignore[attr-defined]
            range=self.headers.get("Range"),
            authorized=self.headers.get("Authorization") is not None,
            query=parsed.query,
        )
        self.hub._record(self.entry)
        self.send_body = body
        query = urllib.parse.parse_qs(parsed.query)
        if self.server.role == "cdn":  # type: ignore[attr-defined]
            return self._cdn(path)
        if parsed.path == "/api/models":
            return self._search(query)
        if parsed.path.startswith("/api/models/"):
            return self._model_info(parsed.path[len("/api/models/") :], query)
        match = re.fullmatch(r"/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", parsed.path)
        if match:
            return self._resolve(
                urllib.parse.unquote(match["repo"]),
                urllib.parse.unquote(match["rev"]),
                urllib.parse.unquote(match["file"]),
            )
        self._error(404, "not found")

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self._respond(status, data, {"Content-Type": "application/json", **(headers or {})})

    def _respond(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.entry.status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.send_body:
            self.wfile.write(data)
            self.entry.sent = len(data)

    def _error(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        extra = {"X-Error-Message": message, **(headers or {})}
        if code:
            extra["X-Error-Code"] = code
        self._json(status, {"error": message}, extra)

    # -- access ------------------------------------------------------------------------

    def _token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value[len("Bearer ") :] if value.startswith("Bearer ") else None

    def _repo(self, repo_id: str, *, files: bool) -> Repo | None:
        """The repository if this request may see it; answers the error otherwise."""
        token = self._token()
        if token is not None and token not in self.hub.tokens:
            self._error(401, "Invalid credentials in Authorization header")
            return None
        granted = self.hub.tokens.get(token or "", set())
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and repo_id not in granted):
            self._error(401 if token is None else 404, "Repository not found", "RepoNotFound")
            return None
        if files and repo.gated and repo_id not in granted:
            if token is None:
                self._error(
                    401,
                    f"Access to model {repo_id} is restricted. You must have access to it "
                    "and be authenticated to access it. Please log in.",
                    "GatedRepo",
                )
            else:
                self._error(
                    403, f"Access to model {repo_id} is restricted and you are not in the authorized list.", "GatedRepo"
                )
            return None
        return repo

    # -- the API -----------------------------------------------------------------------

    def _model_info(self, rest: str, query: dict[str, list[str]]) -> None:
        parts = [urllib.parse.unquote(p) for p in rest.split("/")]
        revision = "main"
        if "revision" in parts:
            at = parts.index("revision")
            parts, revision = parts[:at], "/".join(parts[at + 1 :])
        repo = self._repo("/".join(parts), files=False)
        if repo is None:
            return
        commit = repo.revisions.get(revision) or (revision if revision in repo.commits else None)
        if commit is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for file in sorted(repo.commits[commit].values(), key=lambda f: f.path):
            sibling: dict[str, Any] = {"rfilename": file.path}
            if blobs:
                sibling.update(blobId=file.blob_id, size=file.listed_size)
                if file.sha256:
                    sibling["lfs"] = {"sha256": file.sha256, "size": file.listed_size, "pointerSize": 134}
            siblings.append(sibling)
        self._json(
            200,
            {**_summary(repo), "sha": commit, "siblings": siblings, "lastModified": repo.created_at, "disabled": False},
        )

    def _search(self, query: dict[str, list[str]]) -> None:
        found = [r for r in self.hub.repos.values() if not r.private]
        if "search" in query:
            words = query["search"][0].lower()
            found = [r for r in found if words in r.repo_id.lower()]
        if "author" in query:
            found = [r for r in found if r.repo_id.split("/")[0] == query["author"][0]]
        for tag in query.get("filter", []):
            found = [r for r in found if tag in r.tags]
        field = _SORT_FIELDS.get(query.get("sort", ["downloads"])[0], "downloads")
        found.sort(key=lambda r: _summary(r)[field], reverse=True)
        limit = int(query.get("limit", ["1000"])[0])
        self._json(200, [_summary(r) for r in found[:limit]])

    # -- files -------------------------------------------------------------------------

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(repo_id, files=True)
        if repo is None:
            return
        commit = repo.revisions.get(revision) or (revision if revision in repo.commits else None)
        if commit is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return
        file = repo.commits[commit].get(path)
        if file is None:
            self._error(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit})
            return
        if file.sha256:
            self._respond(
                302,
                b"",
                {
                    "Location": f"{self.hub.cdn_url}/lfs/{file.sha256}",
                    "X-Repo-Commit": commit,
                    "X-Linked-Etag": f'"{file.sha256}"',
                    "X-Linked-Size": str(file.listed_size),
                    "ETag": f'"{git_blob_id(b"pointer " + file.sha256.encode())}"',  # the pointer's
                },
            )
            return
        self._send_file(file, {"X-Repo-Commit": commit, "ETag": f'"{file.blob_id}"'})

    def _cdn(self, path: str) -> None:
        file = self.hub.lfs.get(path[len("/lfs/") :]) if path.startswith("/lfs/") else None
        if file is None:
            self._error(404, "no such object")
            return
        self._send_file(file, {"ETag": f'"{file.sha256}"'})

    def _send_file(self, file: RepoFile, headers: dict[str, str]) -> None:
        status_fault = self.hub._take(self.hub.faults.status, file.path) if self.send_body else None
        if status_fault:
            self._error(status_fault, "injected failure")
            return
        start, end = 0, file.size - 1
        status = 200
        wanted = self.headers.get("Range")
        if wanted:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            if not match or int(match[1]) >= file.size:
                self._error(416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{file.size}"})
                return
            start = int(match[1])
            end = min(int(match[2]), file.size - 1) if match[2] else file.size - 1
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{file.size}"}
        length = end - start + 1
        self.entry.status = status
        self.send_response(status)
        headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if not self.send_body:
            return
        abort = self.hub._take(self.hub.faults.abort_after, file.path)
        stall = self.hub._take(self.hub.faults.stall_after, file.path)
        limit = min(x for x in (abort, stall, length) if x is not None)
        with open(file.disk, "rb") as handle:
            handle.seek(start)
            data = handle.read(length)
        if file.path in self.hub.faults.corrupt:
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
        try:
            for offset in range(0, limit, 64 * 1024):
                piece = data[offset : min(offset + 64 * 1024, limit)]
                self.wfile.write(piece)
                self.entry.sent += len(piece)
            self.wfile.flush()
            if limit < length:
                if stall is not None and limit == stall:
                    self.hub.stalled.set()
                    self.hub.release.wait(STALL_LIMIT_S)
                self.close_connection = True  # the client sees the body end early
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _summary(repo: Repo) -> dict[str, Any]:
    return {
        "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
        "private": repo.private,
        "gated": "manual" if repo.gated else False,
        "downloads": repo.downloads,
        "likes": repo.likes,
        "trendingScore": repo.likes,
        "pipeline_tag": repo.pipeline_tag,
        "tags": list(repo.tags),
        "createdAt": repo.created_at,
        "lastModified": repo.created_at,
    }
