"""Structured output and tool calls through the official ``ollama`` and ``openai``
clients, against the real WSGI app (in process, over httpx's WSGI transport) on
the fake engine and the real llguidance compiler."""

from __future__ import annotations

import json

import httpx
import jsonschema
import ollama
import openai
import pytest

from modelport.entrypoints.http.app import create_app

import llguidance  # noqa: F401  (CI installs every extra: a missing library fails)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
USER = [{"role": "user", "content": "Weather in Oslo?"}]


@pytest.fixture
def transport(services, settings):
    return httpx.WSGITransport(app=create_app(services, settings))


@pytest.fixture
def oai(transport) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://127.0.0.1:11434/v1", api_key="x", max_retries=0, http_client=httpx.Client(transport=transport)
    )


@pytest.fixture
def oll(transport) -> ollama.Client:
    return ollama.Client(host="http://127.0.0.1:11434", transport=transport)


def arguments_valid(name: str, arguments: dict) -> None:
    tool = {t["function"]["name"]: t for t in (WEATHER, TIME)}[name]
    jsonschema.validate(arguments, tool["function"]["parameters"])


# -- OpenAI --------------------------------------------------------------------------------------


def test_openai_json_schema_strict(oai) -> None:
    answer = oai.chat.completions.create(
        model="fake",
        messages=USER,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
    )
    jsonschema.validate(json.loads(answer.choices[0].message.content), PERSON)


def test_openai_json_object(oai) -> None:
    answer = oai.chat.completions.create(model="fake", messages=USER, response_format={"type": "json_object"})
    assert isinstance(json.loads(answer.choices[0].message.content), dict)


def test_openai_an_uncompilable_schema_is_a_400_naming_it(oai) -> None:
    with pytest.raises(openai.BadRequestError, match="dependentSchemas"):
        oai.chat.completions.create(
            model="fake",
            messages=USER,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "strict": True, "schema": {"type": "object", "dependentSchemas": {}}},
            },
        )


@pytest.mark.parametrize(
    "choice, names",
    [("required", {"get_weather", "get_time"}), ({"type": "function", "function": {"name": "get_time"}}, {"get_time"})],
)
def test_openai_forced_calls_not_streamed(oai, choice, names) -> None:
    answer = oai.chat.completions.create(model="fake", messages=USER, tools=[WEATHER, TIME], tool_choice=choice)
    choice0 = answer.choices[0]
    assert choice0.finish_reason == "tool_calls" and choice0.message.tool_calls
    for call in choice0.message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_") and call.function.name in names
        arguments_valid(call.function.name, json.loads(call.function.arguments))


def test_openai_forced_call_streamed(oai) -> None:
    chunks = list(
        oai.chat.completions.create(model="fake", messages=USER, tools=[WEATHER], tool_choice="required", stream=True)
    )
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].index == 0 and deltas[0].id.startswith("call_")
    assert deltas[0].function.name == "get_weather"
    arguments_valid("get_weather", json.loads(deltas[0].function.arguments))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_none_and_auto_give_text(oai) -> None:
    for choice in ("none", "auto"):
        answer = oai.chat.completions.create(
            model="fake", messages=USER, tools=[WEATHER], tool_choice=choice, temperature=0
        )
        message = answer.choices[0].message
        assert message.tool_calls is None and message.content == "The capital of France is Paris."
        assert answer.choices[0].finish_reason == "stop"


def test_openai_tool_result_round_trip(oai, engine_box) -> None:
    messages = USER + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo", "unit": "c"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "-3 and snow"},
    ]
    answer = oai.chat.completions.create(model="fake", messages=messages, tools=[WEATHER], temperature=0)
    assert answer.choices[0].message.content == "The capital of France is Paris."
    prompt = engine_box.last.prompts[-1]
    assert '{"name":"get_weather","arguments":{"city":"Oslo","unit":"c"}}' in prompt and "-3 and snow" in prompt


# -- Ollama --------------------------------------------------------------------------------------


