"""What a model is called and what is known about it."""

from __future__ import annotations

import enum
import re
from typing import Iterable, Mapping

import attrs

from .errors import InvalidModelName
from .modelfile import ModelDefaults

# A name part follows the Hugging Face rules: letters, digits, '.', '_' and '-',
# not starting with a separator, no '..' or '--' (the latter is our folder separator).
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A git revision: branch, tag or commit; '/' allowed (refs/pr/1), never '..'.
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,255}")
_FOLDER_SEPARATOR = "--"
DEFAULT_TAG = "latest"


def _check_part(part: str, what: str, whole: str) -> None:
    if not part:
        raise InvalidModelName(f"invalid model name '{whole}': empty {what}")
    if ".." in part or _FOLDER_SEPARATOR in part or not _PART.fullmatch(part):
        raise InvalidModelName(
            f"invalid model name '{whole}': {what} '{part}' may only hold letters, digits, "
            "'.', '_' and '-' (no '..' or '--', at most 96 characters)"
        )


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~/", ".\\", "..\\"))
        or text in (".", "..")
        or (len(text) > 2 and text[1] == ":" and text[2] in "\\/")
    )


@attrs.frozen(kw_only=True)
class ModelRef:
    """A parsed model reference.

    Forms: ``name``, ``org/name``, each optionally followed by ``:tag`` and
    ``@revision`` in either order (``org/name:Q4_K_M``, ``org/name@main``), or a
    filesystem path (``./model.gguf``, ``/models/llama``), which is kept verbatim.
    """

    name: str
    org: str | None = None
    tag: str | None = None
    revision: str | None = None
    path: str | None = None

    @classmethod
    def parse(cls, text: str) -> "ModelRef":
        if not isinstance(text, str):
            raise InvalidModelName(f"a model name must be a string, not {type(text).__name__}")
        text = text.strip()
        if not text:
            raise InvalidModelName("the model name is empty")
        if _looks_like_path(text) or text.endswith(".gguf"):
            return cls(name=_path_stem(text), path=text)
        if any(ch.isspace() for ch in text) or "\\" in text:
            raise InvalidModelName(f"invalid model name '{text}': no spaces or backslashes allowed")
        repo, tag, revision = _split_suffixes(text)
        parts = repo.split("/")
        if len(parts) > 2:
            raise InvalidModelName(f"invalid model name '{text}': expected 'name' or 'org/name'")
        if len(parts) == 2:
            org, name = parts
            _check_part(org, "organisation", text)
        else:
            org, name = None, parts[0]
        _check_part(name, "name", text)
        if tag is not None and not _TAG.fullmatch(tag):
            raise InvalidModelName(f"invalid model name '{text}': bad tag '{tag}'")
        if revision is not None and (".." in revision or not _REVISION.fullmatch(revision)):
            raise InvalidModelName(f"invalid model name '{text}': bad revision '{revision}'")
        return cls(name=name, org=org, tag=tag, revision=revision)

    @classmethod
    def from_folder_name(cls, folder: str) -> "ModelRef":
        """The inverse of :attr:`folder_name`."""
        org, sep, name = folder.partition(_FOLDER_SEPARATOR)
        return cls.parse(f"{org}/{name}" if sep else folder)

    @property
    def is_path(self) -> bool:
        return self.path is not None

    @property
    def repo_id(self) -> str:
        """``org/name`` (or ``name``): the Hugging Face repository id."""
        return f"{self.org}/{self.name}" if self.org else self.name

    @property
    def folder_name(self) -> str:
        """The store's folder for this repository: ``org--name``."""
        if self.is_path:
            raise InvalidModelName(f"'{self.path}' is a path, it has no store folder")
        return f"{self.org}{_FOLDER_SEPARATOR}{self.name}" if self.org else self.name

    @property
    def canonical(self) -> str:
        """The name a store files this model under: ``org/name:tag``, ``latest`` when
        no tag is given, without the revision."""
        if self.is_path:
            return str(self)
        return f"{self.repo_id}:{self.tag or DEFAULT_TAG}"

    @property
    def untagged(self) -> "ModelRef":
        return attrs.evolve(self, tag=None, revision=None)

    def with_tag(self, tag: str | None) -> "ModelRef":
        return attrs.evolve(self, tag=tag)

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        text = self.repo_id
        if self.tag:
            text += f":{self.tag}"
        if self.revision:
            text += f"@{self.revision}"
        return text


