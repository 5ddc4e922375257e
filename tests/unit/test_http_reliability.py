"""What keeps the server whole under careless clients, piece by piece: noticing a
client that left, knowing when a request has arrived, refusing what cannot fit
before it costs anything, and 400s (not 500s) for malformed values."""

from __future__ import annotations

import itertools
import socket
import time

import attrs
import falcon.testing
import pytest

from modelport.domain import (
    MAX_TOKEN_BYTES,
    GenerationRequest,
    InvalidRequest,
    ModelRef,
    PromptTooLong,
    SamplingPolicy,
)
from modelport.entrypoints.config import Settings
from modelport.entrypoints.http import disconnect, worker
from modelport.entrypoints.http.app import create_app
from modelport.entrypoints.http.server import MAX_SOCKET_PATH, gunicorn_options

LOCAL = {"Host": "localhost:11434"}


@pytest.fixture
def client(services, settings) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(services, settings), headers=LOCAL)


# -- a client that leaves -----------------------------------------------------------------


def test_a_closed_peer_is_seen_and_an_open_one_is_not() -> None:
    server, peer = socket.socketpair()
    with server:
        assert not disconnect.peer_closed(server)
        peer.sendall(b"GET /next HTTP/1.1\r\n")  # a pipelined request is not a departure
        assert not disconnect.peer_closed(server)
        assert server.recv(100)
        peer.close()
        assert disconnect.peer_closed(server)
    assert disconnect.peer_closed(server)  # and our own side closed too


def test_asking_never_waits_even_on_a_socket_with_a_timeout() -> None:
    """gunicorn's worker sets a timeout on the socket: a peek that waited for data
    would stall the generation and then mistake the timeout for a departure."""
    server, peer = socket.socketpair()
    with server, peer:
        server.settimeout(5)
        started = time.monotonic()
        assert not disconnect.peer_closed(server)
        assert time.monotonic() - started < 1


def test_the_watch_asks_the_socket_at_most_every_interval() -> None:
    now = [0.0]
    server, peer = socket.socketpair()
    with server:
        watch = disconnect.ClientWatch(server, interval=1.0, clock=lambda: now[0])
        peer.close()
        assert not watch.gone()  # not asked yet: the first check is one interval in
        now[0] = 1.5
        assert watch.gone() and watch.gone()


def test_folding_stops_the_generation_when_the_client_leaves(services) -> None:
    server, peer = socket.socketpair()
    request = GenerationRequest(model=ModelRef.parse("fake"), prompt="hi", sampling=SamplingPolicy.greedy())
    stream = services.generate(request)
    with server:
        watch = disconnect.ClientWatch(server, interval=0.0)
        events = iter(stream)
        first = next(events)
        peer.close()
        with pytest.raises(disconnect.ClientGone):
            disconnect.fold(itertools.chain([first], events), stream, watch)
    assert services.loaded()[0].in_use == 0  # the model was given back


def test_without_a_socket_nothing_is_watched(services) -> None:
    assert disconnect.ClientWatch.of({"wsgi.input": None}) is None
    request = GenerationRequest(model=ModelRef.parse("fake"), prompt="hi", sampling=SamplingPolicy.greedy())
    stream = services.generate(request)
    assert disconnect.fold(stream, stream, None).text == "The capital of France is Paris."


# -- when has a request arrived (the worker's main loop) ---------------------------------------


