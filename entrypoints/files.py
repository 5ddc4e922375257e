"""Writing the entrypoints' own files (the ``.env`` that ``cache max`` changes, the
detached server's pid record, saved replies, a chat saved to a path, the blob
folder's record) in one step: a crash leaves the old file or the new one.

The stores' files are the filesystem adapter's (``adapters/filesystem/files.py``);
entrypoints import no adapter (the dependency rule), so they keep this one helper.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


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
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
