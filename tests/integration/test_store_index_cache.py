"""The store reads index.json once and again only when it changes, here or in
another process; a request looks its model up in the store once."""

from __future__ import annotations

import os

import pytest

from support.modelfiles import gguf_bytes

from modelport.adapters.fake import FakeEngine
from modelport.adapters.filesystem import FilesystemModelStore
from modelport.adapters.filesystem import index as index_module
from modelport.domain import GenerationRequest, ModelFormat, ModelRef, SamplingPolicy
from modelport.ports import EngineRegistry, EngineSpec, Services


@pytest.fixture
def parses(monkeypatch) -> list[str]:
    """Every parse of an index.json (a spy on the real parser)."""
    seen: list[str] = []
    real = index_module.ModelIndex._parse

    def counting(self):
        seen.append(self.path)
        return real(self)

    monkeypatch.setattr(index_module.ModelIndex, "_parse", counting)
    return seen


def _gguf(folder) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "tiny.gguf")
    with open(path, "wb") as handle:
        handle.write(gguf_bytes())
    return path


def test_the_index_is_parsed_once_while_it_does_not_change(tmp_path, parses) -> None:
    store = FilesystemModelStore(tmp_path / "models", bundled=())
    store.import_path(ModelRef.parse("mine"), _gguf(tmp_path / "src"))
    parses.clear()
    for _ in range(5):
        assert store.resolve(ModelRef.parse("mine")).name == "mine:latest"
    assert len(parses) == 1


def test_a_write_by_another_process_is_seen_at_the_next_read(tmp_path, parses) -> None:
    """Two stores on one folder stand for two processes (each its own cache)."""
    here = FilesystemModelStore(tmp_path / "models", bundled=())
    there = FilesystemModelStore(tmp_path / "models", bundled=())
    assert here.list() == []
    there.import_path(ModelRef.parse("mine"), _gguf(tmp_path / "src"))
    assert [m.name for m in here.list()] == ["mine:latest"]
    there.remove(ModelRef.parse("mine"))
    assert here.list() == []


def test_a_request_looks_its_model_up_once(tmp_path, parses, monkeypatch) -> None:
    store = FilesystemModelStore(tmp_path / "models", bundled=())
    store.import_path(ModelRef.parse("mine"), _gguf(tmp_path / "src"))
    lookups = []
    real = store.resolve
    monkeypatch.setattr(store, "resolve", lambda ref: lookups.append(ref) or real(ref))
    registry = EngineRegistry([EngineSpec(name="fake", formats={ModelFormat.GGUF}, factory=FakeEngine)])
    services = Services(store=store, engines=registry)
    request = GenerationRequest(model=ModelRef.parse("mine"), prompt="hi", sampling=SamplingPolicy.greedy(3))
    stream = services.generate(request)
    list(stream)
    assert len(lookups) == 1
    services.close()
