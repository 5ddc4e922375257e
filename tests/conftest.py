"""Fixtures shared by every tier: services wired with fakes through the real bootstrap."""

from __future__ import annotations

import pytest

from modelport.adapters.fake import FakeEngine, InMemoryModelStore, InMemorySessionRepository, fake_model
from modelport.domain import Capability, ModelFormat
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.config import Settings
from modelport.ports import EngineSpec


class EngineBox:
    """Builds FakeEngines for the registry and remembers each one built."""

    def __init__(self, reply: str | None = None, token_delay: float = 0.0) -> None:
        self.reply = reply
        self.token_delay = token_delay
        self.built: list[FakeEngine] = []

    def __call__(self) -> FakeEngine:
        kwargs = {"token_delay": self.token_delay}
        if self.reply is not None:
            kwargs["reply"] = self.reply
        engine = FakeEngine(**kwargs)
        self.built.append(engine)
        return engine

    @property
    def last(self) -> FakeEngine:
        return self.built[-1]


@pytest.fixture
def engine_box() -> EngineBox:
    return EngineBox()


@pytest.fixture
def fake_store() -> InMemoryModelStore:
    return InMemoryModelStore(
        [
            fake_model("fake:latest", aliases=("fake",)),
            fake_model(
                "embedder:latest",
                format=ModelFormat.SAFETENSORS,
                capabilities={Capability.EMBEDDING},
                embedding_length=16,
            ),
        ]
    )


@pytest.fixture
def settings(tmp_path) -> Settings:
    # no warm-up generation at load: tests count the prompts an engine saw
    return Settings(home=str(tmp_path / "home"), warmup_tokens=0)


@pytest.fixture
def services(settings, fake_store, engine_box):
    """The application, wired by the production bootstrap with fake adapters."""
    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=engine_box)
    services = bootstrap(settings, store=fake_store, engines=[spec], sessions=InMemorySessionRepository())
    services.source = None  # never the real Hub from a unit test; tests that pull pass a source
    return services


@pytest.fixture(scope="session")
def engine_home(request, tmp_path_factory) -> str:
    """A modelport home for real engines whose caches outlive one run (GGUFs
    converted for the jax engine, JAX's compiled programs): under .pytest_cache
    when pytest's cache is on, else a fresh temporary folder."""
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("modelport-home") if cache is not None else tmp_path_factory.mktemp("home")
    return str(folder)
