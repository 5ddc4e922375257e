"""The Ollama-compatible HTTP API, through falcon's test client, over fakes."""

from __future__ import annotations

import importlib.metadata
import json
import re
from datetime import datetime
from typing import Any

import falcon
import falcon.testing
import pytest

from modelport.adapters.fake import FakeEngine, InMemorySessionRepository, fake_model
from modelport.domain import ModelFormat, ModelLoadError
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.http.app import create_app
from modelport.ports import EngineSpec

REPLY = "The capital of France is Paris."
GREEDY = {"temperature": 0}
NOW = 1_700_000_000.0
NOW_TEXT = "2023-11-14T22:13:20.000000Z"
LOCAL = {"Host": "localhost:11434"}  # the server is bound to loopback: only local names are served
METRICS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


@pytest.fixture
def client(services, settings) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(services, settings, clock=lambda: NOW), headers=LOCAL)


def client_over(settings, fake_store, engine: type[FakeEngine] | Any, **spec: Any) -> falcon.testing.TestClient:
    """A client over services whose one engine is ``engine``."""
    specs = [EngineSpec(name="fake", formats=set(ModelFormat), factory=engine, **spec)]
    services = bootstrap(settings, store=fake_store, engines=specs, sessions=InMemorySessionRepository())
    return falcon.testing.TestClient(create_app(services, settings), headers=LOCAL)


def lines(result: falcon.testing.Result) -> list[dict[str, Any]]:
    """Every NDJSON line, parsed (each must be a whole JSON object)."""
    assert result.text.endswith("\n")
    return [json.loads(line) for line in result.text.splitlines()]


def generate(client, **body: Any) -> falcon.testing.Result:
    return client.simulate_post("/api/generate", json={"model": "fake", "options": GREEDY, **body})


def chat(client, content: str = "Capital of France?", **body: Any) -> falcon.testing.Result:
    messages = [{"role": "user", "content": content}]
    return client.simulate_post("/api/chat", json={"model": "fake", "messages": messages, "options": GREEDY, **body})


def answer(client, path: str, stream: bool, **body: Any) -> tuple[str, dict[str, Any]]:
    """(the whole reply text, the final object), streamed or not."""
    call = generate if path == "/api/generate" else chat
    result = call(client, stream=stream, **body)
    assert result.status_code == 200, result.text
    text_of = (lambda o: o["response"]) if path == "/api/generate" else (lambda o: o["message"]["content"])
    if not stream:
        return text_of(result.json), result.json
    objects = lines(result)
    return "".join(text_of(o) for o in objects), objects[-1]


# -- liveness, version, health ---------------------------------------------------------


def test_root_says_the_server_is_running(client) -> None:
    result = client.simulate_get("/")
    assert (result.status_code, result.text) == (200, "Ollama is running")
    assert result.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("path", ["/", "/api/version", "/api/tags", "/api/models", "/health"])
def test_head_answers_without_a_body(client, path: str) -> None:
    result = client.simulate_head(path)
    assert (result.status_code, result.text) == (200, "")


def test_version_is_the_package_version(client) -> None:
    assert client.simulate_get("/api/version").json == {"version": importlib.metadata.version("modelport")}


def test_health_lists_engines_and_loaded_models(client) -> None:
    health = client.simulate_get("/health").json
    assert (health["status"], health["engines"], health["loaded"]) == ("ok", {"fake": True}, [])
    assert health["devices"]["requested"] == "auto" and health["devices"]["cpu_count"] >= 1
    assert isinstance(health["devices"]["gpus"], list)
    assert health["queue"] == {"active": 0, "waiting": 0, "max_waiting": 512}
    generate(client, prompt="hi", stream=False)
    health = client.simulate_get("/health").json
    assert health["loaded"] == ["fake:latest"]
    slots = health["slots"]["fake:latest"]
    assert slots["busy"] == slots["waiting"] == 0 and slots["free"] == slots["total"] >= 1
    assert slots["tokens_per_second"] > 0


# -- models ------------------------------------------------------------------------------


