"""``/v1/responses`` (OpenAI's Responses API), through falcon's test client, over fakes."""

from __future__ import annotations

import json
from typing import Any

import falcon.testing
import pytest

from modelport.entrypoints.http.app import create_app
from modelport.entrypoints.http.responses import ResponseStore

REPLY = "The capital of France is Paris."
NOW = 1_700_000_000.0
LOCAL = {"Host": "localhost:11434"}


@pytest.fixture
def client(services, settings) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(services, settings, clock=lambda: NOW), headers=LOCAL)


def respond(client, **body: Any) -> falcon.testing.Result:
    return client.simulate_post(
        "/v1/responses", json={"model": "fake", "input": "Capital of France?", "temperature": 0, **body}
    )


def sse(result: falcon.testing.Result) -> list[tuple[str, dict[str, Any]]]:
    assert result.headers["content-type"] == "text/event-stream", result.text
    out = []
    for frame in result.text.split("\n\n")[:-1]:
        kind, data = frame.split("\n")
        assert kind.startswith("event: ") and data.startswith("data: ")
        payload = json.loads(data[6:])
        assert payload["type"] == kind[7:]
        out.append((kind[7:], payload))
    return out


def test_a_text_input_gets_a_completed_response(client, engine_box) -> None:
    body = respond(client).json
    assert body["object"] == "response" and body["id"].startswith("resp_") and body["status"] == "completed"
    assert body["created_at"] == int(NOW) and body["model"] == "fake"
    (item,) = body["output"]
    assert (item["type"], item["role"], item["status"]) == ("message", "assistant", "completed")
    assert item["content"] == [{"type": "output_text", "text": REPLY, "annotations": []}]
    assert body["usage"]["output_tokens"] == len(REPLY)
    assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] + len(REPLY)
    assert engine_box.last.prompts[-1] == "<|user|>Capital of France?\n<|assistant|>"


def test_messages_and_instructions_become_the_conversation(client, engine_box) -> None:
    items = [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]},
        {"role": "user", "content": "Capital?"},
    ]
    body = respond(client, input=items, instructions="Answer in French.").json
    assert body["instructions"] == "Answer in French."
    assert engine_box.last.prompts[-1] == (
        "<|system|>Answer in French.\n<|system|>Be brief.\n<|user|>Hi\n"
        "<|assistant|>Hello\n<|user|>Capital?\n<|assistant|>"
    )


def test_max_output_tokens_makes_it_incomplete(client) -> None:
    body = respond(client, max_output_tokens=3).json
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["content"][0]["text"] == "The" and body["max_output_tokens"] == 3


