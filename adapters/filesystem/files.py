"""Small file helpers: atomic writes, an inter-process lock, hashing, linking."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from typing import BinaryIO, Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

CHUNK_SIZE = 1 << 20


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step: readers see the old or the new file."""
    folder = os.path.dirname(path) or "."
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_folder(folder)


def fsync_folder(folder: str) -> None:
    """Make renames inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_lock(path: str, *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created if needed), across threads and processes.

    Yields True once the lock is held; with ``blocking=False`` it yields False at once
    when someone else holds it. The holder may delete the lock file (:func:`unlink_lock`):
    whoever was waiting on the deleted file notices and locks the new one instead.
    """
    handle = _acquire(path, blocking)
    if handle is None:
        yield False
        return
    try:
        yield True
    finally:
        _release(handle)
        handle.close()


def unlink_lock(path: str) -> None:
    """Delete a lock file; call it only while holding the lock."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _acquire(path: str, blocking: bool) -> BinaryIO | None:
    while True:
        handle = open(path, "a+b")
        try:
            if not _lock(handle, blocking):
                handle.close()
                return None
            if _still_linked(handle, path):
                return handle
            _release(handle)  # its holder deleted the file while we waited: try again
        except BaseException:
            handle.close()
            raise
        handle.close()


def _lock(handle: BinaryIO, blocking: bool) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True
    handle.seek(0)
    try:
        msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)
    except OSError:
        if blocking:
            raise
        return False
    return True


def _release(handle: BinaryIO) -> None:
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    else:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)


def _still_linked(handle: BinaryIO, path: str) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(handle.fileno())
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def sha256_file(path: str) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    return file_digests(path)[0]


def file_digests(path: str, *, git: bool = False) -> tuple[str, str | None]:
    """The sha256 of a file and, with ``git``, its git blob id (the sha1 of
    ``b"blob <size>\\0"`` and the content), in one read."""
    digest = hashlib.sha256()
    blob = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode()) if git else None
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
            if blob is not None:
                blob.update(view[:count])
    return digest.hexdigest(), blob.hexdigest() if blob is not None else None


def tree_size(path: str) -> int:
    """Bytes of the files under ``path`` (links not followed)."""
    total = 0
    for parent, _dirs, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total


def link_or_copy(source: str, destination: str) -> None:
    """Hard-link ``source`` to ``destination``; copy it where linking is impossible."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def delete(path: str) -> None:
    """Delete a file, a link or a folder tree; links are removed, never followed."""
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


def folder_files(folder: str) -> list[str]:
    """Relative ``/``-separated paths of the files under ``folder``, sorted; hidden
    entries and ``__pycache__`` are left out."""
    found: list[str] = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in names:
            full = os.path.join(parent, name)
            if not name.startswith(".") and os.path.isfile(full):
                found.append(os.path.relpath(full, folder).replace(os.sep, "/"))
    return sorted(found)
