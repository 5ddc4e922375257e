"""Structured output and tool calls through the use cases, on the fake engine with
the real llguidance compiler (the fake's vocabulary: END and the ASCII characters)."""

from __future__ import annotations

import json
import threading

import jsonschema
import pytest

from modelport.domain import (
    ChatMessage,
    Conversation,
    FinishReason,
    GenerationRequest,
    InvalidRequest,
    ModelRef,
    OutputFormat,
    SamplingPolicy,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    split_tool_calls,
    system_and_user,
)
from modelport.domain.messages import without_native_tools

import llguidance  # noqa: F401  (CI installs every extra: a missing library fails)

WEATHER = Tool(
    name="get_weather",
    description="The weather in a city",
    parameters_text={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
)
TIME = Tool(
    name="get_time",
    parameters_text={"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
)

SCHEMAS = [
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    {"type": "array", "items": {"type": "integer", "minimum": 3, "maximum": 7}, "minItems": 2, "maxItems": 4},
    {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}}, "required": ["colour"]},
    {
        "type": "object",
        "properties": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "number", "minimum": -1, "maximum": 1}, "y": {"type": "number"}},
                "required": ["x", "y"],
                "additionalProperties": False,
            }
        },
        "required": ["point"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["ok", "tags"],
    },
    {"type": "integer", "minimum": 10, "maximum": 20},
]


def ask(content: str = "hi", **fields) -> GenerationRequest:
    return GenerationRequest(
        model=ModelRef.parse("fake"),
        messages=system_and_user(content),
        sampling=SamplingPolicy.greedy(max_tokens=200),
        **fields,
    )


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s["type"] + str(len(json.dumps(s))))
def test_a_schema_is_enforced_on_a_reply_that_ignores_it(services, schema) -> None:
    done = services.complete(ask(format=OutputFormat.from_schema(schema)))
    jsonschema.validate(json.loads(done.text), schema)
    assert done.finish_reason is FinishReason.STOP


def test_json_mode_gives_an_object(services) -> None:
    done = services.complete(ask(format=OutputFormat.json_mode()))
    assert isinstance(json.loads(done.text), dict)


def test_a_reply_that_already_fits_passes_unchanged(services, engine_box) -> None:
    engine_box.reply = '{"colour": "green"}'
    done = services.complete(ask(format=OutputFormat.from_schema(SCHEMAS[2])))
    assert json.loads(done.text) == {"colour": "green"}


def test_an_uncompilable_schema_is_refused_before_any_load(services, engine_box) -> None:
    with pytest.raises(InvalidRequest, match="dependentSchemas"):
        services.generate(ask(format=OutputFormat.from_schema({"type": "object", "dependentSchemas": {}})))
    assert engine_box.built == []


def test_not_strict_ignores_what_it_cannot_enforce(services) -> None:
    fmt = OutputFormat.from_schema({"type": "object", "dependentSchemas": {}}, strict=False)
    assert isinstance(json.loads(services.complete(ask(format=fmt)).text), dict)


def test_required_forces_a_valid_call(services) -> None:
    done = services.complete(ask(tools=(WEATHER, TIME), tool_choice=ToolChoice(mode="required")))
    assert done.text.strip() == "" and done.tool_calls
    for call in done.tool_calls:
        tool = {t.name: t for t in (WEATHER, TIME)}[call.name]
        jsonschema.validate(call.arguments, tool.parameters)
        assert call.id.startswith("call_") and len(call.id) == 13


def test_a_named_choice_calls_exactly_that_function(services) -> None:
    done = services.complete(ask(tools=(WEATHER, TIME), tool_choice=ToolChoice.function("get_time")))
    assert [c.name for c in done.tool_calls] == ["get_time"]
    jsonschema.validate(done.tool_calls[0].arguments, TIME.parameters)


def test_none_gives_text_and_hides_the_tools(services, engine_box) -> None:
    done = services.complete(ask(tools=(WEATHER,), tool_choice=ToolChoice(mode="none")))
    assert done.text == "The capital of France is Paris." and done.tool_calls == ()
    assert "get_weather" not in engine_box.last.prompts[-1]


def test_auto_text_stays_text(services, engine_box) -> None:
    done = services.complete(ask(tools=(WEATHER,)))
    assert done.text == "The capital of France is Paris." and done.tool_calls == ()
    assert "<tools>" in engine_box.last.prompts[-1] and "get_weather" in engine_box.last.prompts[-1]


def test_auto_a_call_the_model_starts_is_parsed(services, engine_box) -> None:
    engine_box.reply = (
        'Let me look.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}}\n</tool_call>'
    )
    done = services.complete(ask(tools=(WEATHER,)))
    assert done.text == "Let me look."
    assert [(c.name, c.arguments) for c in done.tool_calls] == [("get_weather", {"city": "Oslo", "unit": "c"})]


def test_auto_a_started_call_is_forced_into_valid_arguments(services, engine_box) -> None:
    engine_box.reply = '<tool_call>\n{"name": "get_weather", "arguments": {"town": 3}}'
    done = services.complete(ask(tools=(WEATHER,)))
    assert len(done.tool_calls) == 1
    jsonschema.validate(done.tool_calls[0].arguments, WEATHER.parameters)


