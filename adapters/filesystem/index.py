"""``index.json``: the list of installed models, rewritten atomically under a lock."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from typing import Any, Iterator, Mapping

import attrs

from modelport.domain import InvalidRequest, ModelDefaults, ModelFile, ModelFormat, ModelRef

from .files import exclusive_lock, write_atomic

INDEX_FILE = "index.json"
LOCK_FILE = ".lock"
INDEX_VERSION = 1
# A model folder is one plain name inside the store: never hidden, never a path.
_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def _folder(_instance: object, _attribute: object, value: str) -> None:
    if not _FOLDER.fullmatch(value) or ".." in value:
        raise ValueError(f"not a model folder name: {value!r}")


@attrs.frozen(kw_only=True)
class IndexEntry:
    """One installed model: its canonical name, its folder and its files."""

    name: str
    folder: str = attrs.field(validator=_folder)
    format: ModelFormat = attrs.field(converter=ModelFormat)
    primary_file: str
    files: tuple[ModelFile, ...] = attrs.field(converter=tuple)
    added_at: float = 0.0
    modified_at: float = 0.0
    defaults: ModelDefaults = attrs.field(factory=ModelDefaults)  # what create added

    def to_dict(self) -> dict[str, Any]:
        data = {
            "name": self.name,
            "folder": self.folder,
            "format": self.format.value,
            "primary_file": self.primary_file,
            "files": [_file_dict(f) for f in self.files],
            "added_at": self.added_at,
            "modified_at": self.modified_at,
        }
        if not self.defaults.empty:
            data["defaults"] = self.defaults.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "IndexEntry":
        """Raises KeyError, TypeError or ValueError for an entry that makes no sense."""
        ModelRef.parse(data["name"])
        return cls(
            name=data["name"],
            folder=data["folder"],
            format=data["format"],
            primary_file=data["primary_file"],
            files=[
                ModelFile(path=f["path"], size=f["size"], sha256=f.get("sha256"), source_digest=f.get("source_digest"))
                for f in data["files"]
            ],
            added_at=float(data.get("added_at", 0.0)),
            modified_at=float(data.get("modified_at", 0.0)),
            defaults=_defaults(data.get("defaults")),
        )


def _defaults(data: Any) -> ModelDefaults:
    """The stored defaults; ones this version cannot read are dropped, not the model."""
    if not isinstance(data, Mapping):
        return ModelDefaults()
    try:
        return ModelDefaults.from_dict(data)
    except (InvalidRequest, TypeError, AttributeError):
        return ModelDefaults()


def _file_dict(file: ModelFile) -> dict[str, Any]:
    data: dict[str, Any] = {"path": file.path, "size": file.size, "sha256": file.sha256}
    if file.source_digest:
        data["source_digest"] = file.source_digest
    return data


class ModelIndex:
    """Read without a lock (writes are atomic renames); write only inside :meth:`locked`.

    The parsed index is kept and reused while the file on disk is the same one: a
    write, here or in another process, renames a new file into place, so its inode
    (and mtime and size) change and the next read parses it again."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.path = os.path.join(root, INDEX_FILE)
        self._cache: tuple[tuple[int, int, int, int], dict[str, IndexEntry]] | None = None
        self._cache_lock = threading.Lock()

    def read(self) -> dict[str, IndexEntry]:
        """Entries by canonical name (a new dict each call); entries that make no
        sense are skipped."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return {}
        identity = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._cache_lock:
            cached = self._cache
        if cached is not None and cached[0] == identity:
            return dict(cached[1])
        entries = self._parse()
        with self._cache_lock:
            self._cache = (identity, entries)
        return dict(entries)

    def _parse(self) -> dict[str, IndexEntry]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise InvalidRequest(
                f"the model index '{self.path}' is damaged ({exc}); move it aside and import the models again"
            ) from None
        entries: dict[str, IndexEntry] = {}
        for raw in data.get("models", []) if isinstance(data, dict) else []:
            try:
                entry = IndexEntry.from_dict(raw)
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            entries[entry.name] = entry
        return entries

    def write(self, entries: Mapping[str, IndexEntry]) -> None:
        data = {
            "version": INDEX_VERSION,
            "models": [entries[name].to_dict() for name in sorted(entries)],
        }
        with self._cache_lock:
            self._cache = None
        write_atomic(self.path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The store's exclusive lock (creating the store folder if needed)."""
        os.makedirs(self.root, exist_ok=True)
        with exclusive_lock(os.path.join(self.root, LOCK_FILE)):
            yield
