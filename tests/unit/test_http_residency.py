"""keep_alive, model TTL, /api/ps and the reaper, with an injected clock."""

from __future__ import annotations

import math
import threading
from datetime import datetime

import attrs
import falcon.testing
import pytest

from modelport.adapters.fake import FakeEngine, FixedClock, InMemorySessionRepository
from modelport.domain import ModelFormat, ModelRef
from modelport.entrypoints.http.app import create_app
from modelport.entrypoints.http.lifecycle import Reaper
from modelport.ports import EngineOptions, EngineRegistry, EngineSpec, ResidentModels, Services

LOCAL = {"Host": "localhost"}
GREEDY = {"temperature": 0}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def resident(engine_box, clock) -> ResidentModels:
    registry = EngineRegistry([EngineSpec(name="fake", formats=set(ModelFormat), factory=engine_box)])
    return ResidentModels(registry, clock=clock.now)


@pytest.fixture
def services(fake_store, resident) -> Services:
    return Services(
        store=fake_store, engines=resident._registry, resident=resident, sessions=InMemorySessionRepository()
    )


def client_for(services, settings, clock, **changes) -> falcon.testing.TestClient:
    app = create_app(services, attrs.evolve(settings, **changes), clock=clock.now)
    return falcon.testing.TestClient(app, headers=LOCAL)


@pytest.fixture
def client(services, settings, clock) -> falcon.testing.TestClient:
    return client_for(services, settings, clock, model_ttl=300.0)


def generate(client, **body) -> falcon.testing.Result:
    result = client.simulate_post(
        "/api/generate", json={"model": "fake", "prompt": "hi", "stream": False, "options": GREEDY, **body}
    )
    assert result.status_code == 200, result.text
    return result


def loaded(services) -> list[str]:
    return [r.model.name for r in services.loaded()]


# -- ResidentModels ----------------------------------------------------------------------------


def test_an_idle_model_expires_after_its_keep_alive(resident, fake_store, clock) -> None:
    model = fake_store.resolve(ModelRef.parse("fake"))
    with resident.use(model, None, EngineOptions(), keep_alive=60):
        clock.advance(1000)
        assert resident.expire() == []  # in use: never expires
    clock.advance(59)
    assert resident.expire() == [] and len(resident.loaded()) == 1
    clock.advance(1)
    assert resident.expire() == ["fake:latest"] and resident.loaded() == []


def test_the_last_requests_keep_alive_wins(resident, fake_store, clock) -> None:
    model = fake_store.resolve(ModelRef.parse("fake"))
    with resident.use(model, None, EngineOptions(), keep_alive=10):
        pass
    with resident.use(model, None, EngineOptions(), keep_alive=100):
        pass
    clock.advance(50)
    assert resident.expire() == []
    with resident.use(model, None, EngineOptions()):  # None: keep the current value
        pass
    clock.advance(99)
    assert resident.expire() == []
    clock.advance(1)
    assert resident.expire() == ["fake:latest"]


@pytest.mark.parametrize("forever", [None, math.inf, -1.0])
def test_no_or_negative_keep_alive_keeps_the_model(resident, fake_store, clock, forever) -> None:
    model = fake_store.resolve(ModelRef.parse("fake"))
    with resident.use(model, None, EngineOptions(), keep_alive=forever):
        pass
    clock.advance(10**9)
    assert resident.expire() == [] and resident.loaded()[0].expiry(clock.now()) is None


def test_keep_alive_zero_unloads_when_the_last_request_ends(resident, fake_store, engine_box) -> None:
    model = fake_store.resolve(ModelRef.parse("fake"))
    first = resident.use(model, None, EngineOptions(), keep_alive=0).__enter__()
    with resident.use(model, None, EngineOptions(), keep_alive=0):
        pass
    assert len(resident.loaded()) == 1  # the first request still uses it
    first.__exit__(None, None, None)
    assert resident.loaded() == [] and engine_box.last.model is None


def test_acquiring_expires_other_models_first(resident, fake_store, clock, engine_box) -> None:
    with resident.use(fake_store.resolve(ModelRef.parse("fake")), None, EngineOptions(), keep_alive=5):
        pass
    clock.advance(6)
    with resident.use(fake_store.resolve(ModelRef.parse("embedder")), None, EngineOptions()):
        assert [r.model.name for r in resident.loaded()] == ["embedder:latest"]
    assert engine_box.built[0].model is None  # unloaded


# -- over HTTP ---------------------------------------------------------------------------------


def test_the_server_default_applies_without_keep_alive(services, settings, clock) -> None:
    client = client_for(services, settings, clock, model_ttl=120.0)
    generate(client)
    clock.advance(119)
    assert client.simulate_get("/api/ps").json["models"][0]["name"] == "fake:latest"
    clock.advance(1)
    assert client.simulate_get("/api/ps").json == {"models": []}
    assert services.loaded() == []


