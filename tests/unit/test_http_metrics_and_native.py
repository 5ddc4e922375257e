"""``/metrics`` (its own registry per app) and modelport's own ``/v1/generate*`` routes."""

from __future__ import annotations

import json

import falcon.testing
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelport.entrypoints.http.app import create_app

LOCAL = {"Host": "localhost"}
REPLY = "The capital of France is Paris."
GREEDY = {"temperature": 0}


@pytest.fixture
def client(services, settings) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(services, settings), headers=LOCAL)


def samples(client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    result = client.simulate_get("/metrics")
    assert result.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(result.text)
        for s in family.samples
    }


def value(found, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


# -- metrics ------------------------------------------------------------------------------------


def test_requests_are_counted_per_route_method_and_status(client) -> None:
    client.simulate_get("/api/tags")
    client.simulate_get("/api/tags")
    client.simulate_post("/api/show", json={"model": "nope"})
    client.simulate_get("/no/such/path")
    found = samples(client)
    assert value(found, "modelport_http_requests_total", route="/api/tags", method="GET", status="200") == 2
    assert value(found, "modelport_http_requests_total", route="/api/show", method="POST", status="404") == 1
    assert value(found, "modelport_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value(found, "modelport_http_request_duration_seconds_count", route="/api/tags", method="GET") == 2


def test_tokens_first_token_and_loaded_models(client) -> None:
    client.simulate_post("/api/generate", json={"model": "fake", "prompt": "hi", "options": GREEDY})
    client.simulate_post(
        "/v1/chat/completions",
        json={"model": "fake", "temperature": 0, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    )
    client.simulate_post("/api/embed", json={"model": "embedder", "input": ["ab", "c"]})
    found = samples(client)
    assert value(found, "modelport_completion_tokens_total", model="fake:latest") == len(REPLY) + 5
    assert value(found, "modelport_prompt_tokens_total", model="fake:latest") > 0
    assert value(found, "modelport_prompt_tokens_total", model="embedder:latest") == 3
    assert value(found, "modelport_time_to_first_token_seconds_count", model="fake:latest") == 2
    assert value(found, "modelport_loaded_models") == 2
    assert value(found, "modelport_queue_depth") == 0
    slots = services_slots(client)
    assert value(found, "modelport_slots", model="fake:latest", state="busy") == 0
    assert value(found, "modelport_slots", model="fake:latest", state="free") == slots
    assert value(found, "modelport_model_queue_depth", model="fake:latest") == 0
    assert value(found, "modelport_decode_tokens_per_second", model="fake:latest") > 0


def services_slots(client) -> int:
    return client.simulate_get("/health").json["slots"]["fake:latest"]["total"]


def test_a_stream_is_timed_until_its_body_closes(services, settings) -> None:
    app = create_app(services, settings)
    client = falcon.testing.TestClient(app, headers=LOCAL)
    environ = falcon.testing.create_environ(
        method="POST", path="/api/generate", host="localhost", body=json.dumps({"model": "fake", "prompt": "hi"})
    )
    body = app(environ, lambda status, headers, exc_info=None: None)
    next(iter(body))
    found = samples(client)
    assert value(found, "modelport_http_requests_in_progress") == 2  # the stream and this scrape
    assert value(found, "modelport_http_request_duration_seconds_count", route="/api/generate", method="POST") == 0
    body.close()
    found = samples(client)
    assert value(found, "modelport_http_requests_in_progress") == 1
    assert value(found, "modelport_http_request_duration_seconds_count", route="/api/generate", method="POST") == 1


def test_each_app_has_its_own_registry(services, settings) -> None:
    first = falcon.testing.TestClient(create_app(services, settings), headers=LOCAL)
    second = falcon.testing.TestClient(create_app(services, settings), headers=LOCAL)
    first.simulate_get("/api/tags")
    assert value(samples(first), "modelport_http_requests_total", route="/api/tags", method="GET", status="200") == 1
    assert value(samples(second), "modelport_http_requests_total", route="/api/tags", method="GET", status="200") == 0


# -- /v1/generate, /v1/generate_stream, /v1/generate_batch ----------------------------------------


def test_generate_answers_text_reason_and_usage(client, engine_box) -> None:
    body = client.simulate_post("/v1/generate", json={"model": "fake", "prompt": "Capital?", "options": GREEDY}).json
    assert (body["model"], body["text"], body["finish_reason"]) == ("fake", REPLY, "stop")
    assert body["usage"]["completion_tokens"] == len(REPLY) == len(body["token_ids"])
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + len(REPLY)
    assert engine_box.last.prompts[-1] == "<|user|>Capital?\n<|assistant|>"


def test_generate_takes_messages_or_a_raw_prompt(client, engine_box) -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    client.simulate_post("/v1/generate", json={"model": "fake", "messages": messages})
    assert engine_box.last.prompts[-1] == "<|system|>S\n<|user|>U\n<|assistant|>"
    client.simulate_post("/v1/generate", json={"model": "fake", "prompt": "raw!", "raw": True})
    assert engine_box.last.prompts[-1] == "raw!"


def test_generate_stream_sends_deltas_then_the_end(client) -> None:
    result = client.simulate_post(
        "/v1/generate_stream", json={"model": "fake", "prompt": "hi", "options": {**GREEDY, "num_predict": 4}}
    )
    assert result.headers["content-type"] == "text/event-stream"
    frames = [f[len("data: ") :] for f in result.text.split("\n\n") if f]
    assert frames[-1] == "[DONE]"
    *deltas, end = [json.loads(f) for f in frames[:-1]]
    assert [d["text"] for d in deltas] == list("The ")
    assert (end["text"], end["finish_reason"], end["usage"]["completion_tokens"]) == ("", "length", 4)


def test_generate_batch_answers_each_prompt_in_order(client, engine_box) -> None:
    body = client.simulate_post(
        "/v1/generate_batch",
        json={
            "model": "fake",
            "prompts": ["one", "two", "three"],
            "raw": True,
            "options": {**GREEDY, "num_predict": 2},
        },
    ).json
    assert [r["text"] for r in body["results"]] == ["Th"] * 3
    assert [r["usage"]["prompt_tokens"] for r in body["results"]] == [3, 3, 5]
    assert engine_box.last.prompts[-3:] == ["one", "two", "three"]


@pytest.mark.parametrize(
    "path, body, status, words",
    [
        ("/v1/generate", {"model": "fake"}, 400, "non-empty 'prompt' or 'messages'"),
        ("/v1/generate", {"model": "fake", "prompt": "hi", "stream": True}, 400, "generate_stream"),
        ("/v1/generate", {"model": "fake", "prompt": "hi", "images": ["aGk="]}, 400, "does not support images"),
        ("/v1/generate", {"model": "nope", "prompt": "hi"}, 404, "not found"),
        ("/v1/generate_stream", {"model": "fake", "prompt": "hi", "options": {"top_p": 5}}, 400, "top_p"),
        ("/v1/generate_batch", {"model": "fake", "prompts": []}, 400, "prompts"),
        ("/v1/generate_batch", {"model": "fake", "prompts": ["a", 1]}, 400, "prompts"),
        ("/v1/generate_batch", {"model": "fake", "prompts": ["a"] * 65}, 400, "at most 64"),
    ],
)
def test_bad_native_requests(client, path, body, status, words) -> None:
    result = client.simulate_post(path, json=body)
    assert result.status_code == status and words in result.json["error"]["message"], result.text
