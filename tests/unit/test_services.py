"""The use cases, wired through the real bootstrap with fake adapters."""

from __future__ import annotations

import threading

import attrs

import pytest

from modelport.adapters.fake import fake_model
from modelport.domain import (
    CapabilityMissing,
    Capability,
    ContextOverflow,
    EmbeddingRequest,
    EngineUnavailable,
    FinishReason,
    GenerationRequest,
    InvalidRequest,
    ModelFormat,
    ModelNotFound,
    ModelReadOnly,
    ModelRef,
    SamplingPolicy,
    system_and_user,
)
from modelport.ports import EngineRegistry, EngineSpec


def ask(prompt: str = "capital of France?", **sampling) -> GenerationRequest:
    return GenerationRequest(
        model=ModelRef.parse("fake"), messages=system_and_user(prompt), sampling=SamplingPolicy.greedy(**sampling)
    )


def test_generate_streams_through_the_chat_template(services, engine_box) -> None:
    completion = services.complete(ask())
    assert completion.text == "The capital of France is Paris."
    assert completion.finish_reason is FinishReason.STOP
    assert engine_box.last.prompts == ["<|user|>capital of France?\n<|assistant|>"]
    usage = completion.usage
    assert usage.prompt_tokens == len(engine_box.last.prompts[0])
    assert usage.completion_tokens == len(completion.text)
    assert usage.load_ns > 0 and usage.total_ns >= usage.load_ns


def test_second_request_reuses_the_loaded_model(services, engine_box) -> None:
    services.complete(ask())
    second = services.complete(ask())
    assert len(engine_box.built) == 1 and second.usage.load_ns == 0


def test_max_tokens_and_stop_strings(services) -> None:
    assert services.complete(ask(max_tokens=3)).finish_reason is FinishReason.LENGTH
    stopped = services.complete(ask(stop=(" is",)))
    assert (stopped.text, stopped.finish_reason) == ("The capital of France", FinishReason.STOP)


def test_closing_the_stream_cancels_and_releases_the_model(services) -> None:
    stream = services.generate(ask())
    next(stream)
    assert services.loaded()[0].in_use == 1
    stream.close()
    assert services.loaded()[0].in_use == 0


def test_a_stream_never_started_still_releases_when_closed(services) -> None:
    services.generate(ask()).close()
    assert services.loaded()[0].in_use == 0


def test_unknown_model_and_missing_capability(services) -> None:
    with pytest.raises(ModelNotFound):
        services.complete(GenerationRequest(model=ModelRef.parse("nope"), prompt="x"))
    with pytest.raises(CapabilityMissing):
        services.complete(GenerationRequest(model=ModelRef.parse("embedder"), prompt="x"))
    with pytest.raises(CapabilityMissing):
        services.embed(EmbeddingRequest(model=ModelRef.parse("fake"), inputs=["x"]))


def test_context_overflow_is_raised_before_streaming(services) -> None:
    request = GenerationRequest(model=ModelRef.parse("fake"), prompt="x" * 300, sampling=SamplingPolicy(num_ctx=256))
    with pytest.raises(ContextOverflow):
        services.generate(request)
    assert services.loaded()[0].in_use == 0


def test_embed(services) -> None:
    result = services.embed(EmbeddingRequest(model=ModelRef.parse("embedder"), inputs=["a", "b"]))
    assert len(result.vectors) == 2 and len(result.vectors[0]) == 16
    assert result.usage.prompt_tokens == 2


def test_chat_turn_records_the_reply(services) -> None:
    session = services.new_session("fake")
    turn = services.chat(session, "hello")
    text = "".join(event.text for event in turn)
    assert turn.session.conversation.messages[-1].content == text
    assert turn.final is not None and turn.final.finish_reason is FinishReason.STOP


def test_remove_unloads_and_bundled_models_are_read_only(services, fake_store) -> None:
    services.complete(ask())
    fake_store.add(fake_model("bundled:latest", read_only=True))
    services.remove("fake")
    assert services.loaded() == []
    with pytest.raises(ModelReadOnly):
        services.remove("bundled")


def test_copy_and_list(services) -> None:
    services.copy("fake", "mine:v1")
    assert "mine:v1" in [m.name for m in services.list_models()]


def test_concurrent_requests_share_one_load(services, engine_box) -> None:
    engine_box.token_delay = 0.001
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(services.complete(ask()).text)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == ["The capital of France is Paris."] * 6
    assert len(engine_box.built) == 1


