"""The OpenAI-compatible routes, through falcon's test client, over fakes."""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any

import falcon.testing
import pytest

from modelport.adapters.fake import fake_model
from modelport.entrypoints.http.app import create_app

REPLY = "The capital of France is Paris."
NOW = 1_700_000_000.0
LOCAL = {"Host": "localhost:11434"}
USER = [{"role": "user", "content": "Capital of France?"}]


@pytest.fixture
def client(services, settings) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(services, settings, clock=lambda: NOW), headers=LOCAL)


def chat(client, **body: Any) -> falcon.testing.Result:
    return client.simulate_post(
        "/v1/chat/completions", json={"model": "fake", "messages": USER, "temperature": 0, **body}
    )


def complete(client, **body: Any) -> falcon.testing.Result:
    return client.simulate_post(
        "/v1/completions", json={"model": "fake", "prompt": "Capital?", "temperature": 0, **body}
    )


def events(result: falcon.testing.Result) -> list[Any]:
    """The SSE data payloads, parsed; the literal [DONE] stays a string."""
    assert result.headers["content-type"] == "text/event-stream"
    assert result.text.endswith("\n\n")
    frames = result.text.split("\n\n")[:-1]
    assert all(f.startswith("data: ") and "\n" not in f for f in frames), frames
    return [f[6:] if f == "data: [DONE]" else json.loads(f[6:]) for f in frames]


def assert_openai_error(result: falcon.testing.Result, status: int, words: str, kind: str) -> None:
    assert result.status_code == status, result.text
    error = result.json["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words in error["message"] and error["type"] == kind
    assert result.headers["x-should-retry"] == "false"


# -- chat completions ----------------------------------------------------------------------


def test_chat_completion_has_openai_shape(client) -> None:
    body = chat(client).json
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["created"] == int(NOW) and body["model"] == "fake"
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": REPLY}, "logprobs": None, "finish_reason": "stop"}
    ]
    usage = body["usage"]
    assert usage["completion_tokens"] == len(REPLY)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_stream_is_sse_ending_with_done(client) -> None:
    first, *middle, finish, done = events(chat(client, stream=True))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"]["content"] for c in middle) == REPLY
    assert all(c["choices"][0]["finish_reason"] is None for c in [first, *middle])
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert done == "[DONE]"
    assert len({c["id"] for c in [first, *middle, finish]}) == 1
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in [first, *middle, finish])


def test_include_usage_adds_a_usage_chunk_without_choices(client) -> None:
    *chunks, usage, done = events(chat(client, stream=True, stream_options={"include_usage": True}, max_tokens=4))
    assert all(c["usage"] is None for c in chunks)
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_both_token_limits_are_read(client, field: str) -> None:
    body = chat(client, **{field: 5}).json
    assert body["choices"][0]["message"]["content"] == "The c"
    assert body["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("stop", ["Paris", ["France", "Paris"]])
def test_stop_as_a_string_or_a_list(client, stop) -> None:
    assert chat(client, stop=stop).json["choices"][0]["message"]["content"].startswith("The capital of")
    assert "Paris" not in chat(client, stop=stop).json["choices"][0]["message"]["content"]


def test_text_parts_and_developer_messages_are_understood(client, engine_box) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Capital "}, {"type": "text", "text": "?"}]},
    ]
    assert chat(client, messages=messages).status_code == 200
    assert engine_box.last.prompts[-1] == "<|system|>Be brief.\n<|user|>Capital ?\n<|assistant|>"


def test_the_models_own_defaults_are_the_base(client, fake_store, engine_box) -> None:
    fake_store.add(fake_model("greedy:latest", default_options={"temperature": 0.0, "num_predict": 3}))
    body = client.simulate_post("/v1/chat/completions", json={"model": "greedy", "messages": USER}).json
    assert body["choices"][0]["message"]["content"] == "The"
    assert chat(client, model="greedy", max_tokens=5).json["choices"][0]["message"]["content"] == "The c"


@pytest.mark.parametrize(
    "body, words",
    [
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
        ({"n": 0}, "'n' must be an integer from 1 to 16"),
        ({"n": 17}, "'n'"),
        ({"top_logprobs": 3}, "needs 'logprobs': true"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": "yes"}, "'logprobs' must be a boolean"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"strict": True, "schema": {"type": "object", "dependentSchemas": {}}},
                }
            },
            "dependentSchemas",
        ),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            "not one of the tools",
        ),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "needs tools"),
        ({"temperature": -1}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": [1]}, "stop"),
        ({"stream": "yes"}, "stream"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:;base64,"}}]}]},
            "images",
        ),
        ({"model": 7}, "model"),
    ],
)
def test_bad_chat_requests_are_400_in_openai_shape(client, body, words) -> None:
    assert_openai_error(chat(client, **body), 400, words, "invalid_request_error")


