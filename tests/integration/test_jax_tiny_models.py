"""Tiny random models of every decoder family the JAX engine runs, written as
Hugging Face folders, checked against straightforward numpy forward passes; the
KV-cache path checked against full forward passes; the loader's error reports."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from modelport.domain import (
    Completion,
    ContextOverflow,
    FinishReason,
    GenerationRequest,
    ModelFormat,
    ModelInfo,
    ModelLoadError,
    ModelRef,
    SamplingPolicy,
    UnsupportedArchitecture,
)
from modelport.ports import EngineOptions

VOCAB = 260  # 256 byte tokens, <eos>, and spare rows
EOS = 256
BASE = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    max_position_embeddings=128,
    hidden_act="silu",
    tie_word_embeddings=False,
    eos_token_id=EOS,
)
CONFIGS = {
    "llama": dict(BASE, model_type="llama"),
    "llama3-rope": dict(
        BASE,
        model_type="llama",
        tie_word_embeddings=True,
        rope_scaling=dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=16,
        ),
    ),
    "qwen2": dict(BASE, model_type="qwen2", tie_word_embeddings=True),
    "mistral": dict(BASE, model_type="mistral", sliding_window=4),
    "phi3": dict(BASE, model_type="phi3", num_key_value_heads=4, hidden_act="silu"),
    "granite": dict(
        BASE,
        model_type="granite",
        embedding_multiplier=12.0,
        residual_multiplier=0.22,
        attention_multiplier=0.0625,
        logits_scaling=8.0,
        tie_word_embeddings=True,
    ),
    "gpt2": dict(
        model_type="gpt2",
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=128,
        layer_norm_epsilon=1e-5,
        activation_function="gelu_new",
        eos_token_id=EOS,
    ),
}


# -- building tiny folders -------------------------------------------------------------------


def hf_weights(config: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random weights under the Hugging Face names and shapes of ``config``'s family."""

    def r(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    def norm(n):
        return (1 + rng.standard_normal(n) * 0.1).astype(np.float32)

    if config["model_type"] == "gpt2":
        d, f = config["n_embd"], 4 * config["n_embd"]
        w = {
            "wte.weight": r(VOCAB, d),
            "wpe.weight": r(config["n_positions"], d),
            "ln_f.weight": norm(d),
            "ln_f.bias": r(d),
        }
        for i in range(config["n_layer"]):
            p = f"h.{i}."
            w.update(
                {
                    p + "ln_1.weight": norm(d),
                    p + "ln_1.bias": r(d),
                    p + "ln_2.weight": norm(d),
                    p + "ln_2.bias": r(d),
                    p + "attn.c_attn.weight": r(d, 3 * d),
                    p + "attn.c_attn.bias": r(3 * d),
                    p + "attn.c_proj.weight": r(d, d),
                    p + "attn.c_proj.bias": r(d),
                    p + "mlp.c_fc.weight": r(d, f),
                    p + "mlp.c_fc.bias": r(f),
                    p + "mlp.c_proj.weight": r(f, d),
                    p + "mlp.c_proj.bias": r(d),
                    p + "attn.bias": np.tril(np.ones((1, 1, 128, 128), np.float32)),
                }
            )
        return w
    d, f = config["hidden_size"], config["intermediate_size"]
    h, k = config["num_attention_heads"], config["num_key_value_heads"]
    dh = d // h
    w = {"model.embed_tokens.weight": r(VOCAB, d), "model.norm.weight": norm(d)}
    if not config["tie_word_embeddings"]:
        w["lm_head.weight"] = r(VOCAB, d)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w.update(
            {
                p + "input_layernorm.weight": norm(d),
                p + "post_attention_layernorm.weight": norm(d),
                p + "self_attn.o_proj.weight": r(d, h * dh),
                p + "mlp.down_proj.weight": r(d, f),
            }
        )
        if config["model_type"] == "phi3":
            w[p + "self_attn.qkv_proj.weight"] = r((h + 2 * k) * dh, d)
            w[p + "mlp.gate_up_proj.weight"] = r(2 * f, d)
        else:
            w.update(
                {
                    p + "self_attn.q_proj.weight": r(h * dh, d),
                    p + "self_attn.k_proj.weight": r(k * dh, d),
                    p + "self_attn.v_proj.weight": r(k * dh, d),
                    p + "mlp.gate_proj.weight": r(f, d),
                    p + "mlp.up_proj.weight": r(f, d),
                }
            )
        if config["model_type"] == "qwen2":
            w.update(
                {
                    p + "self_attn.q_proj.bias": r(h * dh),
                    p + "self_attn.k_proj.bias": r(k * dh),
                    p + "self_attn.v_proj.bias": r(k * dh),
                }
            )
    return w


def write_folder(folder, config: dict, weights: dict[str, np.ndarray], shards: int = 1) -> str:
    from safetensors.numpy import save_file
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as handle:
        json.dump(config, handle)
    names = sorted(weights)
    if shards == 1:
        save_file(weights, os.path.join(folder, "model.safetensors"))
    else:
        weight_map = {}
        for s in range(shards):
            part = {n: weights[n] for n in names[s::shards]}
            filename = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            save_file(part, os.path.join(folder, filename))
            weight_map.update({n: filename for n in part})
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as handle:
            json.dump({"metadata": {}, "weight_map": weight_map}, handle)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken("<eos>", special=True)])
    tokenizer.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as handle:
        json.dump(
            {
                "eos_token": "<eos>",
                "chat_template": "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
                "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
            },
            handle,
        )
    return str(folder)


