"""Structured output and tool calls on the bundled SmolLM2, on every engine that
runs it (each honours ``Step.masks`` and describes its vocabulary): through the
library API and through the official clients against the real app."""

from __future__ import annotations

import importlib
import importlib.util
import json
import threading

import httpx
import jsonschema
import pytest

from modelport.domain import (
    ChatMessage,
    Conversation,
    GenerationRequest,
    ModelRef,
    OutputFormat,
    SamplingPolicy,
    Tool,
    ToolCall,
    ToolChoice,
    system_and_user,
)
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.config import Settings

pytestmark = pytest.mark.slow

ENGINES = {
    "mlx": ("modelport.adapters.mlx", "MlxEngine", "mlx_lm"),
    "gguf": ("modelport.adapters.llamacpp", "LlamaCppEngine", "llama_cpp"),
    "jax": ("modelport.adapters.jax", "JaxEngine", "jax"),
}

SCHEMAS = [
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "green", "blue"]}},
        "required": ["colour"],
        "additionalProperties": False,
    },
    {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 9}, "minItems": 2, "maxItems": 5},
    {
        "type": "object",
        "properties": {
            "city": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 20},
                    "population": {"type": "number", "minimum": 0},
                },
                "required": ["name", "population"],
                "additionalProperties": False,
            }
        },
        "required": ["city"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
        },
        "required": ["ok", "tags"],
        "additionalProperties": False,
    },
]
PROMPTS = [
    "Describe a person as JSON.",
    "Pick a colour.",
    "List a few small numbers.",
    "Describe a city as JSON.",
    "Is the sky blue? Give tags.",
]