def test_tags_lists_models_in_ollama_shape(client) -> None:
    models = {m["name"]: m for m in client.simulate_get("/api/tags").json["models"]}
    assert sorted(models) == ["embedder:latest", "fake:latest"]
    fake = models["fake:latest"]
    assert fake["model"] == "fake:latest" and fake["size"] == 1024 and len(fake["digest"]) == 64
    assert datetime.fromisoformat(fake["modified_at"]).tzinfo is not None
    assert fake["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "fake",
        "families": ["fake"],
        "parameter_size": "1M",
        "quantization_level": "F32",
        "context_length": 4096,
    }
    assert fake["capabilities"] == ["completion"]
    embedder = models["embedder:latest"]
    assert embedder["details"]["embedding_length"] == 16
    assert embedder["capabilities"] == ["embedding"]


def test_models_is_a_deprecated_alias_of_tags(client) -> None:
    result = client.simulate_get("/api/models")
    assert result.json == client.simulate_get("/api/tags").json
    assert result.headers["deprecation"] == "true"


def test_show_describes_the_model(client) -> None:
    shown = client.simulate_post("/api/show", json={"model": "fake"}).json
    assert shown["model_info"] == {
        "general.architecture": "fake",
        "general.parameter_count": 1_000_000,
        "fake.context_length": 4096,
    }
    assert "temperature 0.8" in shown["parameters"].splitlines()
    assert shown["template"] == "" and shown["license"] == ""
    assert shown["modelfile"].splitlines()[1] == "FROM /nowhere/model.gguf"
    assert shown["details"]["family"] == "fake"
    assert shown["capabilities"] == ["completion"]
    assert datetime.fromisoformat(shown["modified_at"]).tzinfo is not None


def test_show_gives_the_template_and_the_stored_metadata(client, fake_store) -> None:
    fake_store.add(
        fake_model(
            "templated:latest", chat_template="{{ messages }}", license="MIT", metadata=(("general.name", "Templated"),)
        )
    )
    shown = client.simulate_post("/api/show", json={"model": "templated"}).json
    assert (shown["template"], shown["license"]) == ("{{ messages }}", "MIT")
    assert shown["model_info"]["general.name"] == "Templated"


def test_show_accepts_the_legacy_name_field(client) -> None:
    shown = client.simulate_post("/api/show", json={"name": "embedder"}).json
    assert shown["model_info"]["fake.embedding_length"] == 16


def test_show_of_an_unknown_model_is_404(client) -> None:
    result = client.simulate_post("/api/show", json={"model": "nope"})
    assert (result.status_code, result.json) == (404, {"error": "model 'nope' not found"})


def test_show_without_a_model_is_400(client) -> None:
    result = client.simulate_post("/api/show", json={})
    assert (result.status_code, result.json) == (400, {"error": "model is required"})


# -- generate ----------------------------------------------------------------------------


def test_generate_streams_one_line_per_token(client) -> None:
    result = generate(client, prompt="Capital of France?")
    assert result.headers["content-type"] == "application/x-ndjson"
    objects = lines(result)
    *chunks, final = objects
    assert [c["response"] for c in chunks] == list(REPLY)
    assert all(c["done"] is False and c["model"] == "fake" and c["created_at"] == NOW_TEXT for c in chunks)
    assert final["done"] is True and final["done_reason"] == "stop" and final["response"] == ""
    assert all(isinstance(final[key], int) for key in METRICS)
    assert final["eval_count"] == len(REPLY)


def test_generate_without_streaming_answers_one_object(client) -> None:
    result = generate(client, prompt="Capital of France?", stream=False)
    assert result.headers["content-type"] == "application/json"
    body = result.json
    assert (body["response"], body["done"], body["done_reason"]) == (REPLY, True, "stop")
    assert body["model"] == "fake" and body["created_at"] == NOW_TEXT
    assert body["eval_count"] == len(REPLY) and all(key in body for key in METRICS)


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
@pytest.mark.parametrize("stream", [True, False])
def test_num_predict_limits_the_reply(client, path: str, stream: bool) -> None:
    text, final = answer(client, path, stream, prompt="hi", options={**GREEDY, "num_predict": 5})
    assert (text, final["done_reason"], final["eval_count"]) == ("The c", "length", 5)


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
@pytest.mark.parametrize("stream", [True, False])
def test_stop_strings_end_the_reply(client, path: str, stream: bool) -> None:
    text, final = answer(client, path, stream, prompt="hi", options={**GREEDY, "stop": ["Paris"]})
    assert (text, final["done_reason"]) == ("The capital of France is ", "stop")


