"""The JAX engine's slots under the generation core, on the tiny random Llama of
tests/support/tiny_llama.py: requests decoded together give what each gives alone,
seeds hold whatever runs beside them, cancelling frees a slot for the next request,
a chat's next turn reuses its cached prefix, masks and log-probabilities apply to
their own row, and nothing compiles after load."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from support import tiny_llama

from modelport.domain import ChatMessage, Completion, GenerationRequest, ModelRef, Role, SamplingPolicy
from modelport.ports import EngineOptions, Step

PROMPTS = [
    "Once upon a time, there was a little girl named",
    "hello",
    "The quick brown fox jumps over the lazy dog and then runs far away into the forest",
    "a b c d e f",
    "What is the capital of France?",
    "one two three four five six seven eight nine ten eleven twelve",
    "x",
    "Rain falls on the hills; the rivers rise and the valleys fill with water again.",
]
LIMITS = [12, 5, 20, 9, 16, 7, 14, 11]


def recording_engine():
    """The real JAX engine, recording the steps and slot starts the core asks for."""
    from modelport.adapters.jax import JaxEngine

    class Recording(JaxEngine):
        def __init__(self) -> None:
            super().__init__()
            self.steps: list[Step] = []
            self.begun: list[tuple[int, tuple[int, ...]]] = []

        def step(self, step):
            self.steps.append(step)
            return super().step(step)

        def begin(self, slot, prompt, sampling):
            self.begun.append((slot, tuple(prompt)))
            return super().begin(slot, prompt, sampling)

    return Recording()


@pytest.fixture(scope="module")
def tiny_model():
    from modelport.adapters.filesystem import FilesystemModelStore

    folder = tiny_llama.build(Path(tempfile.mkdtemp(prefix="modelport-tiny-llama-")) / "tiny-llama")
    return FilesystemModelStore("/nonexistent-modelport-store").resolve(ModelRef.parse(str(folder)))


def load(model, engine_home, slots: int):
    engine = recording_engine()
    engine.load(
        model, EngineOptions(num_ctx=256, device="cpu", home=engine_home, slots=slots, quantize="none")
    )  # float, as the reference (auto is int8 on a CPU)
    return engine


@pytest.fixture(scope="module")
def engine(tiny_model, engine_home):
    engine = load(tiny_model, engine_home, 8)
    yield engine
    engine.unload()


def ask(prompt: str, **sampling) -> GenerationRequest:
    policy = SamplingPolicy(**sampling) if "temperature" in sampling else SamplingPolicy.greedy(**sampling)
    return GenerationRequest(model=ModelRef.parse("tiny"), prompt=prompt, sampling=policy)


def together(engine, requests: Sequence[GenerationRequest], **options) -> list[Completion]:
    """Submit every request before reading any, then read them all."""
    streams = [engine.scheduler.submit(r, **options) for r in requests]
    return [Completion.fold(s) for s in streams]


def alone(engine, request: GenerationRequest) -> Completion:
    return Completion.fold(engine.stream(request))


def test_greedy_requests_decoded_together_equal_each_alone(engine) -> None:
    requests = [ask(p, max_tokens=n) for p, n in zip(PROMPTS, LIMITS)]
    solo = [alone(engine, r) for r in requests]
    engine.steps.clear()
    batched = together(engine, requests)
    assert [c.token_ids for c in batched] == [c.token_ids for c in solo]
    assert max(len(s.decode) for s in engine.steps) >= 4, "the requests were decoded together"
    weights = tiny_llama.random_weights()
    for prompt, completion in list(zip(PROMPTS, batched))[:2]:
        reference = tiny_llama.greedy(weights, engine.tokenize(prompt), len(completion.token_ids))
        assert list(completion.token_ids) == reference


def test_a_seeded_request_draws_the_same_whatever_runs_beside_it(engine) -> None:
    seeded = ask("Once upon a time", temperature=1.0, top_k=40, top_p=0.95, seed=11, max_tokens=16)
    expected = alone(engine, seeded).token_ids
    others = [
        ask("hello", max_tokens=20),
        ask("a b c", temperature=0.7, top_k=0, top_p=1.0, seed=3, max_tokens=18),  # the whole vocabulary
        ask("x y z", temperature=1.2, top_k=0, top_p=0.8, max_tokens=12),  # top-p without top-k
        ask("seven", temperature=0.9, top_k=200, top_p=1.0, min_p=0.05, repeat_penalty=1.3, max_tokens=20),
    ]
    for company in (others[:1], others, others[::-1]):
        results = together(engine, [*company[:2], seeded, *company[2:]])
        assert results[min(2, len(company))].token_ids == expected
    reseeded = ask("Once upon a time", temperature=1.0, top_k=40, top_p=0.95, seed=12, max_tokens=16)
    assert alone(engine, reseeded).token_ids != expected


def test_cancelling_a_stream_frees_its_slot_and_leaves_the_others(tiny_model, engine_home) -> None:
    engine = load(tiny_model, engine_home, 2)
    try:
        keep = ask(PROMPTS[2], max_tokens=200)
        expected = alone(engine, keep).token_ids
        assert len(expected) > 50
        cancelled = engine.scheduler.submit(ask(PROMPTS[0], max_tokens=200))
        running = engine.scheduler.submit(keep)
        next(cancelled), next(cancelled)
        cancelled_slot = engine.begun[-2][0]
        cancelled.close()
        newcomer = ask(PROMPTS[4], max_tokens=6)
        late = alone(engine, newcomer)
        assert engine.begun[-1] == (cancelled_slot, tuple(engine.tokenize(PROMPTS[4])))
        assert Completion.fold(running).token_ids == expected
        assert late.token_ids == alone(engine, newcomer).token_ids
        assert engine.scheduler.stats().busy == 0
    finally:
        engine.unload()


def chat(*turns: str) -> GenerationRequest:
    roles = [Role.USER if i % 2 == 0 else Role.ASSISTANT for i in range(len(turns))]
    messages = tuple(ChatMessage(role=role, content=text) for role, text in zip(roles, turns))
    return GenerationRequest(
        model=ModelRef.parse("tiny"), messages=messages, sampling=SamplingPolicy.greedy(max_tokens=8)
    )


def test_a_second_chat_turn_reuses_the_cached_prefix(engine, tiny_model, engine_home) -> None:
    first = alone(engine, chat("hello there, how are you today?"))
    assert first.usage.cached_tokens == 0 or first.usage.cached_tokens < first.usage.prompt_tokens
    second_turn = chat("hello there, how are you today?", first.text, "and tomorrow?")
    second = alone(engine, second_turn)
    assert second.usage.cached_tokens >= first.usage.prompt_tokens
    fresh = load(tiny_model, engine_home, 8)
    try:
        cold = alone(fresh, second_turn)
    finally:
        fresh.unload()
    assert cold.usage.cached_tokens == 0
    assert cold.token_ids == second.token_ids


class AllowOnly:
    """A token constraint that allows a fixed set of ids, for ``count`` tokens."""

    def __init__(self, ids: Sequence[int], count: int) -> None:
        self.ids, self.count, self.seen = list(ids), count, []

    @property
    def finished(self) -> bool:
        return len(self.seen) >= self.count

    def allowed(self) -> Sequence[int]:
        return self.ids

    def advance(self, token: int) -> None:
        self.seen.append(token)


def test_a_mask_limits_its_own_row(engine) -> None:
    free = ask(PROMPTS[0], max_tokens=10)
    expected = alone(engine, free).token_ids
    allowed = engine.tokenize("yes no maybe")
    constraint = AllowOnly(allowed, 6)
    constrained = engine.scheduler.submit(ask(PROMPTS[3], max_tokens=20), constraint=constraint)
    sampled = AllowOnly(allowed, 6)
    drawn = engine.scheduler.submit(
        ask(PROMPTS[5], temperature=1.0, top_k=0, top_p=1.0, seed=5, max_tokens=20), constraint=sampled
    )
    beside = engine.scheduler.submit(free)
    tokens = Completion.fold(constrained).token_ids
    assert len(tokens) == 6 and set(tokens) <= set(allowed)
    assert set(Completion.fold(drawn).token_ids) <= set(allowed)
    assert Completion.fold(beside).token_ids == expected


def test_log_probabilities_when_a_row_asks(engine) -> None:
    prompt = engine.tokenize(PROMPTS[4])
    events = [e for e in engine.scheduler.submit(ask(PROMPTS[4], max_tokens=5), logprobs=3) if e.token_id is not None]
    plain = alone(engine, ask(PROMPTS[4], max_tokens=5))
    assert tuple(e.token_id for e in events) == plain.token_ids
    assert all(e.logprob is None for e in engine.scheduler.submit(ask(PROMPTS[4], max_tokens=2)))
    sequence = prompt + list(plain.token_ids)
    logits = engine._rt.decoder.forward(np.asarray([sequence]))[0].astype(np.float64)
    top = logits.max(-1, keepdims=True)
    logsoftmax = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    for n, event in enumerate(events):
        expected = logsoftmax[len(prompt) - 1 + n, event.token_id]
        assert event.logprob == pytest.approx(expected, abs=1e-3)
        assert event.logprob == pytest.approx(logsoftmax[len(prompt) - 1 + n].max(), abs=1e-3)  # greedy


@contextlib.contextmanager
def compilations():
    """The names of JAX's tracing, lowering and compiling events while inside."""
    import jax.monitoring

    seen: list[str] = []

    def listen(event: str, *_args, **_kwargs) -> None:
        if event.startswith("/jax/core/compile") or "compilation_cache" in event:
            seen.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def test_nothing_compiles_after_load(engine) -> None:
    requests = [
        ask(PROMPTS[0], max_tokens=4),
        ask("word " * 150, max_tokens=3),  # a prompt of several chunk widths
        ask(PROMPTS[2], temperature=0.8, top_k=40, top_p=0.9, seed=1, max_tokens=6),
        ask(PROMPTS[3], temperature=1.0, top_k=0, top_p=1.0, max_tokens=6),
        ask(PROMPTS[4], temperature=1.0, top_k=0, top_p=0.5, repeat_penalty=1.2, max_tokens=6),
    ]
    with compilations() as seen:
        together(engine, requests)
        together(engine, requests[2:], logprobs=2)
        constrained = engine.scheduler.submit(ask(PROMPTS[5], max_tokens=4), constraint=AllowOnly([5, 6, 7], 3))
        Completion.fold(constrained)
        engine.scheduler.chunk_tokens = 24  # chunks of another width
        try:
            alone(engine, ask("many words " * 40, max_tokens=2))
        finally:
            engine.scheduler.chunk_tokens = 512
    assert seen == []
    import jax

    with compilations() as check:  # the listener does see a compilation
        jax.jit(lambda x: x * 3 + 1)(np.arange(7))
    assert check
