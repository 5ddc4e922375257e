"""``<models_dir>/.staging/``: the store's work in progress, and its locks.

Layout::

    <org--name+tag>.pull/         a pull, running or interrupted (the next pull resumes it)
    <org--name+tag>.pull.lock     held while a pull of that model runs
    <org--name+tag>-<hex>.tmp/    a copy or an import (with its .lock)
    <org--name+tag>-old-<hex>/    a replaced or removed model, deleted right away

Every folder being worked in has its lock held, so :meth:`Staging.clean` (run as a
pull starts and as the server starts) deletes only what killed work left behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from typing import Callable, ContextManager, Iterator

from .files import delete, exclusive_lock, tree_size, unlink_lock

STAGING = ".staging"
PULL_SUFFIX = ".pull"
SCRATCH_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"
# Inside a pull's folder: hard links to the installed copy of the model, for reuse.
INSTALLED = ".installed"
# An interrupted pull nobody resumed for this long is deleted by the next pull.
PARTIAL_MAX_AGE_S = 14 * 24 * 3600
# A leftover from an unknown or older layout is deleted once this old.
UNKNOWN_MAX_AGE_S = 24 * 3600


class Staging:
    """The staging folder at ``root`` (created on first use)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def folder(self) -> str:
        os.makedirs(self.root, exist_ok=True)
        return self.root

    @contextlib.contextmanager
    def pull(self, name: str, link_installed: Callable[[str], None]) -> Iterator[str]:
        """The folder a pull of the model folder ``name`` downloads into: ``<name>.pull``.

        One pull of a model runs at a time: a second one waits here for the first. Only
        the store's commit installs what the folder holds. If the block fails (or the
        process dies) the folder stays, unlisted, and the next pull gets it back to
        resume; a block that ends without error and without commit deletes it. While the
        block runs, ``link_installed(folder/.installed)`` has put links to the installed
        copy there.
        """
        folder = os.path.join(self.folder(), name + PULL_SUFFIX)
        lock = folder + LOCK_SUFFIX
        with exclusive_lock(lock):
            self.clean()
            os.makedirs(folder, exist_ok=True)
            installed = os.path.join(folder, INSTALLED)
            delete(installed)
            link_installed(installed)
            succeeded = False
            try:
                yield folder
                succeeded = True
            finally:
                delete(installed)
                if succeeded or _is_empty_dir(folder):  # nothing to resume: no leftover
                    delete(folder)
                if not os.path.lexists(folder):
                    unlink_lock(lock)

    @contextlib.contextmanager
    def scratch(self, name: str) -> Iterator[str]:
        """A private folder for a copy or an import, deleted at the end whatever happens."""
        folder = os.path.join(self.folder(), f"{name}-{secrets.token_hex(4)}{SCRATCH_SUFFIX}")
        with exclusive_lock(folder + LOCK_SUFFIX):
            os.mkdir(folder)
            try:
                yield folder
            finally:
                delete(folder)
                unlink_lock(folder + LOCK_SUFFIX)

    def set_aside(self, path: str) -> str:
        """Rename ``path`` into the staging folder (one atomic step); its new name."""
        aside = os.path.join(self.folder(), f"{os.path.basename(path)}-old-{secrets.token_hex(4)}")
        os.rename(path, aside)
        return aside

    def clean(
        self, index_locked: Callable[[], ContextManager[None]] = contextlib.nullcontext, *, partial: bool = False
    ) -> int:
        """Delete what crashed copies, imports and removals left, and interrupted pulls
        older than two weeks (all of them with ``partial``); work in progress is never
        touched (each holds a lock). ``index_locked``: the store's lock, held while a
        set-aside model is deleted (a failed commit may be putting it back). Returns
        the bytes freed."""
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return 0
        freed = 0
        for name in names:
            path = os.path.join(self.root, name)
            if name.endswith(LOCK_SUFFIX):
                _delete_orphan_lock(path)
                continue
            if not os.path.isdir(path) or os.path.islink(path):
                continue
            if name.endswith(PULL_SUFFIX):
                if not partial and time.time() - _newest_mtime(path) < PARTIAL_MAX_AGE_S:
                    continue
            elif not name.endswith(SCRATCH_SUFFIX) and "-old-" in name:
                with index_locked():
                    freed += _delete_if_unlocked(path)
                continue
            elif not name.endswith(SCRATCH_SUFFIX):
                if time.time() - _newest_mtime(path) < UNKNOWN_MAX_AGE_S:
                    continue
            freed += _delete_if_unlocked(path)
        return freed


def _delete_orphan_lock(lock: str) -> None:
    """A lock whose folder is gone and that nobody holds (its holder was killed)."""
    folder = lock[: -len(LOCK_SUFFIX)]
    if os.path.lexists(folder):
        return
    with exclusive_lock(lock, blocking=False) as held:
        if held and not os.path.lexists(folder):
            unlink_lock(lock)


def _delete_if_unlocked(path: str) -> int:
    lock = path + LOCK_SUFFIX
    with exclusive_lock(lock, blocking=False) as held:
        if not held:
            return 0  # someone is working in it
        size = tree_size(path)
        delete(path)
        unlink_lock(lock)
        return size


def _is_empty_dir(path: str) -> bool:
    try:
        return not os.listdir(path)
    except OSError:
        return False


def _newest_mtime(path: str) -> float:
    newest = _mtime(path)
    for parent, _dirs, names in os.walk(path):
        for name in names:
            newest = max(newest, _mtime(os.path.join(parent, name)))
    return newest


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0
