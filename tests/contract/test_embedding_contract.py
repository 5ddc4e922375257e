"""The embedding side of the engine contract, on each engine that embeds here.

Reference values for all-MiniLM-L6-v2 (../shared/MODELS.md): mean pooling and L2
normalization of "This is an example sentence" starts with REFERENCE, and two cosines.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from support import bert_gguf

from modelport.adapters.fake import FakeEngine, fake_model
from modelport.domain import Capability, ContextOverflow, ModelFormat, ModelInfo, ModelRef
from modelport.ports import EngineOptions, InferenceEngine

REFERENCE = [0.06766, 0.06350, 0.04871, 0.07931, 0.03745]
PAIRS = (
    ("A man is eating food.", "A man is eating a piece of bread.", 0.755),
    ("A man is eating food.", "The girl is carrying a baby.", -0.105),
)


@dataclass
class Case:
    name: str
    build: Callable[[], InferenceEngine]
    model: Callable[[], ModelInfo]
    real: bool  # the all-MiniLM weights, so the reference values apply


def _minilm_gguf() -> ModelInfo:
    from modelport.adapters.filesystem import FilesystemModelStore

    path = bert_gguf.build(Path(tempfile.mkdtemp(prefix="modelport-minilm-")) / "all-minilm-f32.gguf")
    return FilesystemModelStore("/nonexistent-modelport-store").resolve(ModelRef.parse(str(path)))


def _llamacpp() -> InferenceEngine:
    from modelport.adapters.llamacpp import LlamaCppEngine

    return LlamaCppEngine()


CASES = [
    Case(
        "fake",
        FakeEngine,
        lambda: fake_model("embedder:latest", format=ModelFormat.SAFETENSORS, capabilities={Capability.EMBEDDING}),
        real=False,
    ),
    Case("gguf-minilm", _llamacpp, _minilm_gguf, real=True),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def loaded(request):
    case: Case = request.param
    engine = case.build()
    model = case.model()
    engine.load(model, EngineOptions(num_ctx=512, device="cpu"))
    yield case, engine, model
    engine.unload()


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def test_one_unit_vector_per_text_of_the_models_width(loaded) -> None:
    case, engine, model = loaded
    vectors = engine.embed(["a", "b c", "a longer sentence with several words"])
    assert len(vectors) == 3 and len({len(v) for v in vectors}) == 1
    if model.embedding_length:
        assert len(vectors[0]) == model.embedding_length
    assert all(abs(dot(v, v) - 1) < 1e-4 for v in vectors)
    assert engine.embed([]) == []


def test_a_batch_gives_what_each_text_gives_alone(loaded) -> None:
    _, engine, _ = loaded
    texts = ["short", "a much longer text that needs padding in a batch"]
    together = engine.embed(texts)
    for text, vector in zip(texts, together):
        alone = engine.embed([text])[0]
        assert max(abs(x - y) for x, y in zip(alone, vector)) < 1e-4


def test_reference_values(loaded) -> None:
    case, engine, _ = loaded
    if not case.real:
        first, second = engine.embed(["same", "same"])
        assert first == second
        return
    vector = engine.embed(["This is an example sentence"])[0]
    assert max(abs(x - y) for x, y in zip(vector[:5], REFERENCE)) < 2e-4
    for left, right, cosine in PAIRS:
        a, b = engine.embed([left, right])
        assert abs(dot(a, b) - cosine) < 1e-3


def test_truncation_is_explicit(loaded) -> None:
    case, engine, _ = loaded
    long_text = "word " * 2000
    if case.real:
        with pytest.raises(ContextOverflow):
            engine.embed([long_text], truncate=False)
    assert len(engine.embed([long_text], truncate=True)) == 1