def test_ollama_format_schema_on_generate_and_chat(oll) -> None:
    done = oll.generate(model="fake", prompt="A person?", format=PERSON)
    jsonschema.validate(json.loads(done.response), PERSON)
    reply = oll.chat(model="fake", messages=USER, format=PERSON, options={"temperature": 0})
    jsonschema.validate(json.loads(reply.message.content), PERSON)


def test_ollama_format_json(oll) -> None:
    assert isinstance(json.loads(oll.generate(model="fake", prompt="JSON?", format="json").response), dict)


def test_ollama_uncompilable_schema_is_a_400(oll) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        oll.chat(model="fake", messages=USER, format={"type": "object", "dependentSchemas": {}})
    assert caught.value.status_code == 400 and "dependentSchemas" in caught.value.error


def test_ollama_think_is_accepted_and_ignored(oll) -> None:
    reply = oll.chat(model="fake", messages=USER, think=True, options={"temperature": 0})
    assert reply.message.content == "The capital of France is Paris."


def test_ollama_tools_stream_a_whole_call_in_one_chunk(oll, engine_box) -> None:
    engine_box.reply = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}}\n</tool_call>'
    chunks = list(oll.chat(model="fake", messages=USER, tools=[WEATHER], stream=True, options={"temperature": 0}))
    calls = [c for chunk in chunks for c in (chunk.message.tool_calls or [])]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo", "unit": "c"})
    ]
    assert "".join(chunk.message.content or "" for chunk in chunks) == ""


def test_ollama_tools_not_streamed_and_round_trip(oll, engine_box) -> None:
    engine_box.reply = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>'
    reply = oll.chat(model="fake", messages=USER, tools=[WEATHER, TIME], stream=False, options={"temperature": 0})
    (call,) = reply.message.tool_calls
    assert (call.function.name, dict(call.function.arguments)) == ("get_time", {"zone": "CET"})
    history = USER + [
        reply.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_name": "get_time", "content": "12:00"},
    ]
    engine_box.last.reply = "It is noon."  # the loaded engine
    final = oll.chat(model="fake", messages=history, tools=[WEATHER, TIME], options={"temperature": 0})
    assert final.message.content == "It is noon."
    assert '"content":"12:00"' in engine_box.last.prompts[-1]


def test_modelport_native_routes_carry_format_and_tool_calls(transport) -> None:
    with httpx.Client(transport=transport, base_url="http://127.0.0.1:11434") as http:
        done = http.post("/v1/generate", json={"model": "fake", "prompt": "A person?", "format": PERSON}).json()
        jsonschema.validate(json.loads(done["text"]), PERSON)
        forced = http.post(
            "/v1/generate", json={"model": "fake", "messages": USER, "tools": [WEATHER], "options": {"temperature": 0}}
        ).json()
        assert forced["text"] == "The capital of France is Paris." and "tool_calls" not in forced


def test_openai_parse_with_a_pydantic_model(oai) -> None:
    """What LangChain's with_structured_output and the SDK's parse() send: a strict
    json_schema made from a pydantic model (titles, $defs, a nested model)."""
    import pydantic

    class Address(pydantic.BaseModel):
        city: str
        zip_code: str

    class Person(pydantic.BaseModel):
        name: str
        age: int
        address: Address

    parsed = oai.chat.completions.parse(model="fake", messages=USER, response_format=Person, temperature=0)
    person = parsed.choices[0].message.parsed
    assert isinstance(person, Person) and isinstance(person.address, Address)


def test_openai_pydantic_function_tool(oai) -> None:
    import pydantic

    class GetWeather(pydantic.BaseModel):
        city: str

    tool = openai.pydantic_function_tool(GetWeather)
    parsed = oai.chat.completions.parse(model="fake", messages=USER, tools=[tool], tool_choice="required")
    call = parsed.choices[0].message.tool_calls[0]
    assert call.function.name == "GetWeather" and isinstance(call.function.parsed_arguments, GetWeather)