def test_a_tool_result_round_trip_is_rendered_into_the_next_prompt(services, engine_box) -> None:
    call = ToolCall(name="get_weather", arguments_text={"city": "Oslo", "unit": "c"})
    messages = Conversation(
        messages=(
            ChatMessage.user("Weather in Oslo?"),
            ChatMessage(role="assistant", tool_calls=(call,)),
            ChatMessage(role="tool", content="-3 and snow", tool_name="get_weather", tool_call_id=call.id),
        )
    )
    request = GenerationRequest(
        model=ModelRef.parse("fake"), messages=messages, tools=(WEATHER,), sampling=SamplingPolicy.greedy()
    )
    done = services.complete(request)
    prompt = engine_box.last.prompts[-1]
    assert '<tool_call>\n{"name":"get_weather","arguments":{"city":"Oslo","unit":"c"}}\n</tool_call>' in prompt
    assert '<tool_response>\n{"name":"get_weather","content":"-3 and snow"}\n</tool_response>' in prompt
    assert done.text == "The capital of France is Paris."


def test_format_with_auto_tools_gives_the_answer_or_a_call(services) -> None:
    done = services.complete(ask(tools=(WEATHER,), format=OutputFormat.from_schema(SCHEMAS[2])))
    if done.tool_calls:
        jsonschema.validate(done.tool_calls[0].arguments, WEATHER.parameters)
    else:
        jsonschema.validate(json.loads(done.text), SCHEMAS[2])


def test_constrained_and_free_requests_share_a_batch(services, engine_box) -> None:
    engine_box.token_delay = 0.002
    services.load("fake")
    results: dict[str, object] = {}

    def run(key: str, request: GenerationRequest) -> None:
        results[key] = services.complete(request)

    requests = {
        "free": ask(),
        "schema": ask(format=OutputFormat.from_schema(SCHEMAS[0])),
        "call": ask(tools=(WEATHER,), tool_choice=ToolChoice(mode="required")),
        "free2": ask("again"),
    }
    threads = [threading.Thread(target=run, args=item) for item in requests.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results["free"].text == results["free2"].text == "The capital of France is Paris."
    jsonschema.validate(json.loads(results["schema"].text), SCHEMAS[0])
    jsonschema.validate(results["call"].tool_calls[0].arguments, WEATHER.parameters)
    steps = engine_box.last.steps
    assert any(len(s.decode) >= 3 and s.pending and len(s.pending) < len(s.decode) for s in steps), (
        "constrained and free slots decoded in the same steps"
    )


# -- the values -----------------------------------------------------------------------------


def test_a_named_choice_must_name_a_tool() -> None:
    with pytest.raises(InvalidRequest, match="not one of the tools"):
        ask(tools=(WEATHER,), tool_choice=ToolChoice.function("nope"))
    with pytest.raises(InvalidRequest, match="needs tools"):
        ask(tool_choice=ToolChoice(mode=ToolChoiceMode.REQUIRED))
    with pytest.raises(InvalidRequest, match="tool_choice must be one of"):
        ToolChoice(mode="sometimes")


def test_tool_calls_round_trip_through_the_message_dict() -> None:
    call = ToolCall(name="f", arguments_text='{"a": 1}')
    message = ChatMessage(role="assistant", tool_calls=(call,))
    assert ChatMessage.from_dict(message.to_dict()) == message
    assert ToolCall.from_dict({"function": {"name": "f", "arguments": '{"a": 1}'}}).arguments == {"a": 1}
    with pytest.raises(InvalidRequest, match="invalid tool call arguments"):
        ToolCall.from_dict({"function": {"name": "f", "arguments": "{not json"}})


def test_the_splitter_holds_back_a_partial_marker_and_keeps_bad_blocks_as_text() -> None:
    text, calls = split_tool_calls('a <tool_call>{"name": "zzz", "arguments": {}}</tool_call> b <tool_c', [WEATHER])
    assert calls == () and text == 'a <tool_call>{"name": "zzz", "arguments": {}}</tool_call> b <tool_c'


def test_the_fallback_prompt_describes_the_tools_once() -> None:
    conversation = without_native_tools(system_and_user("q", "be brief"), [WEATHER])
    system = conversation.messages[0]
    assert system.content.startswith("be brief\n\n") and system.content.count("get_weather") == 1


QWEN_LIKE = (
    "{%- if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>"
    "\nReturn <tool_call>{...}</tool_call><|im_end|>{% endif %}{% for m in messages %}...{% endfor %}"
)


class RendersTools:
    renders_tools = True


def test_tools_go_through_a_template_that_teaches_tool_call_blocks() -> None:
    from modelport.adapters.fake import fake_model
    from modelport.ports.usecases import prompted

    request = ask(tools=(WEATHER,))
    native = prompted(request, fake_model(chat_template=QWEN_LIKE), RendersTools())
    assert native is request  # the engine renders the tools itself
    fallback = prompted(request, fake_model(chat_template="{% for m in messages %}{% endfor %}"), RendersTools())
    assert fallback.tools == () and "<tools>" in fallback.messages.messages[0].content
    not_rendering = prompted(request, fake_model(chat_template=QWEN_LIKE), object())
    assert not_rendering.tools == () and "<tools>" in not_rendering.messages.messages[0].content
    hidden = prompted(
        ask(tools=(WEATHER,), tool_choice=ToolChoice(mode="none")), fake_model(chat_template=QWEN_LIKE), RendersTools()
    )
    assert hidden.tools == ()
