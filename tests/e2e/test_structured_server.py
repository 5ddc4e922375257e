"""Structured output and tool calls through the official clients against a running
server: gunicorn on 127.0.0.1 serving the fake app (fake_app.py), the real
llguidance compiler."""

from __future__ import annotations

import json
from typing import Iterator

import jsonschema
import ollama
import openai
import pytest
from test_openai_client import start
from test_structured_clients import PERSON, TIME, USER, WEATHER, arguments_valid

pytestmark = pytest.mark.slow
import llguidance  # noqa: F401  (CI installs every extra: a missing library fails)


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    with start(tmp_path_factory, "structured") as address:
        yield address


def test_openai_schema_and_streamed_forced_call(url) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", timeout=30, max_retries=0)
    answer = client.chat.completions.create(
        model="fake",
        messages=USER,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
    )
    jsonschema.validate(json.loads(answer.choices[0].message.content), PERSON)
    chunks = list(
        client.chat.completions.create(
            model="fake",
            messages=USER,
            tools=[WEATHER, TIME],
            stream=True,
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        )
    )
    calls = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert [c.function.name for c in calls] == ["get_time"]
    arguments_valid("get_time", json.loads(calls[0].function.arguments))
    with pytest.raises(openai.BadRequestError, match="dependentSchemas"):
        client.chat.completions.create(
            model="fake",
            messages=USER,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"dependentSchemas": {}}, "strict": True},
            },
        )


def test_ollama_format_and_tools(url) -> None:
    client = ollama.Client(host=url, timeout=30)
    jsonschema.validate(json.loads(client.generate(model="fake", prompt="?", format=PERSON).response), PERSON)
    reply = client.chat(model="fake", messages=USER, tools=[WEATHER], options={"temperature": 0})
    assert reply.message.content == "The capital of France is Paris." and not reply.message.tool_calls