def model_info(folder: str) -> ModelInfo:
    return ModelInfo(name="tiny:latest", format=ModelFormat.SAFETENSORS, location=folder, primary_file="config.json")


def load_engine(folder: str, num_ctx: int = 64, **options):
    from modelport.adapters.jax import JaxEngine

    engine = JaxEngine()
    options = {"quantize": "none", **options}  # the float forward pass the numpy references compute
    engine.load(model_info(folder), EngineOptions(num_ctx=num_ctx, device="cpu", home=folder + "-home", **options))
    return engine


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def tiny(request, tmp_path_factory):
    """(name, config, weights, folder, engine) for one family."""
    config = CONFIGS[request.param]
    weights = hf_weights(config, np.random.default_rng(0))
    folder = write_folder(tmp_path_factory.mktemp("tiny") / request.param, config, weights)
    engine = load_engine(folder)
    yield request.param, config, weights, folder, engine
    engine.unload()


# -- numpy references ------------------------------------------------------------------------


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * w + b


def _inverse_frequencies(config: dict, head_dim: int) -> np.ndarray:
    inv = 1.0 / config["rope_theta"] ** (np.arange(0, head_dim, 2) / head_dim)
    scaling = config.get("rope_scaling")
    if not scaling:
        return inv
    # Llama 3.1, written from its description: long wavelengths / factor, short kept, blend between
    low_wavelength = scaling["original_max_position_embeddings"] / scaling["high_freq_factor"]
    high_wavelength = scaling["original_max_position_embeddings"] / scaling["low_freq_factor"]
    out = []
    for f in inv:
        wavelength = 2 * np.pi / f
        if wavelength < low_wavelength:
            out.append(f)
        elif wavelength > high_wavelength:
            out.append(f / scaling["factor"])
        else:
            s = (scaling["original_max_position_embeddings"] / wavelength - scaling["low_freq_factor"]) / (
                scaling["high_freq_factor"] - scaling["low_freq_factor"]
            )
            out.append((1 - s) * f / scaling["factor"] + s * f)
    return np.asarray(out)