@pytest.mark.parametrize(
    "data, arrived",
    [
        (b"", False),
        (b"GET /health HTTP/1.1\r\nHost: x\r\n", False),
        (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"POST /api/generate HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345", False),
        (b"POST /api/generate HTTP/1.1\r\ncontent-length: 10\r\n\r\n1234567890", True),
        (b"POST /x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", True),  # a big body is the app's to read
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", True),
        (b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n", True),  # it waits for 100
        (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", True),  # the parser refuses it
        (b"GET /" + b"a" * (worker.MAX_HEAD_BYTES + 1), True),  # likewise
    ],
)
def test_a_request_has_arrived_when_its_head_and_small_body_are_in(data: bytes, arrived: bool) -> None:
    assert worker.request_arrived(data) is arrived


# -- the serving setup ------------------------------------------------------------------------


def test_gunicorn_runs_modelports_worker_with_its_control_socket_in_the_home(tmp_path) -> None:
    settings = Settings(home=str(tmp_path), port=12345)
    options = gunicorn_options(settings)
    assert options["worker_class"] == "modelport.entrypoints.http.worker.HeadFirstWorker"
    assert options["control_socket"] == str(tmp_path / "run" / "gunicorn-12345.ctl")
    deep = Settings(home=str(tmp_path / ("x" * MAX_SOCKET_PATH)))
    assert gunicorn_options(deep)["control_socket_disable"] is True


# -- what cannot fit is refused by its size --------------------------------------------------


def test_a_prompt_longer_than_any_tokenization_could_fit_is_refused_by_its_size() -> None:
    ref = ModelRef.parse("fake")
    limit = 256 * MAX_TOKEN_BYTES
    GenerationRequest(model=ref, prompt="x" * limit, sampling=SamplingPolicy(num_ctx=256))
    with pytest.raises(PromptTooLong, match="more than a context window of 256 tokens"):
        GenerationRequest(model=ref, prompt="x" * (limit + 1), sampling=SamplingPolicy(num_ctx=256))
    with pytest.raises(PromptTooLong):  # bytes count, not characters
        GenerationRequest(model=ref, prompt="é" * (limit // 2 + 1), sampling=SamplingPolicy(num_ctx=256))
    with pytest.raises(PromptTooLong):  # and every message of a chat
        GenerationRequest(
            model=ref,
            messages=[{"role": "user", "content": "x" * limit}, {"role": "user", "content": "y"}],
            sampling=SamplingPolicy(num_ctx=256),
        )


def test_the_models_own_context_bounds_the_prompt_too(services, fake_store) -> None:
    fake_store.add(attrs.evolve(services.show("fake"), name="short:latest", aliases=(), context_length=256))
    request = GenerationRequest(model=ModelRef.parse("short"), prompt="x" * (256 * MAX_TOKEN_BYTES + 1))
    with pytest.raises(PromptTooLong, match="context window of 256 tokens"):
        services.generate(request)
    assert services.loaded() == []  # refused before any engine was loaded


def test_a_huge_prompt_over_http_is_a_400_and_is_never_tokenized(client, engine_box) -> None:
    prompt = "word " * 3_000_000  # 15 MB
    started = time.monotonic()
    result = client.simulate_post("/api/generate", json={"model": "fake", "prompt": prompt, "stream": False})
    elapsed = time.monotonic() - started
    assert result.status_code == 400 and "more than a context window of 4096 tokens" in result.json["error"]
    assert engine_box.built == [] or engine_box.last.prompts == []  # no engine saw it
    print(f"a 15 MB prompt was refused in {elapsed:.3f} s")


def test_text_that_is_not_unicode_is_a_400(client) -> None:
    body = b'{"model": "fake", "prompt": "\\ud800", "stream": false}'
    result = client.simulate_post("/api/generate", body=body, headers={"Content-Type": "application/json"})
    assert result.status_code == 400 and "not valid Unicode" in result.json["error"]


# -- 400s, not 500s ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, body, words",
    [
        ("/api/generate", {"model": "fake", "prompt": "hi", "options": {"num_ctx": 16}}, "num_ctx must be >= 256"),
        (
            "/api/chat",
            {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "options": {"num_ctx": 100}},
            "num_ctx must be >= 256",
        ),
        (
            "/api/chat",
            {"model": "fake", "messages": [{"role": "user", "content": "hi", "images": 5}]},
            'field "images" of a message must be an array',
        ),
        (
            "/api/chat",
            {"model": "fake", "messages": [{"role": "user", "content": "hi", "images": "abc"}]},
            'field "images" of a message must be an array',
        ),
        ("/v1/completions", {"model": "fake", "prompt": ["hi"] * 65}, "at most 64 prompts"),
    ],
)
def test_bad_values_are_400s_with_a_message(client, path, body, words) -> None:
    result = client.simulate_post(path, json=body)
    assert result.status_code == 400, result.text
    message = result.json["error"]["message"] if path.startswith("/v1/") else result.json["error"]
    assert words in message


def test_allowed_paths_must_be_absolute(tmp_path) -> None:
    assert Settings.load(
        {}, environ={"MODELPORT_ALLOWED_PATHS": f"{tmp_path}:/srv/models"}, dotenv=None
    ).allowed_folders == (str(tmp_path), "/srv/models")
    assert Settings.load({}, environ={}, dotenv=None).allowed_folders == ()
    with pytest.raises(InvalidRequest, match="absolute folders only"):
        Settings.load({}, environ={"MODELPORT_ALLOWED_PATHS": "models"}, dotenv=None)


def test_settings_carry_allowed_paths_into_create(services, settings, tmp_path) -> None:
    app = create_app(services, attrs.evolve(settings, allowed_paths=str(tmp_path)))
    result = falcon.testing.TestClient(app, headers=LOCAL).simulate_post(
        "/api/create", json={"model": "x", "from": str(tmp_path / "absent.gguf"), "stream": False}
    )
    assert result.status_code == 400 and "cannot import" in result.json["error"]  # allowed: the store judges
