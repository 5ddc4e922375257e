"""A model the store can describe (a :class:`Record`: installed, bundled, or a path
outside the store), and describing one as a :class:`~modelport.domain.ModelInfo`."""

from __future__ import annotations

import hashlib
import json
import os

import attrs

from modelport.domain import (
    DEFAULT_TAG,
    Capability,
    InvalidRequest,
    ModelDefaults,
    ModelFile,
    ModelFormat,
    ModelInfo,
    ModelNotFound,
    ModelRef,
)

from .bundled import BundledModel
from .describe import Details, describe_folder, describe_gguf
from .files import folder_files
from .index import IndexEntry


def canonical_name(ref: ModelRef) -> str:
    """``org/name:tag``, with ``latest`` for a missing tag and no revision."""
    return ref.canonical


def model_folder(ref: ModelRef) -> str:
    """The folder of ``ref`` inside the store: ``org--name`` or ``org--name+tag``."""
    tag = ref.tag or DEFAULT_TAG
    return ref.folder_name if tag == DEFAULT_TAG else f"{ref.folder_name}+{tag}"


@attrs.frozen(kw_only=True)
class Record:
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


def installed_record(root: str, entry: IndexEntry) -> Record:
    return Record(
        name=entry.name,
        format=entry.format,
        location=os.path.join(root, entry.folder),
        primary_file=entry.primary_file,
        files=entry.files,
        defaults=entry.defaults,
    )


def bundled_record(model: BundledModel) -> Record | None:
    """The record of a model that ships with modelport; None when it is not installed."""
    path = model.locate()
    if path is None:
        return None
    record = local_record(model.name, path)
    return attrs.evolve(record, aliases=model.aliases, options=model.options) if record else None


def path_record(ref: ModelRef) -> Record:
    """A GGUF file or a model folder named by its path."""
    record = local_record(str(ref), os.path.abspath(os.path.expanduser(ref.path or "")))
    if record is None:
        hint = "no GGUF file or model folder with a config.json is there"
        raise ModelNotFound(str(ref), hint=hint)
    if record.format is ModelFormat.GGUF:
        describe_gguf(record.primary_path)  # a file that is not GGUF fails here, clearly
    return record


def local_record(name: str, path: str) -> Record | None:
    """A read-only record for a GGUF file or a model folder outside the store."""
    if os.path.isfile(path):
        base = os.path.basename(path)
        return Record(
            name=name,
            format=ModelFormat.GGUF,
            location=os.path.dirname(path),
            primary_file=base,
            files=(ModelFile(path=base, size=os.path.getsize(path)),),
            read_only=True,
        )
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
        sizes = {rel: os.path.getsize(os.path.join(path, rel)) for rel in folder_files(path)}
        files = tuple(ModelFile(path=rel, size=size) for rel, size in sizes.items())
        return Record(
            name=name,
            format=format_of(path, "config.json"),
            location=path,
            primary_file="config.json",
            files=files,
            read_only=True,
        )
    return None


def format_of(folder: str, primary_file: str) -> ModelFormat:
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


def model_info(record: Record) -> ModelInfo:
    """What the record's files hold (``describe.py``) with what the store adds: the
    name, aliases, the Modelfile's defaults over the files' own, a digest."""
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
        digest=_digest(record.files, mtimes, record.defaults),
        read_only=record.read_only,
        aliases=record.aliases,
        defaults=record.defaults,
        **attrs.asdict(
            attrs.evolve(
                details,
                default_options=options,
                capabilities=frozenset(capabilities),
                license=record.defaults.license or details.license,
            ),
            recurse=False,
        ),
    )


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _digest(files: tuple[ModelFile, ...], mtimes: dict[str, float], defaults: ModelDefaults) -> str:
    """A cheap identity of the model: its files (sha256 where recorded, else size and
    mtime) and the defaults a Modelfile gave it. Two models over the same files with
    different defaults differ, as Ollama's manifests do (llm-ollama folds models of one
    digest into one, which would lose a created model's system prompt)."""
    listing: list = sorted([f.path, f.size, f.sha256 or mtimes.get(f.path, 0.0)] for f in files)
    if not defaults.empty:
        listing.append(defaults.to_dict())
    return hashlib.sha256(json.dumps(listing, separators=(",", ":"), sort_keys=True).encode()).hexdigest()