def test_unknown_options_are_ignored(client) -> None:
    result = generate(
        client, prompt="hi", stream=False, options={**GREEDY, "numa": False, "mirostat": 0, "penalize_newline": True}
    )
    assert result.json["response"] == REPLY


def test_an_option_of_the_wrong_type_is_400(client) -> None:
    result = generate(client, prompt="hi", options={"top_k": "many"})
    assert result.status_code == 400 and "top_k" in result.json["error"]


def test_the_prompt_goes_through_the_chat_template(client, engine_box) -> None:
    generate(client, prompt="Capital?", system="Be brief.", stream=False)
    assert engine_box.last.prompts[-1] == "<|system|>Be brief.\n<|user|>Capital?\n<|assistant|>"


def test_a_raw_prompt_is_sent_as_is(client, engine_box) -> None:
    body = generate(client, prompt="Capital?", raw=True, stream=False).json
    assert engine_box.last.prompts[-1] == "Capital?"
    assert body["prompt_eval_count"] == len("Capital?")


@pytest.mark.parametrize(
    "field, value", [("system", "Be brief."), ("template", "{{ .Prompt }}"), ("context", [1, 2, 3])]
)
def test_raw_mode_refuses_system_template_and_context(client, field: str, value: Any) -> None:
    result = generate(client, prompt="hi", raw=True, **{field: value})
    assert (result.status_code, result.json) == (
        400,
        {"error": "raw mode does not support template, system, or context"},
    )


def test_template_and_context_are_ignored_without_raw(client) -> None:
    result = generate(client, prompt="hi", template="{{ .Prompt }}", context=[1, 2], stream=False)
    assert result.json["response"] == REPLY


def test_an_empty_prompt_loads_the_model(client, services) -> None:
    result = generate(client, prompt="")
    assert result.json == {"model": "fake", "created_at": NOW_TEXT, "response": "", "done": True, "done_reason": "load"}
    assert [r.model.name for r in services.loaded()] == ["fake:latest"]


@pytest.mark.parametrize("keep_alive", [0, "0", "0s"])
def test_an_empty_prompt_with_keep_alive_zero_unloads_the_model(client, services, keep_alive) -> None:
    generate(client)
    result = generate(client, keep_alive=keep_alive)
    assert (result.json["done"], result.json["done_reason"]) == (True, "unload")
    assert services.loaded() == []


@pytest.mark.parametrize("keep_alive", [300, 1.5, -1, "5m", "1h30m", "-1m", "250ms", "10"])
def test_keep_alive_accepts_seconds_and_durations(client, keep_alive) -> None:
    assert generate(client, prompt="hi", keep_alive=keep_alive, stream=False).status_code == 200


@pytest.mark.parametrize("keep_alive", ["soon", "5 minutes", "5d", True, [5], {}])
def test_keep_alive_refuses_anything_else(client, keep_alive) -> None:
    result = generate(client, prompt="hi", keep_alive=keep_alive)
    assert result.status_code == 400 and "keep_alive" in result.json["error"]


def test_images_are_refused(client) -> None:
    result = generate(client, prompt="What is this?", images=["aGVsbG8="])
    assert (result.status_code, result.json) == (400, {"error": "'fake:latest' does not support images"})


def test_an_unknown_model_is_404_before_its_images_are_refused(client) -> None:
    result = generate(client, model="nope", prompt="What is this?", images=["aGVsbG8="])
    assert result.status_code == 404