def llama_family_logits(config: dict, w: dict, tokens: list[int]) -> np.ndarray:
    """(T, V) logits, float64, from the Hugging Face weights, one token row at a time."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    kind, t = config["model_type"], len(tokens)
    d, h, kv = config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]
    dh, eps = d // h, config["rms_norm_eps"]
    inv = _inverse_frequencies(config, dh)
    window = config.get("sliding_window") or t
    scale = config.get("attention_multiplier", dh**-0.5)
    residual = config.get("residual_multiplier", 1.0)

    def rope(x, pos):  # x (N, Dh)
        angle = pos * np.concatenate([inv, inv])
        rotated = np.concatenate([-x[:, dh // 2 :], x[:, : dh // 2]], -1)
        return x * np.cos(angle) + rotated * np.sin(angle)

    x = w["model.embed_tokens.weight"][tokens] * config.get("embedding_multiplier", 1.0)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = _rms(x, w[p + "input_layernorm.weight"], eps)
        if kind == "phi3":
            qkv = a @ w[p + "self_attn.qkv_proj.weight"].T
            q, k, v = qkv[:, : h * dh], qkv[:, h * dh : (h + kv) * dh], qkv[:, (h + kv) * dh :]
        else:
            q, k, v = (
                a @ w[p + f"self_attn.{n}_proj.weight"].T + w.get(p + f"self_attn.{n}_proj.bias", 0) for n in "qkv"
            )
        q, k, v = q.reshape(t, h, dh), k.reshape(t, kv, dh), v.reshape(t, kv, dh)
        q = np.stack([rope(q[s], s) for s in range(t)])
        k = np.stack([rope(k[s], s) for s in range(t)])
        out = np.zeros((t, h, dh))
        for s in range(t):  # query position
            for head in range(h):
                g = head // (h // kv)
                seen = [j for j in range(t) if j <= s and s - j < window]
                weights = _softmax(np.asarray([q[s, head] @ k[j, g] * scale for j in seen]))
                out[s, head] = sum(wj * v[j, g] for wj, j in zip(weights, seen))
        x = x + residual * (out.reshape(t, h * dh) @ w[p + "self_attn.o_proj.weight"].T)
        m = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
        if kind == "phi3":
            gate, up = np.split(m @ w[p + "mlp.gate_up_proj.weight"].T, 2, -1)
        else:
            gate, up = m @ w[p + "mlp.gate_proj.weight"].T, m @ w[p + "mlp.up_proj.weight"].T
        x = x + residual * ((gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T)
    x = _rms(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T / config.get("logits_scaling", 1.0)


def gpt2_logits(config: dict, w: dict, tokens: list[int]) -> np.ndarray:
    w = {k: v.astype(np.float64) for k, v in w.items()}
    t, d, h = len(tokens), config["n_embd"], config["n_head"]
    dh, eps = d // h, config["layer_norm_epsilon"]

    def gelu_new(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    x = w["wte.weight"][tokens] + w["wpe.weight"][np.arange(t)]
    causal = np.tril(np.ones((t, t), bool))
    for i in range(config["n_layer"]):
        p = f"h.{i}."
        a = _layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        q, k, v = np.split(a @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"], 3, -1)
        q, k, v = (z.reshape(t, h, dh).transpose(1, 0, 2) for z in (q, k, v))
        att = _softmax(np.where(causal, q @ k.transpose(0, 2, 1) / np.sqrt(dh), -np.inf)) @ v
        x = x + att.transpose(1, 0, 2).reshape(t, d) @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        m = _layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        x = (
            x
            + gelu_new(m @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"]) @ w[p + "mlp.c_proj.weight"]
            + w[p + "mlp.c_proj.bias"]
        )
    x = _layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps)
    return x @ w["wte.weight"].T


def reference_logits(config: dict, weights: dict, tokens: list[int]) -> np.ndarray:
    fn = gpt2_logits if config["model_type"] == "gpt2" else llama_family_logits
    return fn(config, weights, tokens)


# -- the tests ---------------------------------------------------------------------------------

TOKENS = [5, 17, 99, 3, 250, 42, 7, 7, 128, 64, 1, 200]


def test_logits_match_a_numpy_forward_pass(tiny) -> None:
    name, config, weights, _, engine = tiny
    ours = engine._rt.decoder.forward(np.asarray([TOKENS]))[0]
    expected = reference_logits(config, weights, TOKENS)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_the_sliding_window_matters_for_mistral() -> None:
    config = CONFIGS["mistral"]
    weights = hf_weights(config, np.random.default_rng(0))
    windowed = reference_logits(config, weights, TOKENS)
    full = reference_logits({**config, "sliding_window": None}, weights, TOKENS)
    assert np.allclose(windowed[:4], full[:4]) and not np.allclose(windowed[4:], full[4:], atol=1e-3)


def test_decode_with_the_cache_equals_the_full_forward_pass(tiny) -> None:
    """Two rows of different lengths in one batch: prefill, then three one-token
    steps at per-row positions; every step's logits match a full forward pass."""
    import jax
    import jax.numpy as jnp

    from modelport.adapters.jax.kvcache import KVCache

    _, _, _, _, engine = tiny
    decoder = engine._rt.decoder
    graph, state = decoder.graph, decoder.state

    @jax.jit
    def run(state, tokens, positions, cache):
        model = graph.merge(state)
        hidden, cache = model(tokens, positions, cache, 32)
        return model.logits(hidden), cache

    rows = [TOKENS[:5], TOKENS[:9]]
    extra = [[11, 12, 13], [21, 22, 23]]
    padded = np.zeros((2, 16), np.int32)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = row
    cache = KVCache.zeros(*_cache_dims(decoder), jnp.float32)
    positions = np.tile(np.arange(16, dtype=np.int32), (2, 1))
    logits, cache = run(state, padded, positions, cache)
    steps = [np.asarray(logits)[[0, 1], [4, 8]]]
    lengths = np.asarray([5, 9], np.int32)
    for n in range(3):
        fed = np.asarray([[extra[0][n]], [extra[1][n]]], np.int32)
        logits, cache = run(state, fed, (lengths + n)[:, None], cache)
        steps.append(np.asarray(logits)[:, 0])
    for i, row in enumerate(rows):
        full = decoder.forward(np.asarray([row + extra[i]]))[0]
        expected = full[len(row) - 1 :]
        got = np.stack([step[i] for step in steps])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def _cache_dims(decoder) -> tuple:
    layers, (kv_heads, head_dim) = decoder.cache_dims[0], decoder.cache_dims[1:]
    return layers, 2, 32, kv_heads, head_dim


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_streamed_tokens_agree_with_greedy_full_passes(name, tmp_path) -> None:
    """Per family (the llama-family variants share this path; their caches are
    checked above): through the generation core, twice (the second time from the
    prompt cache)."""
    config = CONFIGS[name]
    weights = hf_weights(config, np.random.default_rng(0))
    engine = load_engine(write_folder(tmp_path / name, config, weights))
    request = GenerationRequest(
        model=ModelRef.parse("tiny"), prompt="hello there", sampling=SamplingPolicy.greedy(max_tokens=6)
    )
    streamed = Completion.fold(engine.stream(request))
    again = Completion.fold(engine.stream(request))
    assert again.usage.cached_tokens == len(engine.tokenize("hello there")) - 1
    sequence = engine.tokenize("hello there")
    expected = []
    for _ in range(6):
        token = int(reference_logits(config, weights, sequence)[-1].argmax())
        if token == EOS:
            break
        expected.append(token)
        sequence.append(token)
    assert list(streamed.token_ids) == list(again.token_ids) == expected
    engine.unload()


