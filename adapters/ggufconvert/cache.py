"""The one cache of GGUF files converted to Hugging Face folders.

Every engine that needs a folder for a GGUF (JAX, and MLX through the store's
``materialize``) asks :func:`converted_folder`, so each GGUF is converted once per
home, into ``<home>/cache/hf-from-gguf/<key>/``::

    <root>/<stem>-<hash>/            a complete conversion (config.json is written last)
    <root>/<stem>-<hash>.lock        held while a process converts it (then deleted)
    <root>/.<stem>-<hash>.*.tmp/     a conversion in progress, renamed into place

The key (:func:`~.convert.cache_key`) hashes the GGUF's real path, size, modification
time and the converter's version, so a changed file or converter gets a new folder.
A second process asking for the same key waits on the lock and reuses the result.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable

from modelport.adapters.filesystem.files import exclusive_lock, fsync_folder, unlink_lock

from .convert import cache_key

Converter = Callable[[str, str], object]  # converter(gguf_path, folder) writes the folder


def cache_root(home: str) -> str:
    """Where a home keeps its conversions."""
    return os.path.join(home, "cache", "hf-from-gguf")


def converted_folder(gguf_path: str, root: str, convert: Converter | None = None) -> str:
    """The Hugging Face folder of ``gguf_path`` under ``root``: converted now (under
    a lock, into a temporary folder renamed into place) unless a conversion is there.
    ``convert`` defaults to :func:`~.convert.materialize_hf_folder`."""
    target = os.path.join(root, cache_key(gguf_path))
    if _complete(target):
        return target
    os.makedirs(root, exist_ok=True)
    lock = target + ".lock"
    with exclusive_lock(lock):
        try:
            if not _complete(target):
                _convert_into(gguf_path, target, convert or _default_converter)
        finally:
            unlink_lock(lock)  # a waiter notices, sees the folder complete and reuses it
    return target


def _complete(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "config.json"))


def _convert_into(gguf_path: str, target: str, convert: Converter) -> None:
    parent = os.path.dirname(target)
    scratch = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    try:
        convert(gguf_path, scratch)
        fsync_folder(scratch)
        if os.path.lexists(target):  # an incomplete leftover (no config.json)
            shutil.rmtree(target, ignore_errors=True)
        os.replace(scratch, target)
        fsync_folder(parent)
    finally:
        if os.path.lexists(scratch):
            shutil.rmtree(scratch, ignore_errors=True)


def _default_converter(gguf_path: str, folder: str) -> None:
    from .convert import materialize_hf_folder

    materialize_hf_folder(gguf_path, folder)