@pytest.mark.parametrize(
    "field, value, capability",
    [
        ("suffix", "return x", "insert"),
    ],
)
def test_features_no_model_offers_are_refused(client, field: str, value: Any, capability: str) -> None:
    result = generate(client, prompt="hi", **{field: value})
    assert result.status_code == 400
    assert "does not support" in result.json["error"] and capability in result.json["error"]


@pytest.mark.parametrize(
    "fields",
    [
        {"think": False},
        {"think": True},
        {"think": "high"},
        {"format": ""},
        {"images": []},
        {"suffix": ""},
        {"truncate": True, "shift": False, "logprobs": False},
    ],
)
def test_features_switched_off_are_accepted(client, fields: dict[str, Any]) -> None:
    assert generate(client, prompt="hi", stream=False, **fields).json["response"] == REPLY


@pytest.mark.parametrize(
    "field, value",
    [
        ("model", 3),
        ("prompt", 5),
        ("system", ["a"]),
        ("raw", "true"),
        ("stream", "yes"),
        ("options", [1]),
        ("images", "aGVsbG8="),
        ("think", "very"),
        ("format", 1),
        ("context", "1,2"),
    ],
)
def test_a_field_of_the_wrong_type_is_400_and_named(client, field: str, value: Any) -> None:
    result = generate(client, **{"prompt": "hi", field: value})
    assert result.status_code == 400 and field in result.json["error"], result.json


def test_a_missing_model_is_400(client) -> None:
    result = client.simulate_post("/api/generate", json={"prompt": "hi"})
    assert (result.status_code, result.json) == (400, {"error": "model is required"})


def test_a_malformed_model_name_is_400(client) -> None:
    result = generate(client, model="not a name", prompt="hi")
    assert result.status_code == 400 and "invalid model name" in result.json["error"]


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
@pytest.mark.parametrize("stream", [True, False])
def test_an_unknown_model_is_404(client, path: str, stream: bool) -> None:
    call = generate if path == "/api/generate" else chat
    result = call(client, model="nope", prompt="hi", stream=stream)
    assert (result.status_code, result.json) == (404, {"error": "model 'nope' not found"})


def test_a_model_without_chat_is_400(client) -> None:
    result = generate(client, model="embedder", prompt="hi")
    assert (result.status_code, result.json) == (400, {"error": "'embedder:latest' does not support chat"})


def test_a_prompt_longer_than_the_context_is_400_not_a_stream(client) -> None:
    result = generate(client, prompt="x" * 400, raw=True, options={"num_ctx": 256})
    assert result.status_code == 400 and "context window" in result.json["error"]


# -- request bodies ----------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, "", "  \n"])
def test_a_missing_body_is_400(client, body) -> None:
    result = client.simulate_post("/api/generate", body=body)
    assert (result.status_code, result.json) == (400, {"error": "missing request body"})


def test_bad_json_is_400(client) -> None:
    result = client.simulate_post("/api/generate", body='{"model": ')
    assert result.status_code == 400 and result.json["error"].startswith("invalid JSON: ")


@pytest.mark.parametrize("body", ["[]", '"fake"', "3"])
def test_a_body_that_is_not_an_object_is_400(client, body: str) -> None:
    result = client.simulate_post("/api/chat", body=body)
    assert (result.status_code, result.json) == (400, {"error": "the request body must be a JSON object"})


def test_a_body_over_the_limit_is_413(services, settings) -> None:
    client = falcon.testing.TestClient(create_app(services, settings, max_body=64), headers=LOCAL)
    result = client.simulate_post("/api/generate", json={"model": "fake", "prompt": "x" * 64})
    assert result.status_code == 413 and "larger than 64 bytes" in result.json["error"]


# -- chat --------------------------------------------------------------------------------


def test_chat_streams_assistant_messages(client) -> None:
    *chunks, final = lines(chat(client))
    assert all(o["message"]["role"] == "assistant" for o in [*chunks, final])
    assert "".join(c["message"]["content"] for c in chunks) == REPLY
    assert all(c["done"] is False for c in chunks)
    assert final["message"]["content"] == "" and final["done_reason"] == "stop"
    assert all(key in final for key in METRICS)


