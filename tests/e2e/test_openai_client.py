"""The OpenAI-compatible routes driven by the official ``openai`` client, against
gunicorn on 127.0.0.1 serving the fake app (see fake_app.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest
from processes import free_port, serving

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
REPLY = "The capital of France is Paris."
USER = [{"role": "user", "content": "Capital of France?"}]
TIMEOUT_S = 30


def start(tmp_path_factory, name: str, **env_extra: str):
    port = free_port()
    paths = [str(HERE), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "MODELPORT_HOME": str(tmp_path_factory.mktemp("home")),
        **env_extra,
    }
    log = tmp_path_factory.mktemp(name) / "server.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "fake_app:get_app()",
    ]
    return serving(command, port, env, log, probe="/health")


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    with start(tmp_path_factory, "plain") as address:
        yield address


@pytest.fixture
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="anything", timeout=TIMEOUT_S, max_retries=0)


def test_chat_completion(client) -> None:
    answer = client.chat.completions.create(model="fake", messages=USER, temperature=0)
    assert answer.choices[0].message.content == REPLY
    assert (answer.choices[0].message.role, answer.choices[0].finish_reason) == ("assistant", "stop")
    assert answer.usage.completion_tokens == len(REPLY) and answer.object == "chat.completion"


def test_chat_completion_stream_with_usage(client) -> None:
    chunks = list(
        client.chat.completions.create(
            model="fake",
            messages=USER,
            temperature=0,
            stream=True,
            max_completion_tokens=9,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY[:9]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 9


def test_stop_strings(client) -> None:
    answer = client.chat.completions.create(model="fake", messages=USER, temperature=0, stop=["France"])
    assert answer.choices[0].message.content == "The capital of "


def test_completion_whole_and_streamed(client) -> None:
    whole = client.completions.create(model="fake", prompt="Capital?", temperature=0, max_tokens=7)
    assert (whole.choices[0].text, whole.choices[0].finish_reason) == ("The cap", "length")
    parts = list(client.completions.create(model="fake", prompt="Capital?", temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in parts) == REPLY


def test_embeddings_in_base64_by_default_and_as_floats(client) -> None:
    packed = client.embeddings.create(model="embedder", input=["a", "b"])  # the client asks for base64
    plain = client.embeddings.create(model="embedder", input=["a", "b"], encoding_format="float")
    assert [len(d.embedding) for d in packed.data] == [16, 16]
    for mine, theirs in zip(packed.data, plain.data):
        assert mine.embedding == pytest.approx(theirs.embedding, abs=1e-6)
    assert packed.usage.prompt_tokens == 2


def test_models_list_and_retrieve(client) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"fake:latest", "embedder:latest", "slow:latest"} <= ids
    assert client.models.retrieve("fake:latest").owned_by == "library"
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("nope")
    assert raised.value.body["code"] == "model_not_found"


def test_errors_are_openai_errors(client) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=USER)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="fake", messages=USER, response_format={"type": "xml"})
    assert "response_format" in raised.value.message
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="fake", input="a")


def test_a_bad_request_is_not_retried(url: str) -> None:
    response = httpx.post(f"{url}/v1/chat/completions", json={"model": "fake", "messages": []}, timeout=TIMEOUT_S)
    assert response.status_code == 400 and response.headers["x-should-retry"] == "false"


def test_a_stream_the_client_abandons_stops(client) -> None:
    stream = client.chat.completions.create(model="slow", messages=USER, temperature=0, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    stream.close()
    answer = client.chat.completions.create(model="slow", messages=USER, temperature=0, max_tokens=3)
    assert answer.choices[0].message.content == "tic"


@pytest.fixture(scope="module")
def keyed_url(tmp_path_factory) -> Iterator[str]:
    with start(tmp_path_factory, "keyed", MODELPORT_API_KEY="s3cret") as address:
        yield address


def test_the_api_key_is_checked(keyed_url: str) -> None:
    wrong = openai.OpenAI(base_url=f"{keyed_url}/v1", api_key="wrong", timeout=TIMEOUT_S, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    right = openai.OpenAI(base_url=f"{keyed_url}/v1", api_key="s3cret", timeout=TIMEOUT_S, max_retries=0)
    answer = right.chat.completions.create(model="fake", messages=USER, temperature=0)
    assert answer.choices[0].message.content == REPLY


def test_responses_whole_streamed_and_continued(client) -> None:
    answer = client.responses.create(model="fake", input="Capital of France?", instructions="Be brief.", temperature=0)
    assert answer.output_text == REPLY and answer.status == "completed"
    assert answer.usage.output_tokens == len(REPLY)
    with client.responses.create(
        model="fake", input=[{"role": "user", "content": "Capital?"}], temperature=0, max_output_tokens=9, stream=True
    ) as stream:
        events = list(stream)
    assert events[0].type == "response.created" and events[-1].type == "response.incomplete"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == REPLY[:9]
    follow = client.responses.create(model="fake", input="And Spain?", previous_response_id=answer.id, temperature=0)
    assert follow.output_text == REPLY and follow.usage.input_tokens > answer.usage.input_tokens
    assert client.responses.retrieve(answer.id).output_text == REPLY
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="fake", input="hi", tools=[{"type": "web_search"}])
    assert "tools[0].type 'web_search'" in raised.value.message


def test_responses_forced_call_streamed_through_the_stream_helper(client) -> None:
    import jsonschema

    tool = {
        "type": "function",
        "name": "get_time",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"zone": {"enum": ["CET", "UTC"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    }
    with client.responses.stream(model="fake", input="Time?", tools=[tool], tool_choice="required") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    (call,) = final.output
    assert call.type == "function_call" and call.name == "get_time" and call.status == "completed"
    jsonschema.validate(call.parsed_arguments, tool["parameters"])
    answer = client.responses.create(model="fake", input="JSON?", text={"format": {"type": "json_object"}})
    assert answer.text.format.type == "json_object" and isinstance(json.loads(answer.output_text), dict)


def test_n_choices_and_logprobs(client) -> None:
    answer = client.chat.completions.create(
        model="fake",
        messages=USER,
        n=3,
        temperature=1.0,
        seed=3,
        logprobs=True,
        top_logprobs=5,
        max_completion_tokens=6,
    )
    assert [c.index for c in answer.choices] == [0, 1, 2]
    again = client.chat.completions.create(
        model="fake", messages=USER, temperature=1.0, seed=4, max_completion_tokens=6
    )
    assert again.choices[0].message.content == answer.choices[1].message.content
    for choice in answer.choices:
        content = choice.logprobs.content
        assert "".join(t.token for t in content) == choice.message.content
        assert all(len(t.top_logprobs) == 5 and t.logprob <= 0 for t in content)
        assert all(t.top_logprobs[0].logprob >= t.top_logprobs[-1].logprob for t in content)
    legacy = client.completions.create(model="fake", prompt="Capital?", temperature=0, max_tokens=3, n=2, logprobs=2)
    assert [c.logprobs.tokens for c in legacy.choices] == [["T", "h", "e"]] * 2
