"""A pull's folder, kept across interruptions: finished files, partial files, and what
is known about both.

Layout inside the folder the store hands out::

    <path>                      a finished, verified file
    .partial/<path>.<etag>.part a file being downloaded; the next attempt appends to it
    .modelport-pull.json        size, mtime and digests of the finished files
    .installed/<path>           (the store's) links to the installed copy, reused if equal

Nothing is ever written into an existing file: downloads go to ``.partial`` and are
renamed into place once their digest matches the Hub's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import urllib.parse
from typing import Any, Callable, Iterable, Iterator, Protocol

from modelport.adapters.filesystem.files import file_digests  # sha256 (and git blob id) written once
from modelport.domain import ModelFile

from .selection import RemoteFile

STATE_FILE = ".modelport-pull.json"
PARTIAL_FOLDER = ".partial"
INSTALLED_FOLDER = ".installed"
CHUNK = 1 << 20


class Incomplete(Exception):
    """The connection ended before the whole file came; worth another attempt."""


class DigestMismatch(Exception):
    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(f"'{path}' does not match the Hub's digest: expected {expected}, got {actual}")
        self.path = path


class StreamingClient(Protocol):
    def stream(self, method: str, url: str, **kwargs: Any) -> contextlib.AbstractContextManager[Any]: ...


class PartialFile:
    """A download in progress, with the sha256 of the bytes it holds so far (kept
    across attempts in one process, computed again from the file in a new one)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._hasher = hashlib.sha256()
        self._hashed = 0

    @property
    def size(self) -> int:
        try:
            return os.path.getsize(self.path)
        except FileNotFoundError:
            return 0

    def restart(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._hasher, self._hashed = hashlib.sha256(), 0

    @contextlib.contextmanager
    def appending(self) -> Iterator[Callable[[bytes], None]]:
        """A ``write(chunk)`` that appends to the file, unbuffered (a killed process
        loses nothing it wrote), and hashes what it appends."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "ab", buffering=0) as handle:
            if self._hashed != handle.tell():
                self._rehash()

            def write(chunk: bytes) -> None:
                view = memoryview(chunk)
                while view:
                    written = handle.write(view)
                    view = view[written:]
                self._hasher.update(chunk)
                self._hashed += len(chunk)

            yield write

    def sha256(self) -> str:
        if self._hashed != self.size:
            self._rehash()
        return self._hasher.hexdigest()

    def _rehash(self) -> None:
        self._hasher, self._hashed = hashlib.sha256(), 0
        with open(self.path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                self._hasher.update(chunk)
                self._hashed += len(chunk)


def stream_into(
    client: StreamingClient,
    url: str,
    headers: dict[str, str],
    partial: PartialFile,
    size: int | None,
    on_bytes: Callable[[int], None],
    raise_for_status: Callable[[Any], None],
    timeout: Any,
) -> None:
    """One attempt at the rest of a file: GET from where ``partial`` stops (a Range
    request), appending as bytes arrive. Raises :class:`Incomplete` when the body ends
    short; network errors propagate for the caller to retry."""
    offset = partial.size
    if size is not None and offset > size:
        partial.restart()
        offset = 0
    if size is not None and offset == size:
        return
    request_headers = {**headers, "Accept-Encoding": "identity"}
    if offset:
        request_headers["Range"] = f"bytes={offset}-"
    with client.stream("GET", url, headers=request_headers, timeout=timeout) as response:
        if response.status_code == 416 and offset:
            partial.restart()  # the partial file no longer fits the remote one
            raise Incomplete(f"range {offset}- refused for {url}; starting the file again")
        if response.status_code >= 400:
            response.read()
            raise_for_status(response)
        if offset and (response.status_code != 206 or not _starts_at(response, offset)):
            partial.restart()  # the server sent the whole file: take it from the start
            offset = 0
        received = offset
        on_bytes(received)
        with partial.appending() as write:
            for chunk in response.iter_bytes():
                if chunk:
                    write(chunk)
                    received += len(chunk)
                    on_bytes(received)
    if size is not None and received < size:
        raise Incomplete(f"got {received} of {size} bytes of {url}")


def _starts_at(response: Any, offset: int) -> bool:
    content_range = response.headers.get("Content-Range", "")
    unit, _, spec = content_range.partition(" ")
    return unit == "bytes" and spec.split("-", 1)[0].strip() == str(offset)


class Workspace:
    """The pull folder of one model: what is finished, what is partial, what to reuse."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._state_path = os.path.join(folder, STATE_FILE)
        self._state = self._load()

    # -- finished files -------------------------------------------------------------

    def finished(self, remote: RemoteFile) -> ModelFile | None:
        """The file in place, when it matches ``remote``'s digest; else it is deleted."""
        target = self.target(remote.path)
        if not os.path.isfile(target):
            return None
        known = self._state.get(remote.path)
        stat = os.stat(target)
        if (
            known
            and known.get("size") == stat.st_size
            and known.get("mtime_ns") == stat.st_mtime_ns
            and known.get("source_digest") == remote.source_digest
            and remote.source_digest
        ):
            return ModelFile(
                path=remote.path, size=stat.st_size, sha256=known["sha256"], source_digest=remote.source_digest
            )
        return self._adopt(target, remote)

    def reuse_installed(self, remote: RemoteFile) -> ModelFile | None:
        """Move the installed copy's file into place when it is the same as ``remote``."""
        candidate = os.path.join(self.folder, INSTALLED_FOLDER, remote.path)
        if not os.path.isfile(candidate):
            return None
        if remote.size is not None and os.path.getsize(candidate) != remote.size:
            return None
        sha256, blob = file_digests(candidate, git=remote.sha256 is None)
        if not _matches(remote, sha256, blob):
            return None
        target = self.target(remote.path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(candidate, target)
        return self.record(remote, sha256)

    def install(self, remote: RemoteFile, partial: PartialFile) -> ModelFile:
        """Check a completed download against the Hub's digest and move it into place."""
        sha256 = partial.sha256()
        blob = file_digests(partial.path, git=True)[1] if remote.sha256 is None and remote.blob_id else None
        if not _matches(remote, sha256, blob):
            expected, actual = (remote.sha256, sha256) if remote.sha256 else (remote.blob_id, blob)
            partial.restart()
            raise DigestMismatch(remote.path, str(expected), str(actual))
        target = self.target(remote.path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(partial.path, target)
        return self.record(remote, sha256)

    def record(self, remote: RemoteFile, sha256: str) -> ModelFile:
        stat = os.stat(self.target(remote.path))
        self._state[remote.path] = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": sha256,
            "source_digest": remote.source_digest,
        }
        self._save()
        return ModelFile(path=remote.path, size=stat.st_size, sha256=sha256, source_digest=remote.source_digest)

    # -- partial files ----------------------------------------------------------------

    def partial(self, remote: RemoteFile, etag: str) -> PartialFile:
        """The partial file of ``remote`` at version ``etag``; those of other versions go."""
        prefix = urllib.parse.quote(remote.path, safe="") + "."
        name = f"{prefix}{_safe(etag)[:24]}.part"
        folder = os.path.join(self.folder, PARTIAL_FOLDER)
        with contextlib.suppress(FileNotFoundError):
            for other in os.listdir(folder):
                if other.startswith(prefix) and other != name:
                    os.unlink(os.path.join(folder, other))
        return PartialFile(os.path.join(folder, name))

    def partial_bytes(self, remote: RemoteFile) -> int:
        prefix = urllib.parse.quote(remote.path, safe="") + "."
        folder = os.path.join(self.folder, PARTIAL_FOLDER)
        try:
            return max(
                (os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder) if n.startswith(prefix)),
                default=0,
            )
        except FileNotFoundError:
            return 0

    # -- the end ------------------------------------------------------------------------

    def finish(self, keep: Iterable[str]) -> None:
        """Leave only the files of this pull: drop leftovers, partials and bookkeeping."""
        keep = set(keep)
        for parent, dirs, names in os.walk(self.folder, topdown=True):
            relative = os.path.relpath(parent, self.folder).replace(os.sep, "/")
            relative = "" if relative == "." else relative + "/"
            dirs[:] = [d for d in dirs if not (relative == "" and d == INSTALLED_FOLDER)]
            for name in names:
                if relative + name not in keep:
                    os.unlink(os.path.join(parent, name))
        shutil.rmtree(os.path.join(self.folder, PARTIAL_FOLDER), ignore_errors=True)
        for parent, _dirs, _names in sorted(os.walk(self.folder), key=lambda w: -len(w[0])):
            if parent != self.folder and not os.listdir(parent):
                os.rmdir(parent)

    def target(self, path: str) -> str:
        return os.path.join(self.folder, *path.split("/"))

    # -- internals ----------------------------------------------------------------------

    def _adopt(self, target: str, remote: RemoteFile) -> ModelFile | None:
        """A file in place that no record vouches for: keep it if its digest matches."""
        if remote.source_digest is None or (remote.size is not None and os.path.getsize(target) != remote.size):
            os.unlink(target)
            return None
        sha256, blob = file_digests(target, git=remote.sha256 is None)
        if not _matches(remote, sha256, blob):
            os.unlink(target)
            return None
        return self.record(remote, sha256)

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self._state_path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return {}
        files = data.get("files") if isinstance(data, dict) else None
        return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}

    def _save(self) -> None:
        fd, temp = tempfile.mkstemp(dir=self.folder, prefix=".state.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"version": 1, "files": self._state}, handle)
            os.replace(temp, self._state_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise


def _matches(remote: RemoteFile, sha256: str, blob: str | None) -> bool:
    if remote.sha256:
        return sha256 == remote.sha256
    if remote.blob_id:
        return blob == remote.blob_id
    return True  # the mirror gave no digest: nothing to check against


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text) or "x"