def test_chat_without_streaming_answers_one_object(client) -> None:
    body = chat(client, stream=False).json
    assert body["message"] == {"role": "assistant", "content": REPLY}
    assert (body["done"], body["done_reason"], body["eval_count"]) == (True, "stop", len(REPLY))


def test_chat_sends_every_message_through_the_template(client, engine_box) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "USER", "content": "Capital?"},
    ]
    client.simulate_post("/api/chat", json={"model": "fake", "messages": messages, "stream": False})
    assert engine_box.last.prompts[-1] == (
        "<|system|>Be brief.\n<|user|>Hi\n<|assistant|>Hello\n<|user|>Capital?\n<|assistant|>"
    )


def test_chat_without_messages_loads_and_with_keep_alive_zero_unloads(client, services) -> None:
    loaded = client.simulate_post("/api/chat", json={"model": "fake", "messages": []}).json
    assert loaded["done_reason"] == "load" and loaded["message"] == {"role": "assistant", "content": ""}
    assert len(services.loaded()) == 1
    unloaded = client.simulate_post("/api/chat", json={"model": "fake", "keep_alive": 0}).json
    assert unloaded["done_reason"] == "unload" and services.loaded() == []


@pytest.mark.parametrize(
    "messages, word",
    [
        ("hi", "messages"),
        (["hi"], "object"),
        ([{"content": "hi"}], "role"),
        ([{"role": "wizard", "content": "hi"}], "role"),
        ([{"role": "user", "content": 3}], "content"),
    ],
)
def test_malformed_messages_are_400(client, messages: Any, word: str) -> None:
    result = client.simulate_post("/api/chat", json={"model": "fake", "messages": messages})
    assert result.status_code == 400 and word in result.json["error"], result.json


def test_chat_refuses_images(client) -> None:
    with_image = [{"role": "user", "content": "What is this?", "images": ["aGVsbG8="]}]
    result = client.simulate_post("/api/chat", json={"model": "fake", "messages": with_image})
    assert (result.status_code, result.json) == (400, {"error": "'fake:latest' does not support images"})


def test_chat_accepts_tool_results_in_the_history(client, engine_box) -> None:
    messages = [{"role": "user", "content": "Weather?"}, {"role": "tool", "content": "sunny", "tool_name": "w"}]
    result = client.simulate_post("/api/chat", json={"model": "fake", "messages": messages, "stream": False})
    assert result.status_code == 200
    assert engine_box.last.prompts[-1] == (
        '<|user|>Weather?\n<|user|><tool_response>\n{"name":"w","content":"sunny"}\n</tool_response>\n<|assistant|>'
    )


