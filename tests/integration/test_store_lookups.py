"""One store lookup per request, through each face: the Ollama, OpenAI and native
routes and the CLI look the model up once at their edge and pass the ModelInfo on.

The store is the real filesystem store, wrapped by a decorator that counts what is
asked of it (it wraps, it fakes nothing); the engine is the fake one.
"""

from __future__ import annotations

import io
import os
from typing import Any

import falcon.testing
import pytest

from support.modelfiles import gguf_bytes

from modelport.adapters.fake import FakeEngine, InMemorySessionRepository
from modelport.adapters.filesystem import FilesystemModelStore
from modelport.domain import ModelFormat, ModelInfo, ModelRef
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.cli import EXIT_OK, main
from modelport.entrypoints.http.app import create_app
from modelport.ports import EngineSpec

LOCAL = {"Host": "localhost:11434"}
MESSAGES = [{"role": "user", "content": "Capital of France?"}]


class CountingStore:
    """A store that counts its lookups (``resolve``) and listings, then asks the real one."""

    def __init__(self, store: FilesystemModelStore) -> None:
        self._store = store
        self.lookups: list[str] = []

    def resolve(self, ref: ModelRef) -> ModelInfo:
        self.lookups.append(str(ref))
        return self._store.resolve(ref)

    def list(self) -> list[ModelInfo]:
        self.lookups.append("(list)")
        return self._store.list()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def store(tmp_path) -> CountingStore:
    source = tmp_path / "src"
    source.mkdir()
    (source / "tiny.gguf").write_bytes(gguf_bytes())
    real = FilesystemModelStore(tmp_path / "models", bundled=())
    real.import_path(ModelRef.parse("mine"), os.fspath(source / "tiny.gguf"))
    return CountingStore(real)


@pytest.fixture
def services(settings, store):
    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=FakeEngine)
    services = bootstrap(settings, store=store, engines=[spec], sessions=InMemorySessionRepository())
    services.source = None
    yield services
    services.close()


@pytest.fixture
def client(services, settings) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(services, settings), headers=LOCAL)


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/chat", {"messages": MESSAGES, "stream": False, "options": {"temperature": 0, "num_predict": 4}}),
        ("/api/chat", {"messages": MESSAGES, "options": {"num_predict": 4}, "logprobs": True, "top_logprobs": 2}),
        ("/api/generate", {"prompt": "hi", "options": {"num_predict": 4}}),
        ("/api/generate", {}),  # only loads the model
        ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 4, "temperature": 0}),
        ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 4, "n": 2, "stream": True}),
        ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 4, "logprobs": True, "top_logprobs": 1}),
        ("/v1/completions", {"prompt": ["one", "two"], "max_tokens": 4}),
        ("/v1/responses", {"input": "hi", "max_output_tokens": 4}),
        ("/v1/generate", {"prompt": "hi", "options": {"num_predict": 4}}),
        ("/v1/generate_batch", {"prompts": ["one", "two", "three"], "options": {"num_predict": 4}}),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_an_http_request_looks_its_model_up_once(client, store, path, body) -> None:
    result = client.simulate_post(path, json={"model": "mine", **body})
    assert result.status_code == 200, result.text
    assert store.lookups == ["mine"]


def test_an_unknown_model_is_one_lookup_and_a_404(client, store) -> None:
    result = client.simulate_post("/v1/chat/completions", json={"model": "nope", "messages": MESSAGES})
    assert result.status_code == 404 and "nope" in result.text
    assert store.lookups == ["nope"]


def test_cli_generate_looks_its_model_up_once(services, store, monkeypatch) -> None:
    monkeypatch.setenv("MODELPORT_TEMPERATURE", "0")  # the env defaults need the model's own: same lookup
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["generate", "mine", "hi", "--max-tokens", "3"], services=services, out=out, err=err, stdin=io.StringIO()
    )
    assert (code, err.getvalue()) == (EXIT_OK, "")
    assert out.getvalue().strip()
    assert store.lookups == ["mine"]