WEATHER = Tool(
    name="get_weather",
    description="Get the current weather in a city",
    parameters_text={
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
TIME = Tool(
    name="get_time",
    description="Get the time in a time zone",
    parameters_text={
        "type": "object",
        "properties": {"zone": {"type": "string", "maxLength": 30}},
        "required": ["zone"],
        "additionalProperties": False,
    },
)
TOOLS = {t.name: t for t in (WEATHER, TIME)}


def _constrainable(name: str) -> None:
    module, cls, library = ENGINES[name]
    assert importlib.util.find_spec(library) is not None, f"{library} is not installed: see README"
    engine = getattr(importlib.import_module(module), cls)
    assert hasattr(engine, "vocabulary"), f"the {name} engine does not describe its vocabulary"


@pytest.fixture(scope="module", params=list(ENGINES))
def engine_name(request) -> str:
    _constrainable(request.param)
    return request.param


@pytest.fixture(scope="module")
def services(engine_name, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=str(home), engine=engine_name, num_parallel=3)
    services = bootstrap(settings)
    services.source = None
    yield services
    services.close()


@pytest.fixture(scope="module")
def settings_of(services):
    return Settings(home="/tmp/unused", engine="auto")


def chat(content: str, max_tokens: int = 160, **fields) -> GenerationRequest:
    return GenerationRequest(
        model=ModelRef.parse("smollm2"),
        messages=system_and_user(content),
        sampling=SamplingPolicy.greedy(max_tokens=max_tokens),
        **fields,
    )


def valid_call(call: ToolCall, names=TOOLS) -> None:
    assert call.name in names
    jsonschema.validate(call.arguments, TOOLS[call.name].parameters)


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_five_schemas_validate(services, index) -> None:
    done = services.complete(chat(PROMPTS[index], format=OutputFormat.from_schema(SCHEMAS[index])))
    jsonschema.validate(json.loads(done.text), SCHEMAS[index])


def test_json_mode_gives_an_object(services) -> None:
    done = services.complete(
        chat(
            'Answer in JSON, like {"animal": "dog", "legs": 4}: what about a cat?',
            max_tokens=60,
            format=OutputFormat.json_mode(),
        )
    )
    assert isinstance(json.loads(done.text), dict)


def test_required_and_named_calls_validate(services) -> None:
    required = services.complete(
        chat("What is the weather in Paris?", tools=(WEATHER, TIME), tool_choice=ToolChoice(mode="required"))
    )
    assert required.tool_calls and required.text.strip() == ""
    for call in required.tool_calls:
        valid_call(call)
    named = services.complete(
        chat("What is the weather in Paris?", tools=(WEATHER, TIME), tool_choice=ToolChoice.function("get_time"))
    )
    assert [c.name for c in named.tool_calls][:1] == ["get_time"]
    for call in named.tool_calls:
        valid_call(call, {"get_time"})


def test_none_gives_text_only(services) -> None:
    done = services.complete(chat("Say hello.", max_tokens=30, tools=(WEATHER,), tool_choice=ToolChoice(mode="none")))
    assert done.tool_calls == () and done.text.strip()


def test_auto_calls_validate_when_made(services) -> None:
    done = services.complete(chat("What is the weather in Paris? Use a tool.", tools=(WEATHER, TIME)))
    for call in done.tool_calls:
        valid_call(call)
    assert done.tool_calls or done.text.strip()


def test_a_streamed_call_arrives_whole_in_one_event(services) -> None:
    stream = services.generate(chat("Weather in Rome?", tools=(WEATHER,), tool_choice=ToolChoice(mode="required")))
    events = list(stream)
    with_calls = [e for e in events if e.tool_calls]
    assert with_calls and all(not e.text.strip() for e in events)
    valid_call(with_calls[0].tool_calls[0])


def test_a_tool_result_round_trip(services) -> None:
    first = services.complete(
        chat("What is the weather in Oslo?", tools=(WEATHER,), tool_choice=ToolChoice.function("get_weather"))
    )
    call = first.tool_calls[0]
    history = Conversation(
        messages=(
            ChatMessage.user("What is the weather in Oslo?"),
            ChatMessage(role="assistant", tool_calls=(call,)),
            ChatMessage(role="tool", content="Sunny, 21 degrees", tool_name="get_weather", tool_call_id=call.id),
        )
    )
    request = GenerationRequest(
        model=ModelRef.parse("smollm2"),
        messages=history,
        tools=(WEATHER,),
        tool_choice=ToolChoice(mode="none"),
        sampling=SamplingPolicy.greedy(max_tokens=40),
    )
    answer = services.complete(request)
    assert answer.text.strip() and answer.tool_calls == ()


def test_constrained_and_free_requests_in_one_batch_each_get_theirs(services) -> None:
    free = chat("Name three fruits.", max_tokens=24)
    alone = services.complete(free).text
    results: dict[str, object] = {}

    def run(key, request) -> None:
        results[key] = services.complete(request)

    jobs = {
        "free": free,
        "schema": chat(PROMPTS[0], format=OutputFormat.from_schema(SCHEMAS[0])),
        "call": chat("Weather in Lima?", tools=(WEATHER,), tool_choice=ToolChoice(mode="required")),
    }
    threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert results["free"].text == alone
    jsonschema.validate(json.loads(results["schema"].text), SCHEMAS[0])
    valid_call(results["call"].tool_calls[0])


# -- through the official clients ----------------------------------------------------------------


@pytest.fixture(scope="module")
def transport(services, tmp_path_factory):
    from modelport.entrypoints.http.app import create_app

    return httpx.WSGITransport(app=create_app(services, Settings(home=str(tmp_path_factory.mktemp("h")))))


def test_openai_client_schema_and_named_tool(transport) -> None:
    import openai

    client = openai.OpenAI(
        base_url="http://127.0.0.1:11434/v1",
        api_key="x",
        max_retries=0,
        http_client=httpx.Client(transport=transport, timeout=300),
    )
    messages = [{"role": "user", "content": PROMPTS[3]}]
    answer = client.chat.completions.create(
        model="smollm2",
        messages=messages,
        temperature=0,
        max_tokens=160,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMAS[3], "strict": True}},
    )
    jsonschema.validate(json.loads(answer.choices[0].message.content), SCHEMAS[3])
    chunks = list(
        client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Time in Tokyo?"}],
            temperature=0,
            stream=True,
            tools=[TIME.to_dict()],
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        )
    )
    calls = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_time"
    jsonschema.validate(json.loads(calls[0].function.arguments), TIME.parameters)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_ollama_client_format_and_tools(transport) -> None:
    import ollama

    client = ollama.Client(host="http://127.0.0.1:11434", transport=transport, timeout=300)
    reply = client.chat(
        model="smollm2",
        messages=[{"role": "user", "content": PROMPTS[1]}],
        format=SCHEMAS[1],
        options={"temperature": 0, "num_predict": 60},
    )
    jsonschema.validate(json.loads(reply.message.content), SCHEMAS[1])
    done = client.generate(
        model="smollm2", prompt=PROMPTS[2], format=SCHEMAS[2], options={"temperature": 0, "num_predict": 60}
    )
    jsonschema.validate(json.loads(done.response), SCHEMAS[2])
    called = client.chat(
        model="smollm2",
        messages=[{"role": "user", "content": "Weather in Paris? Use the tool."}],
        tools=[WEATHER.to_dict()],
        options={"temperature": 0, "num_predict": 80},
    )
    for call in called.message.tool_calls or []:
        jsonschema.validate(dict(call.function.arguments), WEATHER.parameters)
