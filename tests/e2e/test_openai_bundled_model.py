"""``modelport serve`` on the bundled SmolLM2, driven by the official ``openai`` client:
chat completions and completions, whole and streamed."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

import openai
import pytest
from processes import free_port, serving

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
PARIS = "The capital of France is Paris."


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[openai.OpenAI]:
    port = free_port()
    executable = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    env = {**os.environ, "MODELPORT_HOME": str(tmp_path_factory.mktemp("home")),
           "MODELPORT_PORT": str(port), "MODELPORT_THREADS": "4"}
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with serving([executable, "serve"], port, env, log) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=120, max_retries=0)


def test_chat_completion_answers_paris(client) -> None:
    answer = client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0)
    assert answer.choices[0].message.content == PARIS
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens > 10 and answer.usage.completion_tokens == 7


def test_streamed_chat_equals_the_whole_answer(client) -> None:
    chunks = list(client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == PARIS
    assert chunks[-1].usage.completion_tokens == 7


def test_completion_gives_the_golden_continuation(client) -> None:
    answer = client.completions.create(model="smollm2:135m", temperature=0, max_tokens=10,
                                       prompt="Once upon a time, there was a little girl named")
    assert answer.choices[0].text == " Emma who loved to play in the sun. She"
    assert (answer.choices[0].finish_reason, answer.usage.prompt_tokens) == ("length", 11)
    parts = list(client.completions.create(model="smollm2", temperature=0, max_tokens=10, stream=True,
                                           prompt="Once upon a time, there was a little girl named"))
    assert "".join(p.choices[0].text for p in parts) == answer.choices[0].text


def test_the_model_is_listed(client) -> None:
    assert {"smollm2:135m", "all-minilm:l6-v2"} <= {m.id for m in client.models.list()}


def test_responses_answer_paris_whole_and_streamed(client) -> None:
    answer = client.responses.create(model="smollm2", input=QUESTION[0]["content"], temperature=0)
    assert answer.output_text == PARIS and answer.status == "completed"
    with client.responses.create(model="smollm2", input=QUESTION, temperature=0, stream=True) as stream:
        events = list(stream)
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == PARIS
    assert events[-1].type == "response.completed" and events[-1].response.output_text == PARIS


def test_n_seeded_choices_are_each_reproducible(client) -> None:
    # llama.cpp's logits move slightly with how a step is batched, which can flip a near
    # tie at temperature 1 (seen once in three); at 0.7 the draws held in every run.
    sampled = dict(model="smollm2", messages=QUESTION, temperature=0.7, max_completion_tokens=12)
    three = client.chat.completions.create(n=3, seed=11, **sampled)
    assert len(three.choices) == 3
    for index, choice in enumerate(three.choices):
        alone = client.chat.completions.create(seed=11 + index, **sampled)
        assert alone.choices[0].message.content == choice.message.content


def test_greedy_logprobs_with_top_5(client) -> None:
    answer = client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0,
                                            logprobs=True, top_logprobs=5)
    content = answer.choices[0].logprobs.content
    assert "".join(t.token for t in content) == PARIS
    for token in content:
        alternatives = [t.logprob for t in token.top_logprobs]
        assert len(alternatives) == 5 and alternatives == sorted(alternatives, reverse=True)
        assert token.top_logprobs[0].token == token.token  # greedy: the most likely token
        assert token.logprob == pytest.approx(alternatives[0], abs=1e-4) and token.logprob <= 0
    legacy = client.completions.create(model="smollm2", temperature=0, max_tokens=3, logprobs=5,
                                       prompt="Once upon a time, there was a little girl named")
    assert legacy.choices[0].logprobs.tokens[0] == " Emma"
    assert len(legacy.choices[0].logprobs.top_logprobs[0]) == 5