CALLS = [
    {"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
    {"id": "call_2", "function": {"name": "get_time", "arguments": {"zone": "CET"}}},
]


@pytest.mark.parametrize(
    "results",
    [
        # litellm's ollama_chat: the id of the call each result answers
        [
            {"role": "tool", "content": "noon", "tool_call_id": "call_2"},
            {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
        ],
        # langchain-ollama: neither a name nor an id (its calls have no id either), in the calls' order
        [{"role": "tool", "content": "sunny"}, {"role": "tool", "content": "noon"}],
    ],
    ids=["by-call-id", "in-order"],
)
def test_a_tool_result_without_a_name_is_named_after_its_call(client, engine_box, results) -> None:
    calls = CALLS if "tool_call_id" in results[0] else [{"function": c["function"]} for c in CALLS]
    messages = [
        {"role": "user", "content": "Weather and time?"},
        {"role": "assistant", "content": "", "tool_calls": calls},
        *results,
    ]
    result = client.simulate_post("/api/chat", json={"model": "fake", "messages": messages, "stream": False})
    assert result.status_code == 200, result.json
    prompt = engine_box.last.prompts[-1]
    assert '{"name":"get_weather","content":"sunny"}' in prompt and '{"name":"get_time","content":"noon"}' in prompt


def test_a_tool_result_that_answers_no_call_stays_unnamed(client, engine_box) -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": CALLS[:1]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        {"role": "tool", "content": "extra"},  # one result more than there were calls
        {"role": "tool", "content": "other", "tool_call_id": "call_9"},
    ]
    result = client.simulate_post("/api/chat", json={"model": "fake", "messages": messages, "stream": False})
    assert result.status_code == 200, result.json
    prompt = engine_box.last.prompts[-1]
    assert '{"name":"get_weather","content":"sunny"}' in prompt
    assert '{"content":"extra"}' in prompt and '{"content":"other"}' in prompt


# -- routing -----------------------------------------------------------------------------


def test_an_unknown_path_is_a_json_404(client) -> None:
    result = client.simulate_get("/api/nothing")
    assert (result.status_code, result.json) == (404, {"error": "not found: GET /api/nothing"})


@pytest.mark.parametrize(
    "method, path", [("GET", "/api/generate"), ("DELETE", "/api/tags"), ("POST", "/api/version"), ("GET", "/api/show")]
)
def test_a_wrong_method_is_a_json_405(client, method: str, path: str) -> None:
    result = client.simulate_request(method, path)
    assert result.status_code == 405 and "not allowed" in result.json["error"]
    assert method not in result.headers["allow"]


# -- failures ----------------------------------------------------------------------------


class BreaksAfterOneToken(FakeEngine):
    """Draws one token (from the prompt's last chunk), then its next step fails
    with ``error``."""

    error: Exception = RuntimeError("the accelerator fell over")

    def step(self, step):
        if step.decode:
            raise self.error
        return super().step(step)


class BreaksWithModelportError(BreaksAfterOneToken):
    error = ModelLoadError("the weights are corrupt")


@pytest.mark.parametrize(
    "engine, message",
    [
        (BreaksAfterOneToken, "internal error: RuntimeError"),
        (BreaksWithModelportError, "the weights are corrupt"),
    ],
)
def test_an_error_after_streaming_began_is_the_last_line(settings, fake_store, engine, message) -> None:
    client = client_over(settings, fake_store, engine)
    result = generate(client, prompt="hi")
    assert result.status_code == 200
    assert lines(result) == [
        {"model": "fake", "created_at": lines(result)[0]["created_at"], "response": "T", "done": False},
        {"error": message},
    ]


def test_an_error_before_anything_was_sent_keeps_its_status(settings, fake_store) -> None:
    client = client_over(settings, fake_store, BreaksAfterOneToken)
    result = generate(client, prompt="hi", stream=False)
    assert (result.status_code, result.json) == (500, {"error": "internal error: RuntimeError"})


def test_a_failed_generation_releases_the_model(settings, fake_store) -> None:
    specs = [EngineSpec(name="fake", formats=set(ModelFormat), factory=BreaksAfterOneToken)]
    services = bootstrap(settings, store=fake_store, engines=specs, sessions=InMemorySessionRepository())
    client = falcon.testing.TestClient(create_app(services, settings), headers=LOCAL)
    generate(client, prompt="hi")
    assert services.loaded()[0].in_use == 0


class FailsToLoad(FakeEngine):
    def load(self, model, options) -> None:
        raise ZeroDivisionError("a bug")


def test_an_unexpected_error_is_a_500_without_details_and_is_logged(settings, fake_store, caplog) -> None:
    client = client_over(settings, fake_store, FailsToLoad)
    result = generate(client, prompt="hi")
    assert (result.status_code, result.json) == (500, {"error": "internal error: ZeroDivisionError"})
    assert "ZeroDivisionError: a bug" in caplog.text


def test_an_engine_that_cannot_run_here_is_503(settings, fake_store) -> None:
    client = client_over(settings, fake_store, FakeEngine, available=lambda: False)
    result = generate(client, prompt="hi")
    assert result.status_code == 503 and "engine 'fake' is not available" in result.json["error"]


# -- cancellation ------------------------------------------------------------------------


def test_closing_the_response_cancels_the_generation(services, settings) -> None:
    """What gunicorn does when the client goes away: close the body iterable."""
    app = create_app(services, settings)
    environ = falcon.testing.create_environ(
        method="POST", path="/api/generate", host="localhost", body=json.dumps({"model": "fake", "prompt": "hi"})
    )
    body = app(environ, lambda status, headers, exc_info=None: None)
    first = next(iter(body))
    assert json.loads(first)["done"] is False
    assert services.loaded()[0].in_use == 1
    body.close()
    assert services.loaded()[0].in_use == 0
    client = falcon.testing.TestClient(app, headers=LOCAL)
    assert generate(client, prompt="hi", stream=False).json["response"] == REPLY


# -- log-probabilities ---------------------------------------------------------------------


def test_generate_logprobs_streamed_and_whole(client, engine_box) -> None:
    streamed = lines(generate(client, prompt="hi", logprobs=True, top_logprobs=2, options={**GREEDY, "num_predict": 3}))
    tokens = [entry for line in streamed[:-1] for entry in line["logprobs"]]
    assert [t["token"] for t in tokens] == list("The")
    assert tokens[0]["logprob"] == pytest.approx(engine_box.last.distribution(0)[ord("T")])
    assert [len(t["top_logprobs"]) for t in tokens] == [2, 2, 2] and tokens[0]["bytes"] == [ord("T")]
    whole = generate(client, prompt="hi", stream=False, logprobs=True, options={**GREEDY, "num_predict": 3}).json
    assert [t["token"] for t in whole["logprobs"]] == list("The")
    assert "top_logprobs" not in whole["logprobs"][0]


def test_chat_logprobs_and_none_unless_asked(client) -> None:
    whole = chat(client, stream=False, logprobs=True, top_logprobs=1).json
    assert "".join(t["token"] for t in whole["logprobs"]) == REPLY
    assert "logprobs" not in chat(client, stream=False).json
    bad = chat(client, stream=False, logprobs=True, top_logprobs=30)
    assert bad.status_code == 400 and "top_logprobs" in bad.json["error"]


# -- names ----------------------------------------------------------------------------------


def test_an_alias_is_listed_under_its_own_name_with_the_same_digest(settings, fake_store) -> None:
    fake_store.add(fake_model("smollm2:135m", aliases=("smollm2",)))
    client = client_over(settings, fake_store, FakeEngine)
    tags = {m["name"]: m for m in client.simulate_get("/api/tags").json["models"]}
    assert {"smollm2:135m", "smollm2:latest", "fake:latest"} <= set(tags)
    assert "fake" not in tags  # fake's alias is its own name
    assert tags["smollm2:latest"]["digest"] == tags["smollm2:135m"]["digest"]
    assert tags["smollm2:latest"]["model"] == "smollm2:latest"
    assert tags["smollm2:latest"]["alias_of"] == "smollm2:135m" and "alias_of" not in tags["smollm2:135m"]
    ids = [m["id"] for m in client.simulate_get("/v1/models").json["data"]]
    assert "smollm2:latest" in ids and len(ids) == len(set(ids))
    answer = client.simulate_post(
        "/api/chat",
        json={
            "model": "smollm2:latest",
            "stream": False,
            "options": GREEDY,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert answer.json["message"]["content"] == REPLY


@pytest.mark.parametrize(
    "ollama, openai",
    [
        (
            ("/api/chat", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
            ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            ("/api/chat", {"model": "embedder", "messages": [{"role": "user", "content": "hi"}]}),
            ("/v1/responses", {"model": "embedder", "input": "hi"}),
        ),
        (("/api/embed", {"model": "fake", "input": "a"}), ("/v1/embeddings", {"model": "fake", "input": "a"})),
        (
            ("/api/generate", {"model": "fake", "prompt": "x", "suffix": "y"}),
            ("/v1/completions", {"model": "fake", "prompt": "x", "suffix": "y"}),
        ),
    ],
)
def test_errors_name_a_model_the_same_way_on_api_and_v1(client, ollama, openai) -> None:
    mine = client.simulate_post(ollama[0], json=ollama[1])
    theirs = client.simulate_post(openai[0], json=openai[1])
    assert mine.status_code == theirs.status_code
    quoted = re.compile(r"'([^']+)'")
    assert quoted.findall(mine.json["error"])[:1] == quoted.findall(theirs.json["error"]["message"])[:1] != []