def _split_suffixes(text: str) -> tuple[str, str | None, str | None]:
    """Split ``repo[:tag][@revision]`` (or ``repo[@revision][:tag]``) into its parts."""
    repo, tag, revision = text, None, None
    if "@" in repo:
        repo, _, revision = repo.partition("@")
        if ":" in revision:
            revision, _, tag = revision.partition(":")
    if ":" in repo:
        if tag is not None:
            raise InvalidModelName(f"invalid model name '{text}': more than one tag")
        repo, _, tag = repo.partition(":")
    if tag == "" or revision == "":
        raise InvalidModelName(f"invalid model name '{text}': empty tag or revision")
    return repo, tag, revision


def _path_stem(path: str) -> str:
    base = re.split(r"[\\/]", path.rstrip("/\\"))[-1] or path
    return base[: -len(".gguf")] if base.endswith(".gguf") else base


class ModelFormat(str, enum.Enum):
    GGUF = "gguf"
    SAFETENSORS = "safetensors"
    MLX = "mlx"


class Capability(str, enum.Enum):
    COMPLETION = "completion"
    CHAT = "chat"
    EMBEDDING = "embedding"


@attrs.frozen(kw_only=True)
class ModelFile:
    """One file of a model, relative to the model's folder."""

    path: str = attrs.field(validator=attrs.validators.min_len(1))
    size: int = attrs.field(validator=attrs.validators.ge(0))
    sha256: str | None = None
    # The digest the model's source published for this file, "<algorithm>:<hex>": the
    # Hub's "sha256:..." for LFS files, "git-sha1:..." (the git blob id) for the others.
    source_digest: str | None = None

    @path.validator
    def _relative(self, _attribute: object, value: str) -> None:
        parts = value.replace("\\", "/").split("/")
        if value.startswith(("/", "\\")) or ".." in parts:
            raise ValueError(f"model file paths must stay inside the model folder: {value!r}")


def _as_pairs(values: Mapping[str, object] | Iterable[tuple[str, object]]) -> tuple[tuple[str, object], ...]:
    items = values.items() if isinstance(values, Mapping) else values
    return tuple(sorted((str(k), v) for k, v in items))


def _as_capabilities(values: Iterable[Capability | str]) -> frozenset[Capability]:
    return frozenset(Capability(value) for value in values)


@attrs.frozen(kw_only=True)
class ModelInfo:
    """Everything the store knows about one installed model.

    ``location`` is the folder holding ``files`` (or, for a single-file model such as
    a GGUF, the folder beside it); ``primary_file`` is what an engine loads.
    """

    name: str
    format: ModelFormat = attrs.field(converter=ModelFormat)
    location: str
    primary_file: str
    architecture: str = "unknown"
    family: str = ""
    parameter_count: int | None = None
    quantization: str | None = None
    context_length: int | None = None
    embedding_length: int | None = None
    size: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    files: tuple[ModelFile, ...] = attrs.field(default=(), converter=tuple)
    chat_template: str | None = None
    capabilities: frozenset[Capability] = attrs.field(
        default=frozenset({Capability.COMPLETION}), converter=_as_capabilities
    )
    modified_at: float = 0.0
    digest: str = ""
    read_only: bool = False
    aliases: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    license: str | None = None
    metadata: tuple[tuple[str, object], ...] = attrs.field(default=(), converter=tuple)
    # The model's own sampling defaults under the Modelfile's PARAMETER names (from its
    # PARAMETERs, a generation_config.json; ``sampling_defaults`` reads them through
    # ``modelfile.PARAMETER_FIELDS``, the one table); a request's settings override them.
    default_options: tuple[tuple[str, object], ...] = attrs.field(default=(), converter=_as_pairs)
    # What the model was created with on top of its files (a Modelfile's SYSTEM,
    # TEMPLATE, MESSAGEs, PARAMETERs and LICENSE); its parameters are already part
    # of ``default_options`` and its license of ``license``.
    defaults: ModelDefaults = attrs.field(factory=ModelDefaults)

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    @property
    def sampling_defaults(self) -> dict[str, object]:
        """The model's own sampling defaults as SamplingPolicy field changes."""
        from .modelfile import parameter_changes

        return parameter_changes(dict(self.default_options))

    @property
    def parameter_size(self) -> str:
        """Ollama's human form: ``135M``, ``6.7B``."""
        return format_parameter_count(self.parameter_count)


def format_parameter_count(count: int | None) -> str:
    if not count:
        return ""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            value = count / scale
            return f"{value:.0f}{suffix}" if value >= 100 else f"{value:.3g}{suffix}"
    return str(count)