def test_sharded_checkpoints_load_the_same(tmp_path) -> None:
    config = CONFIGS["llama"]
    weights = hf_weights(config, np.random.default_rng(1))
    single = load_engine(write_folder(tmp_path / "single", config, weights))
    sharded = load_engine(write_folder(tmp_path / "sharded", config, weights, shards=3))
    tokens = np.asarray([TOKENS])
    np.testing.assert_array_equal(single._rt.decoder.forward(tokens), sharded._rt.decoder.forward(tokens))


def test_every_weight_problem_is_reported_at_once(tmp_path) -> None:
    config = CONFIGS["llama"]
    weights = hf_weights(config, np.random.default_rng(2))
    del weights["model.layers.0.mlp.up_proj.weight"]
    del weights["model.norm.weight"]
    weights["model.layers.1.self_attn.k_proj.weight"] = np.zeros((3, 32), np.float32)
    weights["model.extra.weight"] = np.zeros((2,), np.float32)
    weights["model.layers.1.post_attention_layernorm.weight"] = np.zeros((32,), np.int32)
    folder = write_folder(tmp_path / "broken", config, weights)
    with pytest.raises(ModelLoadError) as caught:
        load_engine(folder)
    message = str(caught.value)
    for part in (
        "model.layers.0.mlp.up_proj.weight",
        "model.norm.weight",
        "model.extra.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "post_attention_layernorm.weight is int32",
    ):
        assert part in message


