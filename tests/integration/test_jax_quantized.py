"""SmolLM2 with int8 and int4 weights: straight from the bundled GGUF's blocks and
quantized at load from a safetensors folder, checked against the float32 path on
the golden greedy tokens and on the perplexity of a fixed text."""

from __future__ import annotations

import os

import numpy as np
import pytest

from modelport.adapters.filesystem import FilesystemModelStore
from modelport.domain import InvalidRequest, ModelFormat, ModelInfo, ModelRef
from modelport.ports import EngineOptions

pytestmark = pytest.mark.slow
GOLDEN_PROMPT_TOKENS = [6403, 1980, 253, 655, 28, 665, 436, 253, 1838, 8180, 3365]
GOLDEN_TOKENS = (20391, 617, 5732, 288, 1238, 281, 260, 2388, 30, 2306)
TEXT = (
    "The river runs through the old town from the hills in the north to the sea in the south. "
    "In spring the water is high and fast, and the children are told to keep away from its banks. "
    "In summer it is slow and warm, and the same children swim in it every afternoon until their "
    "mothers call them home for dinner. The bridge at the market square was built of stone more than "
    "three hundred years ago, and it has survived every flood since then."
)


@pytest.fixture(scope="module")
def smollm2() -> ModelInfo:
    return FilesystemModelStore("/nonexistent-modelport-store").resolve(ModelRef.parse("smollm2"))


def _load(model: ModelInfo, home: str, quantize: str):
    from modelport.adapters.jax import runtime

    return runtime.load(model, EngineOptions(num_ctx=256, device="cpu", home=home, quantize=quantize), home)


@pytest.fixture(scope="module")
def loads(smollm2, engine_home):
    """Each way to load, once: logits of the golden prompt + tokens and of TEXT."""
    from modelport.adapters.jax.runtime import model_folder

    folder = model_folder(smollm2, engine_home)
    as_safetensors = ModelInfo(
        name="smollm2-hf:latest", format=ModelFormat.SAFETENSORS, location=folder, primary_file="config.json"
    )
    out = {}
    for label, model, mode in [
        ("f32", smollm2, "none"),
        ("gguf-int8", smollm2, "int8"),
        ("gguf-int4", smollm2, "int4"),
        ("hf-int8", as_safetensors, "int8"),
        ("hf-int4", as_safetensors, "int4"),
    ]:
        rt = _load(model, engine_home, mode)
        text = rt.tokenizer.encode(TEXT)
        golden = np.asarray([GOLDEN_PROMPT_TOKENS + list(GOLDEN_TOKENS[:8])], np.int32)
        out[label] = {
            "golden": rt.decoder.forward(golden)[0],
            "text": (text, rt.decoder.forward(np.asarray([text], np.int32))[0]),
            "bytes": rt.parameter_bytes,
            "leaves": {str(x.dtype) for x in __import__("jax").tree_util.tree_leaves(rt.decoder.state)},
        }
        rt.release()
    return out


def _perplexity(tokens: list[int], logits: np.ndarray) -> float:
    shifted = logits[:-1] - logits[:-1].max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(np.exp(-np.mean(logp[np.arange(len(tokens) - 1), tokens[1:]])))


@pytest.mark.parametrize("label", ["gguf-int8", "gguf-int4", "hf-int8", "hf-int4"])
def test_quantized_weights_keep_the_first_golden_greedy_tokens(loads, label) -> None:
    start = len(GOLDEN_PROMPT_TOKENS) - 1
    greedy = loads[label]["golden"][start : start + 8].argmax(axis=-1)
    assert tuple(int(t) for t in greedy) == GOLDEN_TOKENS[:8]


@pytest.mark.parametrize(
    "label, limit", [("gguf-int8", 0.02), ("gguf-int4", 0.06), ("hf-int8", 0.02), ("hf-int4", 0.06)]
)
def test_perplexity_stays_near_float32(loads, label, limit) -> None:
    tokens, logits = loads["f32"]["text"]
    reference = _perplexity(tokens, logits)
    ours = _perplexity(*loads[label]["text"])
    assert len(tokens) > 80 and reference < 30
    assert abs(ours - reference) / reference <= limit, (label, ours, reference)


def test_quantized_weights_are_small_and_stay_integers(loads) -> None:
    f32 = loads["f32"]["bytes"]
    assert loads["gguf-int8"]["bytes"] < f32 / 3.4 and loads["gguf-int4"]["bytes"] < f32 / 4.5
    assert {"int8", "float32"} == loads["gguf-int8"]["leaves"]
    assert {"int8", "uint8", "float32"} == loads["gguf-int4"]["leaves"]  # the table is int8, the rest 4-bit


def test_a_family_without_quantized_layers_refuses_int8(engine_home) -> None:
    from modelport.adapters.jax import runtime

    with pytest.raises(InvalidRequest, match="Llama-family"):
        runtime.select_quantization("int8", runtime.registry.family("bert"))
    assert not runtime.select_quantization("auto", runtime.registry.family("bert")).active


def test_quantize_is_validated() -> None:
    with pytest.raises(InvalidRequest, match="quantize"):
        EngineOptions(quantize="int3")
    assert EngineOptions(quantize="INT8").quantize == "int8"


def test_the_setting_reaches_the_engine_options(tmp_path) -> None:
    from modelport.entrypoints.bootstrap import bootstrap
    from modelport.entrypoints.config import Settings

    settings = Settings.load(flags={"quantize": "INT4", "home": str(tmp_path)}, environ={}, dotenv=None)
    assert bootstrap(settings).engine_options.quantize == "int4"
    from_env = Settings.load(environ={"MODELPORT_QUANTIZE": "int8", "MODELPORT_HOME": str(tmp_path)}, dotenv=None)
    assert from_env.quantize == "int8"
    with pytest.raises(InvalidRequest, match="quantize"):
        Settings.load(environ={"MODELPORT_QUANTIZE": "fp4", "MODELPORT_HOME": str(tmp_path)}, dotenv=None)


def test_the_gguf_tensors_are_read_as_gguf_py_reads_them(smollm2) -> None:
    """The checkpoint maps the file through the store's header reader (which skips the
    vocabulary gguf.GGUFReader parses); every tensor's name, type, shape and bytes
    equal gguf-py's."""
    import gguf

    from modelport.adapters.filesystem.gguf_header import read_gguf_header
    from modelport.adapters.jax.weights import _mapped_tensors

    path = os.path.join(smollm2.location, smollm2.primary_file)
    ours = _mapped_tensors(path, read_gguf_header(path))
    theirs = gguf.GGUFReader(path).tensors
    assert len(ours) == len(theirs) == 272
    for mine, reference in zip(ours, theirs):
        assert (mine.name, mine.tensor_type, mine.shape) == (
            reference.name,
            reference.tensor_type,
            tuple(int(d) for d in reference.shape),
        )
        assert mine.data.dtype == reference.data.dtype and mine.data.shape == reference.data.shape
        assert np.array_equal(mine.data, reference.data), mine.name
