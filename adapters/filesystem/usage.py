"""What the store's files are worth: verifying them again, and the disk they use."""

from __future__ import annotations

import os
import shutil
from typing import Iterable

from modelport.domain import DiskUsage, FileCheck, ModelFile

from .files import file_digests
from .index import IndexEntry


def disk_usage(root: str, entries: Iterable[IndexEntry], staging: str) -> DiskUsage:
    """Bytes used by installed models (a file hard-linked into several counts once in
    ``models``, fully in each model's ``by_model``), by interrupted pulls (under
    ``staging``), and the space left on the store's filesystem."""
    seen: set[tuple[int, int]] = set()
    models, by_model = 0, []
    for entry in sorted(entries, key=lambda e: e.name):
        own = 0
        for file in entry.files:
            stat = _stat(os.path.join(root, entry.folder, file.path))
            if stat is not None:
                own += stat.st_size
                models += _count_once(stat, seen)
        by_model.append((entry.name, own))
    partial = 0
    for parent, _dirs, names in os.walk(staging):
        for name in names:
            stat = _stat(os.path.join(parent, name))
            partial += _count_once(stat, seen) if stat is not None else 0
    return DiskUsage(root=root, models=models, partial=partial, free=_free_space(root), by_model=by_model)


def check_file(location: str, file: ModelFile) -> FileCheck:
    """Hash one file again: sha256, and the source's own digest where it gave one."""
    path = os.path.join(location, file.path)
    algorithm, _, _ = (file.source_digest or "").partition(":")
    source = file.source_digest if algorithm in ("sha256", "git-sha1") else None
    if not os.path.isfile(path):
        return FileCheck(path=file.path, expected=file.sha256, actual=None, source=source)
    sha256, blob = file_digests(path, git=algorithm == "git-sha1")
    source_actual = {"sha256": f"sha256:{sha256}", "git-sha1": f"git-sha1:{blob}"}.get(algorithm)
    return FileCheck(
        path=file.path,
        expected=file.sha256,
        actual=sha256,
        source=source,
        source_actual=source_actual if source else None,
    )


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _count_once(stat: os.stat_result, seen: set[tuple[int, int]]) -> int:
    key = (stat.st_dev, stat.st_ino)
    if key in seen:
        return 0
    seen.add(key)
    return stat.st_size


def _free_space(path: str) -> int:
    """Free bytes on the filesystem holding ``path`` (or its nearest existing parent)."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0
