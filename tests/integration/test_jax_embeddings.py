"""all-MiniLM through the JAX engine's embed(), against the sentence-transformers
reference values and a plain numpy BERT forward pass; pooling from modules.json."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from modelport.adapters.filesystem import FilesystemModelStore
from modelport.adapters.jax import JaxEngine
from modelport.domain import ModelFormat, ModelInfo, ModelRef
from modelport.ports import EngineOptions

pytestmark = pytest.mark.slow
SENTENCES = [
    "This is an example sentence",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Ünïcödé and emoji 😀 survive",
    "x",
]


@pytest.fixture(scope="module")
def minilm() -> ModelInfo:
    return FilesystemModelStore("/nonexistent-modelport-store").resolve(ModelRef.parse("all-minilm"))


@pytest.fixture(scope="module")
def engine(minilm, engine_home):
    engine = JaxEngine()
    engine.load(minilm, EngineOptions(device="cpu", home=engine_home))
    yield engine
    engine.unload()


@pytest.fixture(scope="module")
def vectors(engine) -> np.ndarray:
    return np.asarray(engine.embed(SENTENCES))


def test_the_reference_vector(vectors) -> None:
    expected = [0.06766, 0.06350, 0.04871, 0.07931, 0.03745]
    np.testing.assert_allclose(vectors[0, :5], expected, atol=1e-4)
    assert vectors.shape == (len(SENTENCES), 384)


def test_the_reference_similarities(vectors) -> None:
    assert float(vectors[1] @ vectors[2]) == pytest.approx(0.755, abs=1e-3)
    assert float(vectors[1] @ vectors[3]) == pytest.approx(-0.105, abs=1e-3)


def test_a_padded_batch_matches_a_numpy_bert(vectors, engine, minilm) -> None:
    tokens = [engine._rt.tokenizer.encode(text) for text in SENTENCES]
    assert len({len(t) for t in tokens}) > 3, "the batch needs padding"
    reference = numpy_sentence_embeddings(minilm.location, tokens, pooling="mean", normalize=True)
    cosines = (vectors * reference).sum(-1)
    assert cosines.min() >= 0.9999
    np.testing.assert_allclose(vectors, reference, atol=2e-5)


def test_cls_pooling_without_normalization_from_modules_json(minilm, tmp_path, engine_home) -> None:
    folder = tmp_path / "cls"
    shutil.copytree(minilm.location, folder)
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    modules = [m for m in json.loads((folder / "modules.json").read_text()) if not m["type"].endswith("Normalize")]
    (folder / "modules.json").write_text(json.dumps(modules))
    engine = JaxEngine()
    engine.load(
        ModelInfo(name="cls:latest", format=ModelFormat.SAFETENSORS, location=str(folder), primary_file="config.json"),
        EngineOptions(device="cpu", home=engine_home),
    )
    texts = SENTENCES[:3]
    ours = np.asarray(engine.embed(texts))
    tokens = [engine._rt.tokenizer.encode(text) for text in texts]
    reference = numpy_sentence_embeddings(str(folder), tokens, pooling="cls", normalize=False)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)
    assert abs(np.linalg.norm(ours[0]) - 1) > 0.1


def numpy_sentence_embeddings(folder: str, batch: list[list[int]], *, pooling: str, normalize: bool) -> np.ndarray:
    """A BERT forward pass per text (no padding at all), in float64."""
    from safetensors.numpy import load_file

    config = json.load(open(os.path.join(folder, "config.json")))
    w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(folder, "model.safetensors")).items()}
    heads, eps = config["num_attention_heads"], config["layer_norm_eps"]
    out = []
    for tokens in batch:
        hidden = bert_reference(w, tokens, config["num_hidden_layers"], heads, eps)
        vector = hidden.mean(0) if pooling == "mean" else hidden[0]
        out.append(vector / np.linalg.norm(vector) if normalize else vector)
    return np.stack(out)


def bert_reference(w: dict, tokens: list[int], layers: int, heads: int, eps: float) -> np.ndarray:
    from math import erf

    def norm(x, name):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]

    def dense(x, name):
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))))
    t = len(tokens)
    x = (
        w["embeddings.word_embeddings.weight"][tokens]
        + w["embeddings.position_embeddings.weight"][:t]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = norm(x, "embeddings.LayerNorm")
    d = x.shape[-1]
    dh = d // heads
    for i in range(layers):
        p = f"encoder.layer.{i}."
        q, k, v = (
            dense(x, p + f"attention.self.{n}").reshape(t, heads, dh).transpose(1, 0, 2)
            for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(dh)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attended = (scores / scores.sum(-1, keepdims=True)) @ v
        x = norm(
            x + dense(attended.transpose(1, 0, 2).reshape(t, d), p + "attention.output.dense"),
            p + "attention.output.LayerNorm",
        )
        x = norm(x + dense(gelu(dense(x, p + "intermediate.dense")), p + "output.dense"), p + "output.LayerNorm")
    return x