def test_unsupported_architectures_name_the_supported_ones(tmp_path) -> None:
    folder = write_folder(tmp_path / "mamba", dict(CONFIGS["llama"], model_type="mamba"), {"x": np.zeros(2)})
    with pytest.raises(UnsupportedArchitecture) as caught:
        load_engine(folder)
    assert "mamba" in str(caught.value)
    for supported in ("llama", "mistral", "qwen2", "phi3", "granite", "gpt2", "bert"):
        assert supported in str(caught.value)


def test_generation_ends_at_the_context_window_and_at_end_tokens(tmp_path) -> None:
    config = CONFIGS["llama"]
    weights = hf_weights(config, np.random.default_rng(3))
    folder = write_folder(tmp_path / "ctx", config, weights)
    engine = load_engine(folder, num_ctx=32)
    prompt = "x" * 20
    request = GenerationRequest(model=ModelRef.parse("tiny"), prompt=prompt, sampling=SamplingPolicy.greedy())
    completion = Completion.fold(engine.stream(request))
    assert completion.finish_reason is FinishReason.LENGTH
    assert completion.usage.prompt_tokens + completion.usage.completion_tokens == 32
    assert Completion.fold(engine.stream(request)).token_ids == completion.token_ids
    with pytest.raises(ContextOverflow):
        engine.stream(GenerationRequest(model=ModelRef.parse("tiny"), prompt="x" * 32))
    first = completion.token_ids[0]
    with open(os.path.join(folder, "generation_config.json"), "w") as handle:
        json.dump({"eos_token_id": [EOS, first]}, handle)
    stopped = Completion.fold(load_engine(folder, num_ctx=32).stream(request))
    assert stopped.finish_reason is FinishReason.STOP and stopped.token_ids == ()


def test_bfloat16_weights_stay_close_to_float32(tmp_path) -> None:
    config = CONFIGS["qwen2"]
    weights = hf_weights(config, np.random.default_rng(4))
    folder = write_folder(tmp_path / "bf16", config, weights)
    full = load_engine(folder)._rt.decoder.forward(np.asarray([TOKENS]))
    half = load_engine(folder, dtype="bfloat16")._rt.decoder.forward(np.asarray([TOKENS]))
    assert half.dtype == np.float32
    assert np.abs(half - full).max() < 0.05 * np.abs(full).max()
    assert (half.argmax(-1) == full.argmax(-1)).mean() > 0.8


def test_chat_goes_through_the_model_template(tmp_path) -> None:
    from modelport.domain import system_and_user

    engine = load_engine(
        write_folder(tmp_path / "chat", CONFIGS["llama"], hf_weights(CONFIGS["llama"], np.random.default_rng(5)))
    )

    request = GenerationRequest(
        model=ModelRef.parse("tiny"),
        messages=system_and_user("hi", "be brief"),
        sampling=SamplingPolicy.greedy(max_tokens=2),
    )
    assert engine.render(request) == "<system>be brief<user>hi<assistant>"
    assert engine.prompt_tokens(request) == engine.tokenize("<system>be brief<user>hi<assistant>")
