"""Changing what is installed: moving a staged folder into place as a model (and
recording it in the index), and taking a model out. Both hold the index's lock;
what they replace or remove is set aside in the staging folder and deleted after
the lock is let go, so the index never names a half-moved folder."""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable

import attrs

from modelport.domain import InvalidRequest, ModelDefaults, ModelFile, ModelFormat, ModelNotFound, ModelRef

from .files import delete, folder_files, fsync_folder
from .index import IndexEntry, ModelIndex
from .records import canonical_name, format_of, model_folder
from .staging import INSTALLED, Staging

CheckNewName = Callable[[ModelRef, "dict[str, IndexEntry]"], None]


def install(
    root: str,
    index: ModelIndex,
    staging: Staging,
    ref: ModelRef,
    folder: str,
    files: Iterable[ModelFile],
    *,
    replace: bool,
    check_new_name: CheckNewName,
    primary_file: str | None = None,
    defaults: ModelDefaults | None = None,
) -> IndexEntry:
    """Move the staged ``folder`` into place as ``ref`` and record it; an older copy
    is replaced when ``replace``, else ``check_new_name`` refuses a taken name."""
    if os.path.dirname(os.path.realpath(folder)) != os.path.realpath(staging.root):
        raise InvalidRequest(f"'{folder}' is not a staging folder of this store")
    delete(os.path.join(folder, INSTALLED))
    files = _measured(folder, tuple(files))
    if primary_file:
        model_format, primary = format_of(folder, primary_file), primary_file
    else:
        model_format, primary = _primary(ref, folder, files)
    name, target_name = canonical_name(ref), model_folder(ref)
    target = os.path.join(root, target_name)
    os.chmod(folder, 0o755)
    with index.locked():
        entries = index.read()
        if not replace:
            check_new_name(ref, entries)
        old = staging.set_aside(target) if os.path.lexists(target) else None
        try:
            os.rename(folder, target)
        except OSError:
            if old:
                os.rename(old, target)  # put the older copy back
            raise
        fsync_folder(root)
        previous = entries.get(name)
        now = time.time()
        entries[name] = IndexEntry(
            name=name,
            folder=target_name,
            format=model_format,
            primary_file=primary,
            files=files,
            added_at=previous.added_at if previous else now,
            modified_at=now,
            defaults=defaults or ModelDefaults(),
        )
        index.write(entries)
    if old:
        delete(old)
    return entries[name]


def uninstall(root: str, index: ModelIndex, staging: Staging, name: str, asked: str) -> None:
    """Drop ``name`` from the index, then delete its folder unless another entry shares
    it (only ever a model folder inside the store). ``asked``: the name the user gave."""
    with index.locked():
        entries = index.read()
        entry = entries.pop(name, None)
        if entry is None:
            raise ModelNotFound(asked)
        target = os.path.join(root, entry.folder)
        _check_inside(root, target)
        index.write(entries)
        shared = any(other.folder == entry.folder for other in entries.values())
        aside = staging.set_aside(target) if not shared and os.path.lexists(target) else None
    if aside:
        delete(aside)


def _check_inside(root: str, target: str) -> None:
    """Refuse to delete anything that is not a model folder of this store."""
    real = os.path.realpath(target)
    inside = os.path.dirname(real) == os.path.realpath(root)
    if not inside or os.path.basename(real).startswith("."):
        raise InvalidRequest(f"refusing to delete '{target}': it resolves to '{real}', outside the model store {root}")


def _measured(folder: str, files: tuple[ModelFile, ...]) -> tuple[ModelFile, ...]:
    """The files with their sizes on disk (every file in ``folder`` when none are named)."""
    if not files:
        files = tuple(ModelFile(path=rel, size=0) for rel in folder_files(folder))
    measured = []
    for file in files:
        path = os.path.join(folder, file.path)
        if not os.path.isfile(path):
            raise InvalidRequest(f"cannot add the model: '{file.path}' is missing from the download")
        measured.append(attrs.evolve(file, size=os.path.getsize(path)))
    return tuple(measured)


def _primary(ref: ModelRef, folder: str, files: tuple[ModelFile, ...]) -> tuple[ModelFormat, str]:
    """What an engine loads: the GGUF file (the one naming the tag, if any) or config.json."""
    ggufs = sorted(
        (f.path for f in files if f.path.lower().endswith(".gguf") and "mmproj" not in f.path.lower()),
        key=lambda p: (p.count("/"), p),
    )
    if ggufs:
        tagged = [p for p in ggufs if ref.tag and ref.tag.lower() in os.path.basename(p).lower()]
        return ModelFormat.GGUF, (tagged or ggufs)[0]
    if any(f.path == "config.json" for f in files):
        return format_of(folder, "config.json"), "config.json"
    raise InvalidRequest(f"cannot add '{ref}': the download holds no .gguf file and no config.json")
