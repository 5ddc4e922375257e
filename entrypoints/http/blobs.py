"""Uploaded blobs (``/api/blobs/:digest``), kept under ``MODELPORT_HOME/blobs``.

A blob is written to a temporary file beside its final place while its sha256 is
computed, and renamed into place only when the digest matches: a blob file is
always whole and always what its name says.

A model created from blobs holds hard links to them (the store links what it
imports), and ``.used.json`` lists the blobs a create used. :meth:`BlobStore.prune`,
run after every delete, removes each listed blob that no model file links to any
more: deleting the last model that uses a blob removes the blob. A blob uploaded
and not used yet is never pruned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from ..files import write_atomic
from modelport.domain import InvalidRequest

CHUNK_BYTES = 1024 * 1024
USED = ".used.json"


class BlobStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    def record_use(self, model: str, digests: Iterable[str]) -> None:
        """Note that ``model`` was created from ``digests``."""
        with self._lock:
            used = self._used()
            for digest in digests:
                used[digest] = sorted(set(used.get(digest, [])) | {model})
            self._write_used(used)

    def prune(self) -> list[str]:
        """Remove the used blobs no model file links to any more; returns their digests."""
        removed = []
        with self._lock:
            used = self._used()
            for digest in list(used):
                path = self.path(digest)
                try:
                    links = os.stat(path).st_nlink
                except FileNotFoundError:
                    del used[digest]
                    continue
                if links <= 1:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    del used[digest]
                    removed.append(digest)
            if removed or used != self._used():
                self._write_used(used)
        return removed

    def _used(self) -> dict[str, list[str]]:
        try:
            data = json.loads((self.root / USED).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return {k: list(v) for k, v in data.items() if isinstance(v, list)} if isinstance(data, dict) else {}

    def _write_used(self, used: dict[str, list[str]]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(str(self.root / USED), json.dumps(used, indent=1).encode("utf-8"))

    def path(self, digest: str) -> Path:
        """Where the blob ``digest`` (64 hex digits) lives."""
        return self.root / f"sha256-{digest}"

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def save(self, digest: str, body: BinaryIO, limit: int | None = None) -> int:
        """Store ``body`` as blob ``digest``; returns its size. Refuses (and keeps
        nothing) when the content's sha256 is not ``digest`` or it exceeds ``limit``."""
        self.root.mkdir(parents=True, exist_ok=True)
        hasher, size = hashlib.sha256(), 0
        handle, temporary = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(handle, "wb") as out:
                while chunk := body.read(CHUNK_BYTES):
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise InvalidRequest(f"the blob is larger than {limit} bytes")
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = hasher.hexdigest()
            if actual != digest:
                raise InvalidRequest(f"digest mismatch: the body's sha256 is {actual}, not {digest}")
            os.replace(temporary, self.path(digest))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return size

    @contextlib.contextmanager
    def assembled(self, files: Iterable[tuple[str, str]]) -> Iterator[Path]:
        """A temporary folder holding each blob under its file name (hard links where
        the filesystem allows, copies otherwise); deleted when the block ends."""
        files = list(files)
        missing = [f"sha256:{digest}" for _, digest in files if not self.exists(digest)]
        if missing:
            raise InvalidRequest(f"blob {', '.join(missing)} not found; upload it first with POST /api/blobs/<digest>")
        self.root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=self.root, prefix=".create-"))
        try:
            for name, digest in files:
                target = folder / _safe_name(name)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(self.path(digest), target)
                except OSError:
                    shutil.copyfile(self.path(digest), target)
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _safe_name(name: str) -> str:
    """A relative file name that stays inside the folder."""
    parts = name.replace("\\", "/").split("/")
    if not name or name.startswith(("/", "\\")) or any(p in ("", ".", "..") for p in parts) or ":" in name:
        raise InvalidRequest(f"invalid file name in files: {name!r}")
    return "/".join(parts)