def test_n_choices_are_seeded_one_by_one(client) -> None:
    body = chat(client, n=3, temperature=1.0, seed=7).json
    texts = [c["message"]["content"] for c in body["choices"]]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2] and len(set(texts)) == 3
    assert chat(client, temperature=1.0, seed=7).json["choices"][0]["message"]["content"] == texts[0]
    assert chat(client, temperature=1.0, seed=8).json["choices"][0]["message"]["content"] == texts[1]
    one = chat(client, temperature=1.0, seed=7).json["usage"]
    usage = body["usage"]
    assert usage["prompt_tokens"] == one["prompt_tokens"]
    assert usage["completion_tokens"] == sum(len(t) for t in texts)


def test_n_choices_decode_together(client, engine_box) -> None:
    chat(client, n=3, max_tokens=5)
    steps = engine_box.last.steps
    assert max(len(step.sampling) for step in steps) == 3


def test_n_choices_stream_interleaved_with_their_index(client) -> None:
    first_a, first_b, *rest, done = events(chat(client, n=2, stream=True, stream_options={"include_usage": True}))
    assert [c["choices"][0]["index"] for c in (first_a, first_b)] == [0, 1]
    *chunks, usage = rest
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        assert "".join(c["delta"].get("content", "") for c in mine) == REPLY
        assert mine[-1]["finish_reason"] == "stop"
    assert usage["usage"]["completion_tokens"] == 2 * len(REPLY) and done == "[DONE]"


def test_chat_logprobs_are_the_engines_distribution(client, engine_box) -> None:
    choice = chat(client, logprobs=True, top_logprobs=3, max_tokens=4).json["choices"][0]
    content = choice["logprobs"]["content"]
    assert [c["token"] for c in content] == list("The ")
    dist = engine_box.last.distribution(0)
    assert content[0]["logprob"] == pytest.approx(dist[ord("T")])
    assert content[0]["bytes"] == [ord("T")]
    best = sorted(dist.values(), reverse=True)[:3]
    assert [t["logprob"] for t in content[0]["top_logprobs"]] == pytest.approx(best)
    assert content[0]["top_logprobs"][0]["token"] == "T"
    assert all(len(c["top_logprobs"]) == 3 for c in content)
    assert chat(client, logprobs=True).json["choices"][0]["logprobs"]["content"][0]["top_logprobs"] == []


def test_chat_logprobs_follow_the_temperature(client, engine_box) -> None:
    hot = chat(client, logprobs=True, temperature=2.0, seed=1, max_tokens=1).json["choices"][0]
    token = ord(hot["message"]["content"])
    assert hot["logprobs"]["content"][0]["logprob"] == pytest.approx(engine_box.last.distribution(0, 2.0)[token])


def test_streamed_chat_logprobs_come_with_each_token(client) -> None:
    _, *chunks, finish, done = events(chat(client, stream=True, logprobs=True, top_logprobs=2, max_tokens=3))
    tokens = [c["choices"][0]["logprobs"]["content"] for c in chunks]
    assert [t[0]["token"] for t in tokens] == list("The") and all(len(t[0]["top_logprobs"]) == 2 for t in tokens)
    assert finish["choices"][0]["finish_reason"] == "length"


def test_completion_logprobs_in_the_legacy_shape(client, engine_box) -> None:
    choice = complete(client, logprobs=2, max_tokens=3).json["choices"][0]
    legacy = choice["logprobs"]
    assert legacy["tokens"] == ["T", "h", "e"] and legacy["text_offset"] == [0, 1, 2]
    assert legacy["token_logprobs"][0] == pytest.approx(engine_box.last.distribution(0)[ord("T")])
    assert all(len(top) == 2 for top in legacy["top_logprobs"]) and "T" in legacy["top_logprobs"][0]
    chunks = events(complete(client, logprobs=1, max_tokens=3, stream=True))[:-1]
    offsets = [c["choices"][0]["logprobs"]["text_offset"] for c in chunks if c["choices"][0]["logprobs"]]
    assert offsets == [[0], [1], [2]]


def test_completion_n_choices_per_prompt(client) -> None:
    body = complete(client, prompt=["a", "bb"], n=2, max_tokens=2).json
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "Th"), (1, "Th"), (2, "Th"), (3, "Th")]
    assert body["usage"]["prompt_tokens"] == 3 and body["usage"]["completion_tokens"] == 8


def test_tools_with_tool_choice_none_are_ignored(client) -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert chat(client, tools=tools, tool_choice="none").json["choices"][0]["message"]["content"] == REPLY


def test_a_tool_result_is_named_after_the_call_its_id_answers(client, engine_box) -> None:
    """What LangChain's ChatOpenAI sends back: the result with the call's id, no name.
    The model is told the tool's name, never the call's id."""
    call = {"id": "call_ab12", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    messages = USER + [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_ab12", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_zz99", "content": "stray"},  # answers no call: no name
    ]
    assert chat(client, messages=messages).status_code == 200
    prompt = engine_box.last.prompts[-1]
    assert '{"name":"get_weather","content":"sunny"}' in prompt and '{"content":"stray"}' in prompt
    assert "call_ab12" not in prompt


def test_unknown_model_is_404_with_a_code(client) -> None:
    result = chat(client, model="nope")
    assert_openai_error(result, 404, "model 'nope' not found", "not_found_error")
    assert (result.json["error"]["param"], result.json["error"]["code"]) == ("model", "model_not_found")