@pytest.mark.parametrize("keep_alive, stays", [(0, 0.0), ("0s", 0.0), (30, 30.0), ("1m", 60.0)])
def test_request_keep_alive_overrides_the_default(client, services, clock, keep_alive, stays) -> None:
    generate(client, keep_alive=keep_alive)
    if stays == 0:
        assert services.loaded() == []
        return
    clock.advance(stays - 1)
    assert loaded(services) == ["fake:latest"]
    clock.advance(1)
    services.resident.expire()
    assert services.loaded() == []


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "stream": False}),
        ("/api/embed", {"model": "embedder", "input": "hi"}),
        ("/api/embeddings", {"model": "embedder", "prompt": "hi"}),
    ],
)
def test_keep_alive_zero_unloads_after_chat_and_embeddings(client, services, path, body) -> None:
    result = client.simulate_post(path, json={"model": "fake", "keep_alive": 0, **body})
    assert result.status_code == 200, result.text
    assert services.loaded() == []


def test_negative_keep_alive_keeps_the_model_forever(client, services, clock) -> None:
    generate(client, keep_alive=-1)
    clock.advance(10**8)
    (entry,) = client.simulate_get("/api/ps").json["models"]
    assert datetime.fromisoformat(entry["expires_at"]).year > 2200


def test_ps_shows_size_expiry_and_context(client, services, clock) -> None:
    generate(client, keep_alive=60, options={**GREEDY, "num_ctx": 2048})
    (entry,) = client.simulate_get("/api/ps").json["models"]
    assert entry["name"] == entry["model"] == "fake:latest"
    assert entry["size"] == services.resident.loaded()[0].engine.memory_used() > 0  # the engine behind the use case
    assert entry["size_vram"] == 0 and entry["context_length"] == 2048
    assert datetime.fromisoformat(entry["expires_at"]).timestamp() == clock.now() + 60
    assert entry["details"]["family"] == "fake" and len(entry["digest"]) == 64
    slots = entry["slots"]
    assert slots["busy"] == slots["waiting"] == 0 and slots["free"] == slots["total"] >= 1


def test_ps_lists_the_longest_staying_model_first(client) -> None:
    generate(client, keep_alive=10)
    client.simulate_post("/api/embed", json={"model": "embedder", "input": "a", "keep_alive": 1000})
    assert [m["name"] for m in client.simulate_get("/api/ps").json["models"]] == ["embedder:latest", "fake:latest"]


def test_a_load_request_sets_keep_alive(client, services, clock) -> None:
    result = client.simulate_post("/api/generate", json={"model": "fake", "keep_alive": "10s"})
    assert result.json["done_reason"] == "load"
    clock.advance(10)
    assert client.simulate_get("/api/ps").json["models"] == []


# -- the reaper --------------------------------------------------------------------------------


def test_the_reaper_unloads_expired_models_in_the_background(engine_box, fake_store) -> None:
    expired = threading.Event()

    class Watched(ResidentModels):
        def expire(self, now=None):
            gone = super().expire(now)
            if gone:
                expired.set()
            return gone

    clock = FixedClock()
    registry = EngineRegistry([EngineSpec(name="fake", formats=set(ModelFormat), factory=engine_box)])
    resident = Watched(registry, clock=clock.now)
    model = fake_store.resolve(ModelRef.parse("fake"))
    with resident.use(model, None, EngineOptions(), keep_alive=5):
        pass
    reaper = Reaper(resident, interval=0.01).start()
    try:
        assert reaper.running
        clock.advance(5)
        assert expired.wait(timeout=10)
        assert resident.loaded() == []
    finally:
        reaper.stop()
    assert not reaper.running


def test_the_reaper_survives_a_failing_unload(engine_box, fake_store, caplog) -> None:
    calls = []
    again = threading.Event()

    class Flaky(ResidentModels):
        def expire(self, now=None):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("unload failed")
            again.set()
            return []

    registry = EngineRegistry([EngineSpec(name="fake", formats=set(ModelFormat), factory=FakeEngine)])
    reaper = Reaper(Flaky(registry), interval=0.01).start()
    try:
        assert again.wait(timeout=10)  # it went on after the failure
    finally:
        reaper.stop()
    assert "unloading expired models failed" in caplog.text


def test_the_app_starts_and_stops_its_reaper(services, settings) -> None:
    app = create_app(services, settings)
    assert app.reaper is None
    reaper = app.start_reaper(interval=0.05)
    assert reaper.running and app.start_reaper() is reaper
    app.close()
    assert not reaper.running and app.reaper is None
