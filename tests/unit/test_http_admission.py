"""Admission over HTTP: the scheduler's bounded line gives 503 + Retry-After when
full; a closed or failed request gives its slot back; concurrent requests are
served whole. (The line itself, FIFO and bounded, is tested in test_scheduler.py.)"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import attrs
import falcon.testing
import pytest

from modelport.adapters.fake import InMemorySessionRepository
from modelport.domain import ModelFormat
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.http.app import create_app
from modelport.ports import EngineSpec

from conftest import EngineBox

LOCAL = {"Host": "localhost"}
REPLY = "The capital of France is Paris."
WAIT_S = 10


def eventually(condition, limit: float = WAIT_S) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.002)


# -- over HTTP ---------------------------------------------------------------------------------


def start_stream(app, model: str = "fake"):
    """A streamed generation that has sent its first line and holds the model."""
    environ = falcon.testing.create_environ(
        method="POST", path="/api/generate", host="localhost", body=json.dumps({"model": model, "prompt": "hi"})
    )
    body = app(environ, lambda status, headers, exc_info=None: None)
    assert json.loads(next(iter(body)))["done"] is False
    return body


def one_slot_no_queue(settings, fake_store, box=None):
    """Services and app whose models have one slot each and no room to queue."""
    settings = attrs.evolve(settings, max_queue=0, num_parallel=1)
    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=box or EngineBox(token_delay=0.001))
    services = bootstrap(settings, store=fake_store, engines=[spec], sessions=InMemorySessionRepository())
    return services, create_app(services, settings)


def busy_slots(services) -> int:
    return sum(stats.busy for stats in services.activity().values())


@pytest.fixture
def busy(settings, fake_store):
    """An app with no room to queue, whose only slot on ``fake`` is taken."""
    services, app = one_slot_no_queue(settings, fake_store)
    body = start_stream(app)
    yield app, falcon.testing.TestClient(app, headers=LOCAL)
    body.close()


@pytest.mark.parametrize(
    "path, body, shape",
    [
        ("/api/generate", {"model": "fake", "prompt": "hi"}, str),
        ("/api/chat", {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}, str),
        ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}, dict),
        ("/v1/generate", {"model": "fake", "prompt": "hi"}, dict),
    ],
)
def test_a_full_queue_is_503_with_retry_after(busy, path, body, shape) -> None:
    _, client = busy
    result = client.simulate_post(path, json=body)
    assert result.status_code == 503
    assert int(result.headers["retry-after"]) > 0 and result.headers["x-should-retry"] == "false"
    error = result.json["error"]
    assert isinstance(error, shape)
    assert "busy" in (error if shape is str else error["message"])


def test_other_models_and_other_routes_are_not_held_up(busy) -> None:
    _, client = busy
    assert client.simulate_post("/api/embed", json={"model": "embedder", "input": "a"}).status_code == 200
    assert client.simulate_get("/api/tags").status_code == 200
    assert client.simulate_get("/health").json["queue"]["active"] == 1


def test_a_closed_stream_gives_its_turn_back(settings, fake_store) -> None:
    services, app = one_slot_no_queue(settings, fake_store)
    start_stream(app).close()
    client = falcon.testing.TestClient(app, headers=LOCAL)
    result = client.simulate_post("/api/generate", json={"model": "fake", "prompt": "hi", "stream": False})
    assert result.status_code == 200
    eventually(lambda: busy_slots(services) == 0)


def test_a_failed_start_gives_its_turn_back(settings, fake_store) -> None:
    services, app = one_slot_no_queue(settings, fake_store)
    client = falcon.testing.TestClient(app, headers=LOCAL)
    body = {"model": "fake", "prompt": "x" * 400, "raw": True, "options": {"num_ctx": 256}}
    assert client.simulate_post("/api/generate", json=body).status_code == 400
    assert busy_slots(services) == 0
    result = client.simulate_post("/api/generate", json={"model": "fake", "prompt": "hi", "stream": False})
    assert result.status_code == 200


def test_concurrent_requests_each_get_their_whole_answer(settings, fake_store) -> None:
    box = EngineBox(token_delay=0.0005)
    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=box)
    services = bootstrap(settings, store=fake_store, engines=[spec], sessions=InMemorySessionRepository())
    app = create_app(services, settings)
    client = falcon.testing.TestClient(app, headers=LOCAL)

    def ask(number: int) -> str:
        if number % 2:
            result = client.simulate_post(
                "/v1/chat/completions",
                json={"model": "fake", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]},
            )
            return result.json["choices"][0]["message"]["content"]
        result = client.simulate_post(
            "/api/generate", json={"model": "fake", "prompt": "hi", "options": {"temperature": 0}}
        )
        return "".join(json.loads(line)["response"] for line in result.text.splitlines())

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(ask, range(12))) == [REPLY] * 12
    assert len(box.built) == 1  # one load, shared
    eventually(lambda: busy_slots(services) == 0 and services.loaded()[0].in_use == 0)
