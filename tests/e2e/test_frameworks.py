"""LangChain (langchain-ollama's ChatOllama and OllamaEmbeddings, langchain-openai's
ChatOpenAI) and litellm (``ollama_chat/`` and ``openai/`` models, and embeddings)
against running servers, unchanged: the fake app (fake_app.py) where the check is the wire
protocol (JSON mode, tool calls and their results, the async clients), ``modelport
serve`` on the bundled SmolLM2 and all-MiniLM where it is real output.

Nothing here may reach past 127.0.0.1: litellm fetches its model cost map from GitHub
when imported unless ``LITELLM_LOCAL_MODEL_COST_MAP`` is set, and counts tokens with
tiktoken (from the copy of cl100k_base it ships). The ``offline`` fixture refuses
every other address and fails the module if anything asked for one.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Iterator

import pydantic
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama, OllamaEmbeddings
from langchain_openai import ChatOpenAI
from processes import free_port, serving

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
QUESTION = "What is the capital of France? Answer in one sentence."
PARIS = "The capital of France is Paris."
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
TIMEOUT_S = 300  # a shared 2-core machine under load is slow; nothing here waits on it
# What the fake app's ``weather`` model answers once it has the result: the result as
# the server put it into the prompt (so the tool's name must have reached the model).
WEATHER_RESULT = 'Result: {"name":"get_weather","content":"Sunny in Oslo"}'


class Capital(pydantic.BaseModel):
    city: str
    country: str


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"Sunny in {city}"


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


# -- the servers, offline --------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[list[str]]:
    """Name lookups and connections go to loopback only, for as long as this module
    runs; anything else is refused and recorded, and fails the module at the end
    (a library may swallow the error and fall back, as litellm's cost map does)."""
    attempts: list[str] = []
    lookup, connect = socket.getaddrinfo, socket.socket.connect

    def local_lookup(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in LOOPBACK:
            attempts.append(f"getaddrinfo({name!r})")
            raise OSError(f"the framework tests run offline: {name!r} refused")
        return lookup(host, *args, **kwargs)

    def local_connect(self, address):
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            attempts.append(f"connect({address!r})")
            raise OSError(f"the framework tests run offline: {address!r} refused")
        return connect(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", local_lookup)
        patch.setattr(socket.socket, "connect", local_connect)
        yield attempts
    if attempts:
        pytest.fail(f"something tried the network: {attempts}")


@pytest.fixture(scope="module")
def litellm(offline) -> Any:
    """litellm, imported offline with its bundled cost map (it also points
    TIKTOKEN_CACHE_DIR at its own encodings: put back after the module)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        patch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
        import litellm

        yield litellm


@pytest.fixture(scope="module")
def fake_url(tmp_path_factory, offline) -> Iterator[str]:
    port = free_port()
    paths = [str(HERE), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "MODELPORT_HOME": str(tmp_path_factory.mktemp("home")),
    }
    log = tmp_path_factory.mktemp("server") / "server.log"
    with serving([sys.executable, str(HERE / "fake_app.py"), str(port)], port, env, log) as address:
        yield address


@pytest.fixture(scope="module")
def bundled_url(tmp_path_factory, offline) -> Iterator[str]:
    port = free_port()
    executable = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    env = {
        **os.environ,
        "MODELPORT_HOME": str(tmp_path_factory.mktemp("home")),
        "MODELPORT_PORT": str(port),
        "MODELPORT_THREADS": "4",
        # one llama.cpp thread: on a machine busy with other work a 2-thread decode can
        # collapse (docs/generation-core.md); one thread keeps this module near 30 s
        "MODELPORT_NUM_THREAD": "1",
    }
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving([executable, "serve"], port, env, log) as address:
        yield address


def chat_ollama(url: str, model: str = "smollm2", **fields: Any) -> ChatOllama:
    return ChatOllama(model=model, base_url=url, temperature=0, client_kwargs={"timeout": TIMEOUT_S}, **fields)


def chat_openai(url: str, model: str = "smollm2", **fields: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model=model, base_url=f"{url}/v1", api_key="unused", temperature=0, timeout=TIMEOUT_S, max_retries=0, **fields
    )


def routes(url: str) -> dict[str, dict[str, Any]]:
    """litellm's ways to the server: Ollama's /api/chat and the OpenAI routes."""
    return {
        "ollama_chat": {"api_base": url},
        "openai": {"api_base": f"{url}/v1", "api_key": "unused", "max_retries": 0},
    }


def joined(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


# -- LangChain on the bundled SmolLM2 ---------------------------------------------------------


def test_chat_ollama_invokes_and_streams_the_answer(bundled_url) -> None:
    llm = chat_ollama(bundled_url)
    answer = llm.invoke(QUESTION)
    assert answer.content == PARIS
    assert answer.response_metadata["done_reason"] == "stop"
    assert answer.usage_metadata["output_tokens"] == 7 and answer.usage_metadata["input_tokens"] > 10
    chunks = list(llm.stream(QUESTION))
    assert len(chunks) > 2 and "".join(c.content for c in chunks) == PARIS
    assert joined(chunks).usage_metadata["output_tokens"] == 7


def test_chat_ollama_structured_output_from_a_pydantic_model(bundled_url) -> None:
    """method="json_schema" sends the model's schema as Ollama's ``format``."""
    structured = chat_ollama(bundled_url).with_structured_output(Capital, method="json_schema")
    capital = structured.invoke("Which city is the capital of France? Answer in JSON.")
    assert isinstance(capital, Capital) and capital.city == "Paris"


def test_ollama_embeddings_of_all_minilm(bundled_url) -> None:
    embedder = OllamaEmbeddings(model="all-minilm", base_url=bundled_url, client_kwargs={"timeout": TIMEOUT_S})
    food, bread, film = embedder.embed_documents(
        ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."]
    )
    assert len(food) == len(bread) == len(film) == 384
    assert math.dist(food, bread) < math.dist(food, film)  # unit vectors: nearer is more alike
    assert sum(x * x for x in food) == pytest.approx(1.0, abs=1e-4)
    assert embedder.embed_query("A man is eating food.") == pytest.approx(food, abs=1e-5)


def test_chat_openai_invokes_and_streams_the_answer(bundled_url) -> None:
    llm = chat_openai(bundled_url, stream_usage=True)
    answer = llm.invoke(QUESTION)
    assert answer.content == PARIS and answer.response_metadata["finish_reason"] == "stop"
    assert answer.usage_metadata["output_tokens"] == 7
    chunks = list(llm.stream(QUESTION))
    assert "".join(c.content for c in chunks) == PARIS
    assert joined(chunks).usage_metadata["output_tokens"] == 7


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_chat_openai_structured_output(bundled_url, method) -> None:
    """json_schema sends the model's schema as ``response_format``; function_calling
    makes a tool of it and forces its call (``tool_choice`` naming it)."""
    structured = chat_openai(bundled_url).with_structured_output(Capital, method=method)
    capital = structured.invoke("Which city is the capital of France? Answer in JSON.")
    assert isinstance(capital, Capital) and capital.city == "Paris"


# -- litellm on the bundled models ----------------------------------------------------------


@pytest.mark.parametrize("provider", ["ollama_chat", "openai"])
def test_litellm_completion_whole_and_streamed(litellm, bundled_url, provider) -> None:
    route = routes(bundled_url)[provider]
    messages = [{"role": "user", "content": QUESTION}]
    answer = litellm.completion(model=f"{provider}/smollm2", messages=messages, temperature=0, **route)
    assert answer.choices[0].message.content == PARIS and answer.choices[0].finish_reason == "stop"
    assert answer.usage.completion_tokens == 7
    chunks = list(
        litellm.completion(model=f"{provider}/smollm2", messages=messages, temperature=0, stream=True, **route)
    )
    assert len(chunks) > 2 and "".join(c.choices[0].delta.content or "" for c in chunks) == PARIS


def test_litellm_embedding_over_both_apis_agrees_with_langchain(litellm, bundled_url) -> None:
    texts = ["A man is eating food.", "The new movie is awesome."]
    expected = OllamaEmbeddings(model="all-minilm", base_url=bundled_url).embed_documents(texts)
    for model, route in [
        ("ollama/all-minilm", {"api_base": bundled_url}),
        ("openai/all-minilm", routes(bundled_url)["openai"]),
    ]:
        answer = litellm.embedding(model=model, input=texts, **route)
        vectors = [item["embedding"] for item in answer.data]
        assert len(vectors) == 2
        for got, want in zip(vectors, expected):
            assert got == pytest.approx(want, abs=1e-5), model


# -- the wire protocol, on the fake app -------------------------------------------------------


def test_chat_ollama_json_format_is_enforced(fake_url) -> None:
    """The fake model would answer "The capital of France is Paris."; under
    ``format="json"`` the grammar turns it into a JSON object."""
    answer = chat_ollama(fake_url, "fake", format="json").invoke(QUESTION)
    assert isinstance(json.loads(answer.content), dict)


@pytest.mark.parametrize("make", [chat_ollama, chat_openai], ids=["ChatOllama", "ChatOpenAI"])
def test_langchain_tool_call_and_its_result(fake_url, make) -> None:
    """bind_tools, the call, the tool run, and its result sent back: the model is
    told which tool the result is from (ChatOllama sends neither its name nor the
    call's id; ChatOpenAI sends the id)."""
    llm = make(fake_url, "weather").bind_tools([get_weather])
    messages = [HumanMessage("What is the weather in Oslo?")]
    asked = llm.invoke(messages)
    assert [(c["name"], c["args"]) for c in asked.tool_calls] == [("get_weather", {"city": "Oslo"})]
    assert asked.content == ""
    messages += [asked, *(get_weather.invoke(call) for call in asked.tool_calls)]
    assert llm.invoke(messages).content == WEATHER_RESULT
    streamed = joined(list(llm.stream("What is the weather in Oslo?")))
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [("get_weather", {"city": "Oslo"})]


@pytest.mark.parametrize("provider", ["ollama_chat", "openai"])
def test_litellm_tool_call_and_its_result(litellm, fake_url, provider) -> None:
    route = routes(fake_url)[provider]
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]
    asked = litellm.completion(model=f"{provider}/weather", messages=messages, tools=[WEATHER], temperature=0, **route)
    (call,) = asked.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Oslo"})
    assert asked.choices[0].finish_reason == "tool_calls"
    messages += [
        asked.choices[0].message.model_dump(),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny in Oslo"},
    ]
    answer = litellm.completion(model=f"{provider}/weather", messages=messages, tools=[WEATHER], temperature=0, **route)
    assert answer.choices[0].message.content == WEATHER_RESULT
    chunks = list(
        litellm.completion(
            model=f"{provider}/weather", messages=messages[:1], tools=[WEATHER], temperature=0, stream=True, **route
        )
    )
    calls = [c for chunk in chunks for c in (chunk.choices[0].delta.tool_calls or [])]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("get_weather", {"city": "Oslo"})]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_the_async_clients(litellm, fake_url) -> None:
    """ChatOllama and ChatOpenAI over httpx's async client, litellm over its own."""

    async def everything() -> list[str]:
        ollama_chunks = [c.content async for c in chat_ollama(fake_url, "fake").astream(QUESTION)]
        openai_answer = await chat_openai(fake_url, "fake").ainvoke(QUESTION)
        stream = await litellm.acompletion(
            model="ollama_chat/fake",
            messages=[{"role": "user", "content": QUESTION}],
            temperature=0,
            stream=True,
            api_base=fake_url,
        )
        litellm_chunks = [c.choices[0].delta.content or "" async for c in stream]
        return ["".join(ollama_chunks), openai_answer.content, "".join(litellm_chunks)]

    assert asyncio.run(everything()) == [PARIS, PARIS, PARIS]
