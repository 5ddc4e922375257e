"""In-memory model store, session repository and clock."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import threading
from typing import Iterable, Iterator

import attrs

from modelport.domain import (
    Capability,
    ChatSession,
    DiskUsage,
    FileCheck,
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


def fake_model(name: str = "fake:latest", **fields: object) -> ModelInfo:
    """A ModelInfo for tests; chat and completion unless ``capabilities`` says otherwise."""
    defaults: dict[str, object] = dict(
        format=ModelFormat.GGUF,
        location="/nowhere",
        primary_file="model.gguf",
        architecture="fake",
        family="fake",
        parameter_count=1_000_000,
        quantization="F32",
        context_length=4096,
        size=1024,
        capabilities={Capability.COMPLETION, Capability.CHAT},
        digest=hashlib.sha256(name.encode()).hexdigest(),
    )
    defaults.update(fields)
    return ModelInfo(name=name, **defaults)  # type: ignore[arg-type]


def with_defaults(model: ModelInfo, defaults: ModelDefaults) -> ModelInfo:
    """``model`` carrying ``defaults``: its parameters merged into the sampling
    defaults, its license shown, chat possible once it has a template."""
    capabilities = set(model.capabilities)
    if defaults.template is not None and Capability.EMBEDDING not in capabilities:
        capabilities.add(Capability.CHAT)
    return attrs.evolve(
        model,
        defaults=defaults,
        capabilities=capabilities,
        default_options={**dict(model.default_options), **dict(defaults.parameters)},
        license=defaults.license or model.license,
    )


def _key(ref: ModelRef) -> str:
    """Names match with and without the default ``:latest`` tag."""
    return ref.canonical


class InMemoryModelStore:
    def __init__(self, models: Iterable[ModelInfo] = ()) -> None:
        self.models: dict[str, ModelInfo] = {}
        self.conversions: list[tuple[str, ModelFormat]] = []
        self._lock = threading.Lock()
        for model in models:
            self.add(model)

    def add(self, model: ModelInfo) -> None:
        with self._lock:
            self.models[_key(ModelRef.parse(model.name))] = model

    def list(self) -> list[ModelInfo]:
        with self._lock:
            return list(self.models.values())

    def resolve(self, ref: ModelRef) -> ModelInfo:
        with self._lock:
            model = self.models.get(_key(ref))
            if model is None:
                for candidate in self.models.values():
                    if str(ref.untagged) in candidate.aliases or str(ref) in candidate.aliases:
                        model = candidate
        if model is None:
            raise ModelNotFound(str(ref))
        return model

    def copy(
        self, source: ModelRef, destination: ModelRef, defaults: ModelDefaults | None = None, *, replace: bool = False
    ) -> ModelInfo:
        """``source`` under a new name; ``defaults`` (None: the source's) become its own,
        their parameters its sampling defaults, and a taken name is replaced only when
        ``replace``, as the filesystem store does."""
        model = self.resolve(source)
        if defaults is not None:
            model = with_defaults(model, defaults)
        model = attrs.evolve(model, name=str(destination), aliases=(), read_only=False)
        with self._lock:
            taken = self.models.get(destination.canonical)
            if taken is not None and (taken.read_only or not replace):
                raise InvalidRequest(f"a model named '{destination.canonical}' already exists")
        self.add(model)
        return model

    def remove(self, ref: ModelRef) -> None:
        model = self.resolve(ref)
        if model.read_only:
            raise ModelReadOnly(f"'{model.name}' is bundled with modelport and cannot be removed")
        with self._lock:
            del self.models[_key(ModelRef.parse(model.name))]

    def verify(self, ref: ModelRef) -> VerifyReport:
        model = self.resolve(ref)
        checks = [FileCheck(path=f.path, expected=f.sha256, actual=f.sha256) for f in model.files]
        return VerifyReport(model=model.name, checks=checks)

    def materialize(self, model: ModelInfo, format: ModelFormat) -> ModelInfo:
        """Records the conversion; the converted model lives 'in' a pretend cache."""
        converted = attrs.evolve(model, format=format, location=f"{model.location}/converted-{format.value}")
        self.conversions.append((model.name, format))
        return converted

    def import_path(
        self, name: ModelRef, path: str, defaults: ModelDefaults | None = None, *, replace: bool = False
    ) -> ModelInfo:
        raise InvalidRequest("the in-memory store cannot import files")

    def disk_usage(self) -> DiskUsage:
        models = sorted((m.name, m.size) for m in self.list() if not m.read_only)
        return DiskUsage(root="memory", models=sum(size for _, size in models), by_model=models)

    @contextlib.contextmanager
    def staging(self, ref: ModelRef) -> Iterator[str]:
        folder = tempfile.mkdtemp(prefix="modelport-fake-")
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def commit(self, ref: ModelRef, folder: str, files: Iterable[ModelFile]) -> ModelInfo:
        files = tuple(files)
        model = fake_model(str(ref), files=files, size=sum(f.size for f in files), location=folder)
        self.add(model)
        return model


class InMemorySessionRepository:
    def __init__(self) -> None:
        self.sessions: dict[str, ChatSession] = {}

    def save(self, session: ChatSession) -> None:
        self.sessions[session.id] = session

    def get(self, session_id: str) -> ChatSession:
        return self.sessions[session_id]

    def list(self) -> list[str]:
        return sorted(self.sessions)

    def delete(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)


@attrs.define
class FixedClock:
    """A clock that only moves when told to."""

    wall: float = 1_700_000_000.0
    ns: int = 0

    def now(self) -> float:
        return self.wall

    def monotonic_ns(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.ns += int(seconds * 1e9)
