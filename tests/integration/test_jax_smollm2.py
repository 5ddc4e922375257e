"""The bundled SmolLM2 GGUF through the GGUF converter and the JAX engine, checked
against golden tokens, llama.cpp's tokenizer and a plain numpy forward pass on the
same dequantized weights."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from modelport.adapters.filesystem import FilesystemModelStore
from modelport.adapters.ggufconvert import cache_key, materialize_hf_folder
from modelport.adapters.jax import JaxEngine
from modelport.domain import (
    ChatMessage,
    Completion,
    ContextOverflow,
    FinishReason,
    GenerationRequest,
    ModelRef,
    Role,
    SamplingPolicy,
)
from modelport.ports import EngineOptions

pytestmark = pytest.mark.slow
GOLDEN_PROMPT = "Once upon a time, there was a little girl named"
GOLDEN_PROMPT_TOKENS = [6403, 1980, 253, 655, 28, 665, 436, 253, 1838, 8180, 3365]
GOLDEN_TOKENS = (20391, 617, 5732, 288, 1238, 281, 260, 2388, 30, 2306)


@pytest.fixture(scope="module")
def smollm2():
    return FilesystemModelStore("/nonexistent-modelport-store").resolve(ModelRef.parse("smollm2"))


@pytest.fixture(scope="module")
def gguf_path(smollm2) -> str:
    return os.path.join(smollm2.location, smollm2.primary_file)


@pytest.fixture(scope="module")
def folder(gguf_path, tmp_path_factory) -> str:
    """A fresh conversion, so the converter itself runs in every test session."""
    return materialize_hf_folder(gguf_path, str(tmp_path_factory.mktemp("converted") / cache_key(gguf_path)))


@pytest.fixture(scope="module")
def engine(smollm2, engine_home):
    engine = JaxEngine()
    engine.load(
        smollm2, EngineOptions(num_ctx=1024, device="cpu", home=engine_home, slots=4, quantize="none")
    )  # float, as the reference (auto is int8 on a CPU)
    yield engine
    engine.unload()


def request(prompt: str = GOLDEN_PROMPT, **sampling) -> GenerationRequest:
    policy = SamplingPolicy(**sampling) if "temperature" in sampling else SamplingPolicy.greedy(**sampling)
    return GenerationRequest(model=ModelRef.parse("smollm2"), prompt=prompt, sampling=policy)


# -- the converter ---------------------------------------------------------------------------


def test_converted_folder_describes_smollm2(folder) -> None:
    config = json.load(open(os.path.join(folder, "config.json")))
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert (
        config["num_hidden_layers"],
        config["hidden_size"],
        config["num_attention_heads"],
        config["num_key_value_heads"],
        config["head_dim"],
    ) == (30, 576, 9, 3, 64)
    assert config["rope_theta"] == 100000.0 and config["vocab_size"] == 49152
    tokenizer_config = json.load(open(os.path.join(folder, "tokenizer_config.json")))
    assert tokenizer_config["eos_token"] == "<|im_end|>" and "<|im_start|>" in tokenizer_config["chat_template"]
    generation = json.load(open(os.path.join(folder, "generation_config.json")))
    assert generation["eos_token_id"] == 2 or 2 in generation["eos_token_id"]
    siblings = os.listdir(os.path.dirname(folder))
    assert siblings == [os.path.basename(folder)], "no temporary folder is left behind"


def test_converted_weights_are_float32_without_an_lm_head(folder) -> None:
    from safetensors import safe_open

    with safe_open(os.path.join(folder, "model.safetensors"), framework="numpy") as handle:
        keys = set(handle.keys())
        embed = handle.get_tensor("model.embed_tokens.weight")
    assert embed.dtype == np.float32 and embed.shape == (49152, 576)
    assert "lm_head.weight" not in keys and len(keys) == 1 + 1 + 30 * 9


def test_an_existing_conversion_is_reused(folder, gguf_path) -> None:
    weights = os.path.join(folder, "model.safetensors")
    before = os.stat(weights).st_mtime_ns
    assert materialize_hf_folder(gguf_path, folder) == folder
    assert os.stat(weights).st_mtime_ns == before


def test_the_rebuilt_tokenizer_agrees_with_llama_cpp(folder, gguf_path) -> None:
    import llama_cpp
    from tokenizers import Tokenizer

    reference = llama_cpp.Llama(model_path=gguf_path, vocab_only=True, verbose=False)
    ours = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    texts = [
        GOLDEN_PROMPT,
        "  two spaces\n\n\ttab",
        "1234567 and 3.14, 1,000",
        "café naïve 日本語 😀",
        "<|im_start|>user\nHi<|im_end|>\n",
        "don't WE'RE",
        "fn(x) { return x*2; }",
    ]
    for text in texts:
        expected = reference.tokenize(text.encode(), add_bos=False, special=True)
        assert ours.encode(text).ids == expected, text
    reference.close()


# -- the engine on the converted weights -------------------------------------------------------


def test_golden_prompt_and_greedy_tokens(engine) -> None:
    assert engine.tokenize(GOLDEN_PROMPT) == GOLDEN_PROMPT_TOKENS
    completion = Completion.fold(engine.stream(request(max_tokens=10)))
    assert completion.token_ids == GOLDEN_TOKENS
    assert completion.text == " Emma who loved to play in the sun. She"
    assert completion.finish_reason is FinishReason.LENGTH


def test_logits_agree_with_a_numpy_forward_pass(engine, folder) -> None:
    ours = engine._rt.decoder.forward(np.asarray([GOLDEN_PROMPT_TOKENS]))[0]  # (T, V)
    reference = numpy_llama_logits(folder, GOLDEN_PROMPT_TOKENS)
    scale = np.abs(reference).max()
    assert np.abs(ours - reference).max() <= 1e-3 * scale
    assert list(ours.argmax(-1)) == list(reference.argmax(-1))
    assert int(reference[-1].argmax()) == GOLDEN_TOKENS[0]


def test_a_seed_draws_the_same_tokens_again(engine) -> None:
    sampling = dict(temperature=0.8, top_k=40, top_p=0.9, min_p=0.05, repeat_penalty=1.1, seed=7)
    first = Completion.fold(engine.stream(request("Once upon a time", max_tokens=12, **sampling)))
    again = Completion.fold(engine.stream(request("Once upon a time", max_tokens=12, **sampling)))
    assert first.token_ids == again.token_ids and first.text == again.text
    other = Completion.fold(engine.stream(request("Once upon a time", max_tokens=12, **{**sampling, "seed": 8})))
    assert other.token_ids != first.token_ids


def test_streamed_text_never_splits_a_character(engine) -> None:
    text = "Emoji: 😀🎉, Japanese: 日本語, accents: café."
    ids = engine.tokenize(text)
    decoder = engine._rt.tokenizer.stream()
    deltas = [decoder.push(token) for token in ids] + [decoder.flush()]
    assert "".join(deltas) == text
    assert not any("\ufffd" in delta for delta in deltas)
    assert any(delta == "" for delta in deltas), "some token ends inside a character"


def test_a_prompt_longer_than_the_context_is_refused(engine) -> None:
    with pytest.raises(ContextOverflow):
        engine.stream(request("word " * 1200, max_tokens=1))


# -- slots: requests decoded together, the prompt cache -----------------------------------------

BATCH = [
    ("Once upon a time, there was a little girl named", 24),
    ("The capital of France is", 8),
    ("def fibonacci(n):", 20),
    ("Here is a list of fruits: apples,", 12),
    ("Water boils at", 16),
    ("In 1492, Columbus", 10),
    ("The three primary colors are", 18),
    ("Dear Sir or Madam, I am writing to", 14),
]


def test_eight_requests_through_four_slots_equal_each_alone(engine) -> None:
    """Greedy requests of different prompts and lengths, and one seeded sampled
    request, submitted together: four decode at once, the rest wait for a slot."""
    requests = [request(prompt, max_tokens=n) for prompt, n in BATCH]
    requests[5] = request(BATCH[5][0], temperature=0.9, top_k=40, top_p=0.95, seed=21, max_tokens=10)
    solo = [Completion.fold(engine.stream(r)) for r in requests]
    streams = [engine.scheduler.submit(r) for r in requests]
    batched = [Completion.fold(s) for s in streams]
    assert [c.token_ids for c in batched] == [c.token_ids for c in solo]
    assert [c.text for c in batched] == [c.text for c in solo]
    assert batched[0].token_ids[:10] == GOLDEN_TOKENS


def chat_request(*turns: str) -> GenerationRequest:
    roles = [Role.USER if i % 2 == 0 else Role.ASSISTANT for i in range(len(turns))]
    messages = tuple(ChatMessage(role=role, content=text) for role, text in zip(roles, turns))
    return GenerationRequest(
        model=ModelRef.parse("smollm2"), messages=messages, sampling=SamplingPolicy.greedy(max_tokens=16)
    )


def test_a_second_chat_turn_reuses_the_cached_conversation(engine) -> None:
    question = "What is the capital of France? Answer in one sentence."
    first = Completion.fold(engine.stream(chat_request(question)))
    second_turn = chat_request(question, first.text, "And of Italy?")
    second = Completion.fold(engine.stream(second_turn))
    assert second.usage.cached_tokens >= first.usage.prompt_tokens
    evicting = [engine.scheduler.submit(request(f"{n} little pigs", max_tokens=1)) for n in range(engine.slots)]
    for stream in evicting:
        Completion.fold(stream)
    cold = Completion.fold(engine.stream(second_turn))
    assert cold.usage.cached_tokens == 0
    assert cold.token_ids == second.token_ids and "Rome" in second.text


# -- an independent reference --------------------------------------------------------------------


def numpy_llama_logits(folder: str, tokens: list[int]) -> np.ndarray:
    """Logits (T, V) of a Llama checkpoint in Hugging Face layout, in float64 numpy."""
    from safetensors.numpy import load_file

    config = json.load(open(os.path.join(folder, "config.json")))
    weights = {k: v.astype(np.float64) for k, v in load_file(os.path.join(folder, "model.safetensors")).items()}
    return llama_reference(config, weights, tokens)


def llama_reference(config: dict, w: dict[str, np.ndarray], tokens: list[int]) -> np.ndarray:
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    dim = config["hidden_size"]
    head_dim = config.get("head_dim") or dim // heads
    eps, theta = config["rms_norm_eps"], config.get("rope_theta", 10000.0)
    t = len(tokens)

    def rms(x, weight):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight

    inv = 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)
    angles = np.arange(t)[:, None] * inv[None, :]
    cos, sin = np.cos(np.concatenate([angles, angles], -1)), np.sin(np.concatenate([angles, angles], -1))

    def rope(x):  # (N, T, Dh), rotate_half
        half = head_dim // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    x = w["model.embed_tokens.weight"][tokens]
    causal = np.tril(np.ones((t, t), bool))
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(t, heads, head_dim).transpose(1, 0, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(t, kv_heads, head_dim).transpose(1, 0, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(t, kv_heads, head_dim).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, heads // kv_heads, 0), np.repeat(v, heads // kv_heads, 0)
        scores = np.where(causal, q @ k.transpose(0, 2, 1) / np.sqrt(head_dim), -np.inf)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        out = (scores / scores.sum(-1, keepdims=True)) @ v  # (N, T, Dh)
        x = x + out.transpose(1, 0, 2).reshape(t, heads * head_dim) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T