def test_engine_selection() -> None:
    def never():
        raise AssertionError("not built")

    registry = EngineRegistry(
        [
            EngineSpec(name="gguf", formats={ModelFormat.GGUF}, factory=never, available=lambda: False, extra="gguf"),
            EngineSpec(name="jax", formats={ModelFormat.GGUF, ModelFormat.SAFETENSORS}, factory=never),
        ]
    )
    gguf = fake_model("m", format=ModelFormat.GGUF)
    assert registry.select(gguf).name == "jax"
    with pytest.raises(EngineUnavailable, match=r"pip install 'modelport\[gguf\]'"):
        registry.select(gguf, "gguf")
    with pytest.raises(EngineUnavailable, match="unknown engine"):
        registry.select(gguf, "tpu")
    mlx = fake_model("m", format=ModelFormat.MLX, capabilities={Capability.CHAT})
    with pytest.raises(EngineUnavailable, match="no engine"):
        registry.select(mlx)


def test_resident_models_evict_the_least_recently_used(settings, engine_box) -> None:
    from modelport.adapters.fake import InMemoryModelStore, InMemorySessionRepository
    from modelport.entrypoints.bootstrap import bootstrap
    import attrs

    store = InMemoryModelStore([fake_model(f"m{i}:latest") for i in range(3)])
    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=engine_box)
    services = bootstrap(
        attrs.evolve(settings, max_resident_models=2), store=store, engines=[spec], sessions=InMemorySessionRepository()
    )
    for name in ("m0", "m1", "m2"):
        services.complete(GenerationRequest(model=ModelRef.parse(name), prompt="x"))
    assert sorted(r.model.name for r in services.loaded()) == ["m1:latest", "m2:latest"]
    assert engine_box.built[0].model is None  # unloaded


def test_sampling_takes_request_options_over_model_defaults_over_ollamas(services, fake_store) -> None:
    fake_store.add(fake_model("tuned:latest", default_options={"temperature": 0.2, "top_k": 7}))
    policy = services.sampling_for("tuned", {"top_k": 3})  # SamplingPolicy fields; wire names map at the edges
    with pytest.raises(InvalidRequest, match="num_predict"):
        services.sampling_for("tuned", {"num_predict": 1})
    assert (policy.temperature, policy.top_k, policy.top_p) == (0.2, 3, 0.9)
    assert services.sampling_for("fake").temperature == 0.8
    with pytest.raises(ModelNotFound):
        services.sampling_for("missing", {})


def test_an_engine_that_cannot_read_gguf_gets_the_stores_conversion(settings, fake_store) -> None:
    from modelport.adapters.fake import FakeEngine, InMemorySessionRepository
    from modelport.entrypoints.bootstrap import bootstrap

    loaded = []

    class FolderEngine(FakeEngine):
        def load(self, model, options):
            loaded.append(model)
            super().load(model, options)

    spec = EngineSpec(name="folders", formats={ModelFormat.SAFETENSORS}, factory=FolderEngine)
    services = bootstrap(settings, store=fake_store, engines=[spec], sessions=InMemorySessionRepository())
    services.complete(GenerationRequest(model=ModelRef.parse("fake"), prompt="x"))
    assert fake_store.conversions == [("fake:latest", ModelFormat.SAFETENSORS)]
    assert loaded[0].format is ModelFormat.SAFETENSORS and loaded[0].name == "fake:latest"


def test_an_embedder_is_never_given_an_engine_that_cannot_embed() -> None:
    def never():
        raise AssertionError("not built")

    chat_only = EngineSpec(
        name="mlx",
        formats={ModelFormat.SAFETENSORS},
        factory=never,
        capabilities={Capability.CHAT, Capability.COMPLETION},
        extra="mlx",
    )
    registry = EngineRegistry([chat_only])
    embedder = fake_model("e", format=ModelFormat.SAFETENSORS, capabilities={Capability.EMBEDDING})
    with pytest.raises(EngineUnavailable, match="no engine"):
        registry.select(embedder)
    with pytest.raises(EngineUnavailable, match="cannot run 'e' .embedding."):
        registry.select(embedder, "mlx")
    assert registry.select(fake_model("c", format=ModelFormat.SAFETENSORS)).name == "mlx"


def test_a_model_decodes_its_warm_up_tokens_when_it_loads(settings, fake_store, engine_box) -> None:
    from modelport.adapters.fake import InMemorySessionRepository
    from modelport.entrypoints.bootstrap import bootstrap

    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=engine_box)
    services = bootstrap(
        attrs.evolve(settings, warmup_tokens=3), store=fake_store, engines=[spec], sessions=InMemorySessionRepository()
    )
    assert services.complete(ask()).text == "The capital of France is Paris."
    fake = engine_box.last
    assert fake.prompts == ["Hello", "<|user|>capital of France?\n<|assistant|>"]
    warm_up_draws = [step for step in fake.steps if step.sampling][:3]
    assert len(warm_up_draws) == 3 and all(s.sampling == (fake.begun[0][0],) for s in warm_up_draws)
    services.complete(ask())
    assert fake.prompts.count("Hello") == 1  # once per load, not per request
