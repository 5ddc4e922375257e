"""Admission to a model: FIFO, bounded, 503 + Retry-After when full; concurrent
requests served whole."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import attrs
import falcon.testing
import pytest

from modelport.adapters.fake import InMemorySessionRepository
from modelport.domain import ModelFormat
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.http.admission import Admission, QueueFull
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


# -- Admission --------------------------------------------------------------------------------


def test_a_free_model_admits_at_once() -> None:
    admission = Admission()
    ticket = admission.enter("m")
    assert (admission.active, admission.waiting) == (1, 0)
    admission.leave(ticket)
    assert (admission.active, admission.waiting) == (0, 0)


def test_waiters_are_served_in_arrival_order() -> None:
    admission = Admission(parallel=1, max_queue=10)
    holder = admission.enter("m")
    order: list[int] = []

    def wait_then_record(number: int) -> None:
        ticket = admission.enter("m")
        order.append(number)
        admission.leave(ticket)

    threads = []
    for number in range(6):
        thread = threading.Thread(target=wait_then_record, args=(number,))
        thread.start()
        threads.append(thread)
        eventually(lambda: admission.waiting == number + 1)
    admission.leave(holder)
    for thread in threads:
        thread.join(WAIT_S)
    assert order == list(range(6))


def test_a_full_queue_turns_the_next_request_away() -> None:
    admission = Admission(parallel=1, max_queue=1)
    holder = admission.enter("m")
    waiter = threading.Thread(target=lambda: admission.leave(admission.enter("m")))
    waiter.start()
    eventually(lambda: admission.waiting == 1)
    with pytest.raises(QueueFull, match="1 requests are already waiting"):
        admission.enter("m")
    admission.leave(holder)
    waiter.join(WAIT_S)
    assert (admission.active, admission.waiting) == (0, 0)


def test_parallel_admits_that_many_per_model_and_models_are_independent() -> None:
    admission = Admission(parallel=2, max_queue=0)
    tickets = [admission.enter("a"), admission.enter("a"), admission.enter("b")]
    with pytest.raises(QueueFull):
        admission.enter("a")
    for ticket in tickets:
        admission.leave(ticket)
    assert admission.active == 0


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        Admission(parallel=0)
    with pytest.raises(ValueError):
        Admission(max_queue=-1)


# -- over HTTP ---------------------------------------------------------------------------------


def start_stream(app, model: str = "fake"):
    """A streamed generation that has sent its first line and holds the model."""
    environ = falcon.testing.create_environ(method="POST", path="/api/generate", host="localhost",
                                            body=json.dumps({"model": model, "prompt": "hi"}))
    body = app(environ, lambda status, headers, exc_info=None: None)
    assert json.loads(next(iter(body)))["done"] is False
    return body


@pytest.fixture
def busy(services, settings):
    """An app with no room to queue, whose only slot on ``fake`` is taken."""
    app = create_app(services, attrs.evolve(settings, max_queue=0))
    body = start_stream(app)
    yield app, falcon.testing.TestClient(app, headers=LOCAL)
    body.close()


@pytest.mark.parametrize("path, body, shape", [
    ("/api/generate", {"model": "fake", "prompt": "hi"}, str),
    ("/api/chat", {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}, str),
    ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}, dict),
    ("/v1/generate", {"model": "fake", "prompt": "hi"}, dict),
])
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


def test_a_closed_stream_gives_its_turn_back(services, settings) -> None:
    app = create_app(services, attrs.evolve(settings, max_queue=0))
    start_stream(app).close()
    client = falcon.testing.TestClient(app, headers=LOCAL)
    result = client.simulate_post("/api/generate", json={"model": "fake", "prompt": "hi", "stream": False})
    assert result.status_code == 200
    assert app.runner.admission.active == 0


def test_a_failed_start_gives_its_turn_back(services, settings) -> None:
    app = create_app(services, attrs.evolve(settings, max_queue=0))
    client = falcon.testing.TestClient(app, headers=LOCAL)
    body = {"model": "fake", "prompt": "x" * 400, "raw": True, "options": {"num_ctx": 256}}
    assert client.simulate_post("/api/generate", json=body).status_code == 400
    assert app.runner.admission.active == 0


def test_concurrent_requests_each_get_their_whole_answer(settings, fake_store) -> None:
    box = EngineBox(token_delay=0.0005)
    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=box)
    services = bootstrap(settings, store=fake_store, engines=[spec], sessions=InMemorySessionRepository())
    app = create_app(services, settings)
    client = falcon.testing.TestClient(app, headers=LOCAL)

    def ask(number: int) -> str:
        if number % 2:
            result = client.simulate_post("/v1/chat/completions", json={
                "model": "fake", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]})
            return result.json["choices"][0]["message"]["content"]
        result = client.simulate_post("/api/generate", json={"model": "fake", "prompt": "hi",
                                                             "options": {"temperature": 0}})
        return "".join(json.loads(line)["response"] for line in result.text.splitlines())

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(ask, range(12))) == [REPLY] * 12
    assert len(box.built) == 1  # one load, shared
    assert app.runner.admission.active == 0 and services.loaded()[0].in_use == 0
