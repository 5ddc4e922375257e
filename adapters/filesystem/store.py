"""The model store on disk.

Layout::

    <models_dir>/index.json           the installed models: name, folder, files, sha256
    <models_dir>/.lock                held by every writer of the index
    <models_dir>/.staging/            work in progress:
        <org--name+tag>.pull/         a pull, running or interrupted (the next pull resumes it)
        <org--name+tag>.pull.lock     held while a pull of that model runs
        <org--name+tag>-<hex>.tmp/    a copy or an import (with its .lock)
        <org--name+tag>-old-<hex>/    a replaced or removed model, deleted right away
    <models_dir>/<org--name>/         a model, ``org/name`` or ``org/name:latest``
    <models_dir>/<org--name>+<tag>/   a tagged model, ``org/name:Q4_K_M``

Bundled models stay where pip installed them and are listed read-only.

This module keeps the model list (resolve, import, copy, remove, commit, describing a
record as a ``ModelInfo``); the rest is split by job: ``index.py`` (index.json, its
lock and its cache), ``staging.py`` (work in progress and its locks), ``usage.py``
(verify and disk usage), ``describe.py`` (what a GGUF or a folder holds),
``bundled.py`` (the models that ship with modelport), ``files.py`` (atomic writes,
locks, hashing, links), and the one cache of GGUF conversions is
``adapters/ggufconvert/cache.py``'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from typing import Callable, Iterable, Iterator

import attrs

from modelport.domain import (
    DEFAULT_TAG,
    Capability,
    EngineUnavailable,
    DiskUsage,
    InvalidRequest,
    ModelDefaults,
    ModelFile,
    ModelFormat,
    ModelInfo,
    ModelNotFound,
    ModelReadOnly,
    ModelRef,
    VerifyReport,
)

from .bundled import DEFAULT_BUNDLED, BundledModel
from .describe import Details, describe_folder, describe_gguf, read_safetensors_header, weight_files
from .files import (
    delete,
    folder_files,
    fsync_folder,
    link_or_copy,
    sha256_file,
)
from .gguf_header import MAGIC, read_gguf_header
from .index import IndexEntry, ModelIndex
from .usage import check_file, disk_usage
from .staging import INSTALLED, STAGING, Staging

CONVERTED = ".converted"
Converter = Callable[[str, str], object]


def canonical_name(ref: ModelRef) -> str:
    """``org/name:tag``, with ``latest`` for a missing tag and no revision."""
    return ref.canonical


def model_folder(ref: ModelRef) -> str:
    """The folder of ``ref`` inside the store: ``org--name`` or ``org--name+tag``."""
    tag = ref.tag or DEFAULT_TAG
    return ref.folder_name if tag == DEFAULT_TAG else f"{ref.folder_name}+{tag}"


@attrs.frozen(kw_only=True)
class _Record:
    """A model the store can describe: installed, bundled, or a path."""

    name: str
    format: ModelFormat
    location: str
    primary_file: str
    files: tuple[ModelFile, ...]
    read_only: bool = False
    aliases: tuple[str, ...] = ()
    options: tuple[tuple[str, object], ...] = ()
    defaults: ModelDefaults = attrs.field(factory=ModelDefaults)

    @property
    def primary_path(self) -> str:
        return os.path.join(self.location, self.primary_file)

    def answers_to(self, key: str) -> bool:
        return self.name == key or any(canonical_name(ModelRef.parse(a)) == key for a in self.aliases)


class FilesystemModelStore:
    """A :class:`~modelport.ports.ModelStore` over a folder; nothing is created until
    the first write."""

    def __init__(
        self,
        models_dir: str | os.PathLike[str],
        bundled: Iterable[BundledModel] = DEFAULT_BUNDLED,
        *,
        converter: Converter | None = None,
        conversions: str | os.PathLike[str] | None = None,
    ) -> None:
        """``converter(gguf_path, folder)`` writes a GGUF out as a Hugging Face folder;
        the composition root passes one when the libraries it needs are installed, and
        ``conversions``, the home's one conversion cache (``adapters/ggufconvert/cache.py``,
        shared with the JAX engine; default: ``<models_dir>/.converted``)."""
        self.root = os.path.abspath(os.path.expanduser(os.fspath(models_dir)))
        self.bundled = tuple(bundled)
        self._index = ModelIndex(self.root)
        self._staging = Staging(os.path.join(self.root, STAGING))
        self._converter = converter
        self._conversions = (os.path.join(self.root, CONVERTED) if conversions is None
                             else os.path.abspath(os.path.expanduser(os.fspath(conversions))))

    # -- reading ----------------------------------------------------------------------

    def list(self) -> list[ModelInfo]:
        """Installed models (those whose files are there), then bundled ones."""
        return [self._info(r) for r in self._records() if os.path.isfile(r.primary_path)]

    def resolve(self, ref: ModelRef) -> ModelInfo:
        record = self._path_record(ref) if ref.is_path else self._find(ref)
        if not os.path.isfile(record.primary_path):
            hint = f"its files are missing from {record.location}; pull or import it again"
            raise ModelNotFound(record.name, hint=hint)
        return self._info(record)

    def verify(self, ref: ModelRef) -> VerifyReport:
        """Hash every file again, against the manifest's sha256 and the digest its source
        published (the Hub's); files without a recorded sha256 only report theirs."""
        info = self._info(self._path_record(ref) if ref.is_path else self._find(ref))
        return VerifyReport(
            model=info.name, checks=[check_file(info.location, file) for file in info.files]
        )

    def disk_usage(self) -> DiskUsage:
        """Bytes used by installed models, by interrupted pulls, and the space left
        (``usage.disk_usage``)."""
        return disk_usage(self.root, self._index.read().values(), self._staging.root)

    # -- writing ----------------------------------------------------------------------

    def copy(self, source: ModelRef, destination: ModelRef, defaults: ModelDefaults | None = None) -> ModelInfo:
        """A new model ``destination`` sharing ``source``'s files (hard links), with
        ``defaults`` (None: the source's own)."""
        self._check_new_name(destination)
        info = self.resolve(source)
        with self._scratch(destination) as folder:
            for file in info.files:
                link_or_copy(os.path.join(info.location, file.path), os.path.join(folder, file.path))
            return self._commit(
                destination, folder, info.files, replace=False, primary_file=info.primary_file,
                defaults=info.defaults if defaults is None else defaults,
            )

    def import_path(self, name: ModelRef, path: str, defaults: ModelDefaults | None = None) -> ModelInfo:
        """Add a local GGUF file or Hugging Face folder, hard-linked when possible,
        with ``defaults`` (a Modelfile's) stored beside it."""
        self._check_new_name(name)
        source = os.path.abspath(os.path.expanduser(path))
        if os.path.isfile(source) and _starts_with_magic(source):
            read_gguf_header(source)  # refuse a damaged file now, not at load time
            base = os.path.basename(source)
            pairs = [(source, base if base.lower().endswith(".gguf") else f"{base}.gguf")]
        elif os.path.isdir(source) and os.path.isfile(os.path.join(source, "config.json")):
            _check_loadable_folder(source, path)
            pairs = [(os.path.join(source, rel), rel) for rel in folder_files(source)]
        else:
            raise InvalidRequest(
                f"cannot import '{path}': expected a GGUF file "
                "or a Hugging Face model folder with a config.json"
            )
        with self._scratch(name) as folder:
            files = []
            for src, rel in pairs:
                target = os.path.join(folder, rel)
                link_or_copy(src, target)
                size, digest = os.path.getsize(target), sha256_file(target)
                files.append(ModelFile(path=rel, size=size, sha256=digest))
            return self._commit(name, folder, files, replace=False, defaults=defaults or ModelDefaults())

    def remove(self, ref: ModelRef) -> None:
        """Drop the model from the index, then delete its folder (only ever inside the store)."""
        if ref.is_path:
            raise ModelReadOnly(f"'{ref}' is a path outside the store; modelport does not delete it")
        record = self._find(ref)
        if record.read_only:
            raise ModelReadOnly(f"'{record.name}' is bundled with modelport and cannot be removed")
        with self._index.locked():
            entries = self._index.read()
            entry = entries.pop(record.name, None)
            if entry is None:
                raise ModelNotFound(str(ref))
            target = os.path.join(self.root, entry.folder)
            self._check_inside(target)
            self._index.write(entries)
            shared = any(other.folder == entry.folder for other in entries.values())
            aside = self._set_aside(target) if not shared and os.path.lexists(target) else None
        if aside:
            delete(aside)

    def materialize(self, model: ModelInfo, format: ModelFormat) -> ModelInfo:
        """A GGUF model as a Hugging Face folder, from the one conversion cache
        (converted once, reused while the GGUF stays the same)."""
        if model.format is format:
            return model
        if (model.format, format) != (ModelFormat.GGUF, ModelFormat.SAFETENSORS) or self._converter is None:
            raise EngineUnavailable(
                "auto", f"cannot convert '{model.name}' from {model.format.value} to {format.value}"
                + ("" if self._converter else "; converting GGUF files needs modelport[jax]"), "jax")
        from modelport.adapters.ggufconvert.cache import converted_folder

        target = converted_folder(os.path.join(model.location, model.primary_file), self._conversions,
                                  self._converter)
        record = _local_record(model.name, target)
        assert record is not None, f"the converter left no config.json in {target}"
        converted = self._info(attrs.evolve(record, aliases=model.aliases,
                                            options=model.default_options))
        return attrs.evolve(converted, read_only=True, chat_template=converted.chat_template or model.chat_template)

    @contextlib.contextmanager
    def staging(self, ref: ModelRef) -> Iterator[str]:
        """The folder a pull of ``ref`` downloads into (``staging.py`` says how it
        resumes); ``.installed/`` inside it holds hard links to the installed copy of
        ``ref`` (if any), which a source may reuse instead of downloading again."""
        with self._staging.pull(model_folder(ref), lambda target: self._link_installed(ref, target)) as folder:
            yield folder

    def clean_staging(self, *, partial: bool = False) -> int:
        """Delete what crashed work left in ``.staging`` (``Staging.clean``); bytes freed."""
        return self._staging.clean(self._index.locked, partial=partial)

    def _scratch(self, ref: ModelRef):
        """A private folder for a copy or an import, deleted at the end whatever happens."""
        return self._staging.scratch(model_folder(ref))

    def _set_aside(self, path: str) -> str:
        return self._staging.set_aside(path)

    def _link_installed(self, ref: ModelRef, target: str) -> None:
        """Hard-link the installed copy of ``ref`` under ``target`` (nothing is copied)."""
        entry = self._index.read().get(canonical_name(ref))
        if entry is None:
            return
        for file in entry.files:
            destination = os.path.join(target, file.path)
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            with contextlib.suppress(OSError):
                os.link(os.path.join(self.root, entry.folder, file.path), destination)

    def commit(self, ref: ModelRef, folder: str, files: Iterable[ModelFile]) -> ModelInfo:
        """Move a staged folder into place as ``ref``, replacing an older copy."""
        return self._commit(ref, folder, files, replace=True)

    # -- internals --------------------------------------------------------------------

    def _commit(
        self, ref: ModelRef, folder: str, files: Iterable[ModelFile], *, replace: bool,
        primary_file: str | None = None, defaults: ModelDefaults | None = None,
    ) -> ModelInfo:
        staging_root = os.path.realpath(os.path.join(self.root, STAGING))
        if os.path.dirname(os.path.realpath(folder)) != staging_root:
            raise InvalidRequest(f"'{folder}' is not a staging folder of this store")
        delete(os.path.join(folder, INSTALLED))
        files = _measured(folder, tuple(files))
        if primary_file:
            model_format, primary = _format_of(folder, primary_file), primary_file
        else:
            model_format, primary = _primary(ref, folder, files)
        name, target_name = canonical_name(ref), model_folder(ref)
        target = os.path.join(self.root, target_name)
        os.chmod(folder, 0o755)
        with self._index.locked():
            entries = self._index.read()
            if not replace:
                self._check_new_name(ref, entries)
            old = self._set_aside(target) if os.path.lexists(target) else None
            try:
                os.rename(folder, target)
            except OSError:
                if old:
                    os.rename(old, target)  # put the older copy back
                raise
            fsync_folder(self.root)
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
            self._index.write(entries)
        if old:
            delete(old)
        return self._info(self._installed(entries[name]))

    def _records(self) -> list[_Record]:
        installed = [self._installed(entry) for entry in self._index.read().values()]
        bundled = [record for record in map(self._bundled, self.bundled) if record is not None]
        return installed + bundled

    def _installed(self, entry: IndexEntry) -> _Record:
        return _Record(
            name=entry.name,
            format=entry.format,
            location=os.path.join(self.root, entry.folder),
            primary_file=entry.primary_file,
            files=entry.files,
            defaults=entry.defaults,
        )

    def _bundled(self, model: BundledModel) -> _Record | None:
        path = model.locate()
        if path is None:
            return None
        record = _local_record(model.name, path)
        return attrs.evolve(record, aliases=model.aliases, options=model.options) if record else None

    def _path_record(self, ref: ModelRef) -> _Record:
        record = _local_record(str(ref), os.path.abspath(os.path.expanduser(ref.path or "")))
        if record is None:
            hint = "no GGUF file or model folder with a config.json is there"
            raise ModelNotFound(str(ref), hint=hint)
        if record.format is ModelFormat.GGUF:
            describe_gguf(record.primary_path)  # a file that is not GGUF fails here, clearly
        return record

    def _find(self, ref: ModelRef) -> _Record:
        """Exact name, then alias, then the same repository (by tag, or its only model)."""
        records = self._records()
        key = canonical_name(ref)
        for record in records:
            if record.answers_to(key):
                return record
        same_repo = [r for r in records if ModelRef.parse(r.name).repo_id == ref.repo_id]
        if ref.tag and ref.tag != DEFAULT_TAG:
            tag = ref.tag.lower()
            tagged = [r for r in same_repo if tag in os.path.basename(r.primary_file).lower()]
            if tagged:
                return tagged[0]
        elif len(same_repo) == 1:
            return same_repo[0]
        if same_repo:
            names = ", ".join(sorted(r.name for r in same_repo))
            raise ModelNotFound(str(ref), hint=f"installed: {names}")
        raise ModelNotFound(str(ref), hint=f"pull it first with: modelport pull {ref}")

    def _check_new_name(self, ref: ModelRef, entries: dict[str, IndexEntry] | None = None) -> None:
        if ref.is_path:
            raise InvalidRequest(f"'{ref}' is a path; name the new model, e.g. 'mymodel:latest'")
        name = canonical_name(ref)
        entries = self._index.read() if entries is None else entries
        bundled = (r for r in map(self._bundled, self.bundled) if r is not None)
        if name in entries or any(record.answers_to(name) for record in bundled):
            raise InvalidRequest(
                f"a model named '{name}' already exists; remove it first or choose another name"
            )

    def _check_inside(self, target: str) -> None:
        """Refuse to delete anything that is not a model folder of this store."""
        real = os.path.realpath(target)
        inside = os.path.dirname(real) == os.path.realpath(self.root)
        if not inside or os.path.basename(real).startswith("."):
            raise InvalidRequest(
                f"refusing to delete '{target}': it resolves to '{real}', "
                f"outside the model store {self.root}"
            )

    def _info(self, record: _Record) -> ModelInfo:
        try:
            if record.format is ModelFormat.GGUF:
                details = describe_gguf(record.primary_path)
            else:
                details = describe_folder(record.location)
        except (InvalidRequest, OSError) as exc:
            details = Details(format=record.format, metadata=(("error", str(exc)),))
        mtimes = {f.path: _mtime(os.path.join(record.location, f.path)) for f in record.files}
        options = {**dict(details.default_options), **dict(record.options), **dict(record.defaults.parameters)}
        capabilities = set(details.capabilities)
        if record.defaults.template is not None and Capability.EMBEDDING not in capabilities:
            capabilities.add(Capability.CHAT)  # a model given a chat template can chat
        return ModelInfo(
            name=record.name,
            location=record.location,
            primary_file=record.primary_file,
            size=sum(f.size for f in record.files),
            files=record.files,
            modified_at=max(mtimes.values(), default=0.0),
            digest=_digest(record.files, mtimes),
            read_only=record.read_only,
            aliases=record.aliases,
            defaults=record.defaults,
            **attrs.asdict(attrs.evolve(details, default_options=options, capabilities=frozenset(capabilities),
                                        license=record.defaults.license or details.license), recurse=False),
        )


# -- helpers ------------------------------------------------------------------------------


def _local_record(name: str, path: str) -> _Record | None:
    """A read-only record for a GGUF file or a model folder outside the store."""
    if os.path.isfile(path):
        base = os.path.basename(path)
        return _Record(
            name=name, format=ModelFormat.GGUF, location=os.path.dirname(path), primary_file=base,
            files=(ModelFile(path=base, size=os.path.getsize(path)),), read_only=True,
        )
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
        sizes = {rel: os.path.getsize(os.path.join(path, rel)) for rel in folder_files(path)}
        files = tuple(ModelFile(path=rel, size=size) for rel, size in sizes.items())
        return _Record(
            name=name, format=_format_of(path, "config.json"), location=path, primary_file="config.json",
            files=files, read_only=True,
        )
    return None


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
        return _format_of(folder, "config.json"), "config.json"
    raise InvalidRequest(f"cannot add '{ref}': the download holds no .gguf file and no config.json")


def _format_of(folder: str, primary_file: str) -> ModelFormat:
    """GGUF for a .gguf file; MLX when config.json has mlx-lm's ``quantization`` object."""
    if primary_file.lower().endswith(".gguf"):
        return ModelFormat.GGUF
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return ModelFormat.SAFETENSORS
    is_mlx = isinstance(config, dict) and isinstance(config.get("quantization"), dict)
    return ModelFormat.MLX if is_mlx else ModelFormat.SAFETENSORS


def _check_loadable_folder(folder: str, given: str) -> None:
    """Refuse a Hugging Face folder that no engine could load: config.json must be a
    JSON object naming its ``model_type``, and the weights must be safetensors files
    with a readable header."""
    what = f"cannot import '{given}'"
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"{what}: config.json is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise InvalidRequest(f"{what}: config.json must be a JSON object with a 'model_type'")
    weights = weight_files(folder)
    if not weights:
        raise InvalidRequest(f"{what}: the folder has no .safetensors weights")
    for name in weights:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise InvalidRequest(f"{what}: the weights file '{name}' is missing")
        read_safetensors_header(path)


def _starts_with_magic(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(MAGIC)) == MAGIC


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _digest(files: tuple[ModelFile, ...], mtimes: dict[str, float]) -> str:
    """A cheap identity of the files: sha256 where recorded, else size and mtime."""
    listing = sorted([f.path, f.size, f.sha256 or mtimes.get(f.path, 0.0)] for f in files)
    return hashlib.sha256(json.dumps(listing, separators=(",", ":")).encode()).hexdigest()