def test_the_stream_follows_the_responses_event_order(client) -> None:
    events = sse(respond(client, stream=True))
    kinds = [kind for kind, _ in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert "".join(e["delta"] for k, e in events if k == "response.output_text.delta") == REPLY
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    final = events[-1][1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == REPLY
    assert events[0][1]["response"]["id"] == final["id"] and events[0][1]["response"]["status"] == "in_progress"


def test_a_short_stream_ends_incomplete(client) -> None:
    assert sse(respond(client, stream=True, max_output_tokens=2))[-1][0] == "response.incomplete"


def test_previous_response_id_continues_the_conversation(client, engine_box) -> None:
    first = respond(client, instructions="Only now.").json
    second = respond(client, input="And Spain?", previous_response_id=first["id"]).json
    assert second["previous_response_id"] == first["id"]
    assert engine_box.last.prompts[-1] == (
        f"<|user|>Capital of France?\n<|assistant|>{REPLY}\n<|user|>And Spain?\n<|assistant|>"
    )
    third = respond(client, input="And Italy?", previous_response_id=second["id"], stream=True)
    assert sse(third)[-1][0] == "response.completed"
    assert engine_box.last.prompts[-1].count("<|user|>") == 3
    assert client.simulate_get(f"/v1/responses/{first['id']}").json == first
    assert client.simulate_delete(f"/v1/responses/{first['id']}").json["deleted"] is True
    gone = respond(client, input="Again?", previous_response_id=first["id"])
    assert gone.status_code == 404 and first["id"] in gone.json["error"]["message"]


def test_store_false_keeps_nothing(client) -> None:
    body = respond(client, store=False).json
    assert body["store"] is False
    assert client.simulate_get(f"/v1/responses/{body['id']}").status_code == 404


def test_the_store_is_bounded_and_expires() -> None:
    now = [0.0]
    store = ResponseStore(capacity=2, ttl=10, clock=lambda: now[0])
    for name in "abc":
        store.put(name, (), {"id": name})
    assert len(store) == 2
    with pytest.raises(falcon.HTTPNotFound):
        store.get("a")
    now[0] = 11
    assert len(store) == 0


def test_logprobs_in_output_text(client, engine_box) -> None:
    body = respond(client, top_logprobs=2, include=["message.output_text.logprobs"], max_output_tokens=2).json
    part = body["output"][0]["content"][0]
    assert [t["token"] for t in part["logprobs"]] == ["T", "h"]
    assert part["logprobs"][0]["logprob"] == pytest.approx(engine_box.last.distribution(0)[ord("T")])
    assert len(part["logprobs"][0]["top_logprobs"]) == 2
    deltas = [
        e
        for k, e in sse(respond(client, stream=True, top_logprobs=1, max_output_tokens=2))
        if k == "response.output_text.delta"
    ]
    assert [d["logprobs"][0]["token"] for d in deltas] == ["T", "h"]


@pytest.mark.parametrize(
    "body, words",
    [
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": []}}}, "text.format.schema"),
        ({"text": {"format": {"type": "json_schema", "schema": {}, "strict": "yes"}}}, "text.format.strict"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
        (
            {
                "text": {
                    "format": {
                        "type": "json_schema",
                        "strict": True,
                        "schema": {"type": "object", "dependentSchemas": {}},
                    }
                }
            },
            "dependentSchemas",
        ),
        ({"text": {"stop": 1}}, "text.stop"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type 'web_search'"),
        ({"tools": [{"type": "function", "name": "no spaces"}]}, "tools[0]"),
        ({"tools": [{"type": "function", "function": "f"}]}, "tools[0]"),
        ({"tools": [{"type": "function", "name": "f", "parameters": 3}]}, "tools[0]"),
        ({"tools": [{"type": "function", "name": "f", "strict": 1}]}, "tools[0].strict"),
        ({"tools": [{"type": "function", "name": "f"}, {"type": "function", "name": "f"}]}, "unique"),
        ({"tools": {"type": "function", "name": "f"}}, "'tools'"),
        ({"tool_choice": "required"}, "needs tools"),
        ({"tool_choice": {"type": "function", "name": "g"}, "tools": [{"type": "function", "name": "f"}]}, "'g'"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice 'file_search'"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"parallel_tool_calls": "no"}, "parallel_tool_calls"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]}, "call_id 'c'"),
        ({"input": [{"type": "function_call_output", "output": "1"}]}, "input[0].call_id"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": 1}]}, "input[0].output"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]}, "input[0].arguments"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]}, "input[0]"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1", "prompt": {"id": "p"}}, "conversation, prompt"),
        ({"include": ["file_search_call.results"]}, "file_search_call.results"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "images"),
        ({"input": []}, "input"),
        ({"input": 3}, "input"),
        ({"temperature": -1}, "temperature"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"model": None}, "model"),
    ],
)
def test_unsupported_or_bad_fields_are_400_naming_them(client, body, words) -> None:
    result = respond(client, **body)
    assert result.status_code == 400, result.text
    assert words in result.json["error"]["message"]


def test_an_unknown_model_is_404(client) -> None:
    result = respond(client, model="nope")
    assert result.status_code == 404 and result.json["error"]["code"] == "model_not_found"


# -- text.format and function tools -------------------------------------------------------------

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "strict": True,
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
TIME = {
    "type": "function",
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"zone": {"enum": ["CET", "UTC"]}}, "required": ["zone"]},
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 10}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


def test_a_json_schema_format_gives_text_that_validates(client) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    fmt = {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}
    body = respond(client, text={"format": fmt}).json
    assert body["text"] == {"format": fmt}
    jsonschema.validate(json.loads(body["output"][0]["content"][0]["text"]), PERSON)
    events = sse(respond(client, text={"format": {"type": "json_object"}}, stream=True))
    assert [k for k, _ in events][-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert isinstance(json.loads(events[-1][1]["response"]["output"][0]["content"][0]["text"]), dict)


def test_a_forced_function_gives_a_function_call_item(client, engine_box) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    body = respond(client, tools=[WEATHER, TIME], tool_choice={"type": "function", "name": "get_time"}).json
    (item,) = body["output"]
    assert item["type"] == "function_call" and item["status"] == "completed" and item["name"] == "get_time"
    assert item["id"].startswith("fc_") and item["call_id"].startswith("call_")
    jsonschema.validate(json.loads(item["arguments"]), TIME["parameters"])
    assert body["tool_choice"] == {"type": "function", "name": "get_time"}
    assert [t["name"] for t in body["tools"]] == ["get_weather", "get_time"] and body["tools"][0]["strict"] is True
    assert "get_time" in engine_box.last.prompts[-1]  # the tool is described to the model


def test_a_chat_completions_shaped_tool_is_read_too(client) -> None:
    chat_shape = {"type": "function", "function": {k: v for k, v in TIME.items() if k != "type"}}
    body = respond(client, tools=[chat_shape], tool_choice="required").json
    assert body["output"][0]["name"] == "get_time" and body["tools"][0]["name"] == "get_time"


def test_auto_and_none_give_text(client) -> None:
    for choice in ("auto", "none"):
        body = respond(client, tools=[WEATHER], tool_choice=choice).json
        assert [i["type"] for i in body["output"]] == ["message"]
        assert body["output"][0]["content"][0]["text"] == REPLY and body["tool_choice"] == choice


def test_calls_the_model_makes_stream_as_function_call_items(client, engine_box) -> None:
    engine_box.reply = f"Let me see.{CALL}\n{CALL.replace('Oslo', 'Rome')}"
    events = sse(respond(client, tools=[WEATHER], stream=True))
    kinds = [kind for kind, _ in events]
    call_events = [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    text_close = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-12:] == text_close + call_events + call_events + ["response.completed"]
    final = events[-1][1]["response"]
    message, first, second = final["output"]
    assert message["type"] == "message" and message["content"][0]["text"] == "Let me see."
    assert [(i["type"], json.loads(i["arguments"])) for i in (first, second)] == [
        ("function_call", {"city": "Oslo"}),
        ("function_call", {"city": "Rome"}),
    ]
    added = [e for k, e in events if k == "response.output_item.added"]
    assert [a["output_index"] for a in added] == [0, 1, 2]
    assert added[1]["item"] == {**first, "status": "in_progress", "arguments": ""}
    deltas = [e for k, e in events if k == "response.function_call_arguments.delta"]
    assert [d["item_id"] for d in deltas] == [first["id"], second["id"]]
    assert deltas[0]["delta"] == first["arguments"] and deltas[0]["output_index"] == 1
    whole = respond(client, tools=[WEATHER]).json
    assert [i["type"] for i in whole["output"]] == ["message", "function_call", "function_call"]
    one = respond(client, tools=[WEATHER], parallel_tool_calls=False).json
    assert [i["type"] for i in one["output"]] == ["message", "function_call"] and one["parallel_tool_calls"] is False
    streamed = sse(respond(client, tools=[WEATHER], parallel_tool_calls=False, stream=True))
    assert [i["type"] for i in streamed[-1][1]["response"]["output"]] == ["message", "function_call"]


def test_a_call_alone_streams_no_message(client, engine_box) -> None:
    engine_box.reply = CALL
    events = sse(respond(client, tools=[WEATHER], stream=True))
    assert [k for k, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [i["type"] for i in events[-1][1]["response"]["output"]] == ["function_call"]


def test_the_tool_round_trip_with_input_items_and_previous_response_id(client, engine_box) -> None:
    engine_box.reply = CALL
    first = respond(client, input="Weather in Oslo?", tools=[WEATHER]).json
    (call,) = first["output"]
    engine_box.last.reply = "It is sunny in Oslo."
    result = {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny, 21 C"}
    # the whole conversation sent back, as a client without server state does
    again = respond(client, input=[{"role": "user", "content": "Weather in Oslo?"}, call, result], tools=[WEATHER]).json
    assert again["output"][0]["content"][0]["text"] == "It is sunny in Oslo."
    prompt = engine_box.last.prompts[-1]
    assert '{"name":"get_weather","arguments":{"city":"Oslo"}}' in prompt
    assert '{"name":"get_weather","content":"sunny, 21 C"}' in prompt
    # or only the result, after the stored response
    engine_box.last.prompts.clear()
    chained = respond(
        client,
        input=[{**result, "output": [{"type": "input_text", "text": "sunny, 21 C"}]}],
        previous_response_id=first["id"],
        tools=[WEATHER],
        stream=True,
    )
    assert sse(chained)[-1][1]["response"]["output"][0]["content"][0]["text"] == "It is sunny in Oslo."
    assert engine_box.last.prompts[-1] == prompt
    unknown = respond(client, input=[{**result, "call_id": "call_other"}], previous_response_id=first["id"])
    assert unknown.status_code == 400 and "call_other" in unknown.json["error"]["message"]


ODD = [
    None,
    0,
    -1,
    2.5,
    True,
    "",
    "x",
    [],
    [None],
    [1],
    ["function"],
    {},
    {"type": None},
    {"type": "function"},
    {"type": "function", "name": 3},
    {"type": "function", "name": "f", "parameters": "{not json"},
    {"type": "json_schema", "schema": "not json"},
    {"type": "json_schema", "schema": [1]},
    [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": None}],
]


@pytest.mark.parametrize("field", ["tools", "tool_choice", "parallel_tool_calls", "text", "input"])
def test_odd_values_of_the_tool_fields_are_answered_never_a_500(client, field) -> None:
    for value in ODD:
        body = {field: value}
        if field == "text":
            body = {"text": {"format": value}}
        elif field == "input":
            body = {
                "input": [
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": value},
                    {"type": "function_call_output", "call_id": value, "output": value},
                ]
            }
        result = respond(client, **body)
        assert result.status_code in (200, 400), (body, result.text)
        if result.status_code == 400:
            assert result.json["error"]["message"]