def test_a_context_overflow_is_400_before_the_stream(client) -> None:
    result = chat(client, stream=True, messages=[{"role": "user", "content": "x" * 5000}])
    assert_openai_error(result, 400, "context window", "invalid_request_error")


# -- completions -------------------------------------------------------------------------------


def test_completion_sends_the_prompt_raw(client, engine_box) -> None:
    body = complete(client).json
    assert engine_box.last.prompts[-1] == "Capital?"
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"] == [{"index": 0, "text": REPLY, "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"]["prompt_tokens"] == len("Capital?")


def test_completion_of_several_prompts_gives_one_choice_each(client) -> None:
    body = complete(client, prompt=["a", "bb"], max_tokens=3).json
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "The"), (1, "The")]
    assert body["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 6,
        "total_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_completion_stream(client) -> None:
    *chunks, usage, done = events(complete(client, stream=True, max_tokens=4, stream_options={"include_usage": True}))
    assert "".join(c["choices"][0]["text"] for c in chunks) == "The "
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["object"] == "text_completion" for c in chunks)
    assert (usage["choices"], usage["usage"]["completion_tokens"], done) == ([], 4, "[DONE]")


@pytest.mark.parametrize(
    "body, words",
    [
        ({"prompt": [1, 2, 3]}, "token arrays"),
        ({"prompt": None}, "prompt"),
        ({"suffix": "x"}, "insert"),
        ({"echo": True}, "echo"),
        ({"best_of": 2}, "best_of"),
        ({"logprobs": 21}, "logprobs"),
        ({"prompt": ["a", "b"], "stream": True}, "single prompt"),
    ],
)
def test_bad_completion_requests_are_400(client, body, words) -> None:
    assert_openai_error(complete(client, **body), 400, words, "invalid_request_error")


# -- embeddings ----------------------------------------------------------------------------------


def floats(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_embeddings_as_floats_and_as_base64_agree(client) -> None:
    plain = client.simulate_post("/v1/embeddings", json={"model": "embedder", "input": ["a", "b"]}).json
    packed = client.simulate_post(
        "/v1/embeddings", json={"model": "embedder", "input": ["a", "b"], "encoding_format": "base64"}
    ).json
    assert plain["object"] == "list" and plain["model"] == "embedder"
    assert [d["index"] for d in plain["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and len(d["embedding"]) == 16 for d in plain["data"])
    for mine, theirs in zip(plain["data"], packed["data"]):
        assert floats(theirs["embedding"]) == pytest.approx(mine["embedding"], abs=1e-6)
    assert plain["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


def test_embeddings_with_dimensions_are_cut_and_normalised(client) -> None:
    data = client.simulate_post("/v1/embeddings", json={"model": "embedder", "input": "a", "dimensions": 4}).json
    vector = data["data"][0]["embedding"]
    assert len(vector) == 4 and math.isclose(sum(v * v for v in vector), 1.0)


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"input": []}, 400, "invalid input"),
        ({"input": [[1, 2]]}, 400, "token arrays"),
        ({"input": "a", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"input": "a", "dimensions": 99}, 400, "dimensions"),
        ({"model": "fake", "input": "a"}, 400, "does not support embeddings"),
        ({"model": "nope", "input": "a"}, 404, "not found"),
    ],
)
def test_bad_embedding_requests(client, body, status, words) -> None:
    result = client.simulate_post("/v1/embeddings", json={"model": "embedder", **body})
    assert result.status_code == status and words in result.json["error"]["message"], result.text


# -- models --------------------------------------------------------------------------------------


def test_models_list_and_retrieve(client, fake_store) -> None:
    fake_store.add(fake_model("someorg/thing:q4", modified_at=1_600_000_000.5))
    listed = client.simulate_get("/v1/models").json
    assert listed["object"] == "list"
    entries = {m["id"]: m for m in listed["data"]}
    assert entries["someorg/thing:q4"] == {
        "id": "someorg/thing:q4",
        "object": "model",
        "created": 1_600_000_000,
        "owned_by": "someorg",
    }
    assert entries["fake:latest"]["owned_by"] == "library"
    assert client.simulate_get("/v1/models/someorg/thing:q4").json == entries["someorg/thing:q4"]
    assert client.simulate_get("/v1/models/fake").json["id"] == "fake:latest"


def test_an_empty_model_list_is_a_list(services, settings, fake_store) -> None:
    fake_store.models.clear()
    client = falcon.testing.TestClient(create_app(services, settings), headers=LOCAL)
    assert client.simulate_get("/v1/models").json == {"object": "list", "data": []}


def test_retrieving_an_unknown_model_is_404(client) -> None:
    assert_openai_error(client.simulate_get("/v1/models/nope"), 404, "not found", "not_found_error")


def test_routing_errors_under_v1_have_the_openai_shape(client) -> None:
    assert_openai_error(client.simulate_get("/v1/nothing"), 404, "not found", "not_found_error")
    assert_openai_error(client.simulate_get("/v1/chat/completions"), 405, "not allowed", "invalid_request_error")
    assert_openai_error(
        client.simulate_post("/v1/chat/completions", body="{"), 400, "invalid JSON", "invalid_request_error"
    )
