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

This module is the facade the ports see, and finds models by name (exact, alias,
same repository); each job it offers lives in its own module:

=================  ===========================================================
``records.py``     a model as the store knows it, described as a ``ModelInfo``
``importing.py``   the files an import or a copy adds, checked, linked, hashed
``installing.py``  moving a staged folder into place (commit), taking one out
``index.py``       index.json, its lock, and its cache
``staging.py``     work in progress (pulls that resume, scratch folders), locks
``usage.py``       verify (hash again) and disk usage
``describe.py``    what a GGUF file or a model folder holds
``bundled.py``     the models that ship with modelport
``files.py``       atomic writes, locks, hashing (sha256, once), links
=================  ===========================================================

The one cache of GGUF conversions is ``adapters/ggufconvert/cache.py``'s.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterable, Iterator

import attrs

from modelport.domain import (
    DEFAULT_TAG,
    DiskUsage,
    EngineUnavailable,
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
from .importing import import_sources, link_hashed, link_model
from .index import IndexEntry, ModelIndex
from .installing import install, uninstall
from .records import (
    Record,
    bundled_record,
    canonical_name,
    installed_record,
    local_record,
    model_folder,
    model_info,
    path_record,
)
from .staging import STAGING, Staging
from .usage import check_file, disk_usage

CONVERTED = ".converted"
Converter = Callable[[str, str], object]

__all__ = ["CONVERTED", "FilesystemModelStore", "canonical_name", "model_folder"]


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
        self._conversions = (
            os.path.join(self.root, CONVERTED)
            if conversions is None
            else os.path.abspath(os.path.expanduser(os.fspath(conversions)))
        )

    # -- reading ----------------------------------------------------------------------

    def list(self) -> list[ModelInfo]:
        """Installed models (those whose files are there), then bundled ones."""
        return [model_info(r) for r in self._records() if os.path.isfile(r.primary_path)]

    def resolve(self, ref: ModelRef) -> ModelInfo:
        record = path_record(ref) if ref.is_path else self._find(ref)
        if not os.path.isfile(record.primary_path):
            hint = f"its files are missing from {record.location}; pull or import it again"
            raise ModelNotFound(record.name, hint=hint)
        return model_info(record)

    def verify(self, ref: ModelRef) -> VerifyReport:
        """Hash every file again, against the manifest's sha256 and the digest its source
        published (the Hub's); files without a recorded sha256 only report theirs."""
        info = model_info(path_record(ref) if ref.is_path else self._find(ref))
        return VerifyReport(model=info.name, checks=[check_file(info.location, file) for file in info.files])

    def disk_usage(self) -> DiskUsage:
        """Bytes used by installed models, by interrupted pulls, and the space left
        (``usage.disk_usage``)."""
        return disk_usage(self.root, self._index.read().values(), self._staging.root)

    # -- writing ----------------------------------------------------------------------

    def copy(
        self, source: ModelRef, destination: ModelRef, defaults: ModelDefaults | None = None, *, replace: bool = False
    ) -> ModelInfo:
        """A new model ``destination`` sharing ``source``'s files (hard links), with
        ``defaults`` (None: the source's own); an installed ``destination`` is
        replaced when ``replace`` (Ollama's create), else refused."""
        self._check_new_name(destination, replace=replace)
        info = self.resolve(source)
        with self._scratch(destination) as folder:
            link_model(info, folder)
            return self._install(
                destination,
                folder,
                info.files,
                replace=replace,
                primary_file=info.primary_file,
                defaults=info.defaults if defaults is None else defaults,
            )

    def import_path(
        self, name: ModelRef, path: str, defaults: ModelDefaults | None = None, *, replace: bool = False
    ) -> ModelInfo:
        """Add a local GGUF file or Hugging Face folder, hard-linked when possible,
        with ``defaults`` (a Modelfile's) stored beside it; ``replace`` as for :meth:`copy`."""
        self._check_new_name(name, replace=replace)
        sources = import_sources(path)
        with self._scratch(name) as folder:
            files = link_hashed(sources, folder)
            return self._install(name, folder, files, replace=replace, defaults=defaults or ModelDefaults())

    def remove(self, ref: ModelRef) -> None:
        """Drop the model from the index, then delete its folder (only ever inside the store)."""
        if ref.is_path:
            raise ModelReadOnly(f"'{ref}' is a path outside the store; modelport does not delete it")
        record = self._find(ref)
        if record.read_only:
            raise ModelReadOnly(f"'{record.name}' is bundled with modelport and cannot be removed")
        uninstall(self.root, self._index, self._staging, record.name, str(ref))

    def materialize(self, model: ModelInfo, format: ModelFormat) -> ModelInfo:
        """A GGUF model as a Hugging Face folder, from the one conversion cache
        (converted once, reused while the GGUF stays the same)."""
        if model.format is format:
            return model
        if (model.format, format) != (ModelFormat.GGUF, ModelFormat.SAFETENSORS) or self._converter is None:
            raise EngineUnavailable(
                "auto",
                f"cannot convert '{model.name}' from {model.format.value} to {format.value}"
                + ("" if self._converter else "; converting GGUF files needs modelport[jax]"),
                "jax",
            )
        from modelport.adapters.ggufconvert.cache import converted_folder

        target = converted_folder(os.path.join(model.location, model.primary_file), self._conversions, self._converter)
        record = local_record(model.name, target)
        assert record is not None, f"the converter left no config.json in {target}"
        converted = model_info(attrs.evolve(record, aliases=model.aliases, options=model.default_options))
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

    def commit(self, ref: ModelRef, folder: str, files: Iterable[ModelFile]) -> ModelInfo:
        """Move a staged folder into place as ``ref``, replacing an older copy."""
        return self._install(ref, folder, files, replace=True)

    # -- internals --------------------------------------------------------------------

    def _install(
        self,
        ref: ModelRef,
        folder: str,
        files: Iterable[ModelFile],
        *,
        replace: bool,
        primary_file: str | None = None,
        defaults: ModelDefaults | None = None,
    ) -> ModelInfo:
        entry = install(
            self.root,
            self._index,
            self._staging,
            ref,
            folder,
            files,
            replace=replace,
            check_new_name=self._check_new_name,
            primary_file=primary_file,
            defaults=defaults,
        )
        return model_info(installed_record(self.root, entry))

    def _scratch(self, ref: ModelRef):
        """A private folder for a copy or an import, deleted at the end whatever happens."""
        return self._staging.scratch(model_folder(ref))

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

    def _records(self) -> list[Record]:
        installed = [installed_record(self.root, entry) for entry in self._index.read().values()]
        bundled = [record for record in map(bundled_record, self.bundled) if record is not None]
        return installed + bundled

    def _find(self, ref: ModelRef) -> Record:
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

    def _check_new_name(
        self, ref: ModelRef, entries: dict[str, IndexEntry] | None = None, *, replace: bool = False
    ) -> None:
        """Refuse a path, a bundled model's name, and (unless ``replace``) an installed one."""
        if ref.is_path:
            raise InvalidRequest(f"'{ref}' is a path; name the new model, e.g. 'mymodel:latest'")
        name = canonical_name(ref)
        bundled = (r for r in map(bundled_record, self.bundled) if r is not None)
        if any(record.answers_to(name) for record in bundled):
            raise InvalidRequest(f"'{name}' is the name of a model bundled with modelport; choose another name")
        entries = self._index.read() if entries is None else entries
        if name in entries and not replace:
            raise InvalidRequest(f"a model named '{name}' already exists; remove it first or choose another name")
