"""GPT-2: learned positions, pre-norm LayerNorm blocks, fused c_attn, GELU MLP, the
head tied to the token embeddings. Its checkpoints store Conv1D weights as
(in, out), which is already the kernel layout here: they load untransposed."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from ..kvcache import KVCache
from ..layers import ACTIVATIONS, Embedding, LayerNorm, Linear, attention, causal_mask, read_cache, write_cache
from ..weights import Rule, vector

KIND = "decoder"
PREFIXES = ("transformer.",)
IGNORED = (r"h\.\d+\.attn\.(masked_)?bias", r"lm_head\.weight")


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 1024
    layer_norm_eps: float = 1e-5
    activation: str = "gelu_new"

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> "GPT2Config":
        if config.get("scale_attn_by_inverse_layer_idx"):
            raise ValueError("scale_attn_by_inverse_layer_idx is not supported")
        width = int(config["n_embd"])
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=width,
            num_layers=int(config["n_layer"]),
            num_heads=int(config["n_head"]),
            intermediate_size=int(config.get("n_inner") or 4 * width),
            max_position_embeddings=int(config.get("n_positions", 1024)),
            layer_norm_eps=float(config.get("layer_norm_epsilon", 1e-5)),
            activation=str(config.get("activation_function", "gelu_new")),
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def context_length(self) -> int:
        return self.max_position_embeddings


class Block(nnx.Module):
    def __init__(self, cfg: GPT2Config, dtype: Any) -> None:
        d = cfg.hidden_size
        self.ln_1 = LayerNorm(d, eps=cfg.layer_norm_eps, dtype=dtype)
        self.c_attn = Linear(d, 3 * d, bias=True, dtype=dtype)  # D -> 3 * H * Dh
        self.attn_proj = Linear(d, d, bias=True, dtype=dtype)
        self.ln_2 = LayerNorm(d, eps=cfg.layer_norm_eps, dtype=dtype)
        self.c_fc = Linear(d, cfg.intermediate_size, bias=True, dtype=dtype)
        self.mlp_proj = Linear(cfg.intermediate_size, d, bias=True, dtype=dtype)
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.act = ACTIVATIONS[cfg.activation]

    def __call__(self, x, positions, k_cache, v_cache, span: int, mask, row=None):
        """x (B, T, D); caches (rows, S, H, Dh) updated at ``positions`` (B, T), in
        cache row ``row`` only when it is set (B = 1)."""
        b, t, d = x.shape
        q, k, v = (p.reshape(b, t, self.heads, self.head_dim) for p in jnp.split(self.c_attn(self.ln_1(x)), 3, -1))
        k_cache, v_cache = write_cache(k_cache, k, positions, row), write_cache(v_cache, v, positions, row)
        seen_k, seen_v = read_cache(k_cache, span, row), read_cache(v_cache, span, row)
        out = attention(q, seen_k, seen_v, mask, self.head_dim**-0.5)
        x = x + self.attn_proj(out.reshape(b, t, d))
        x = x + self.mlp_proj(self.act(self.c_fc(self.ln_2(x))))
        return x, k_cache, v_cache


class GPT2Model(nnx.Module):
    def __init__(self, cfg: GPT2Config, *, dtype: Any = jnp.float32) -> None:
        self.cfg = cfg
        self.wte = Embedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype)
        self.wpe = Embedding(cfg.max_position_embeddings, cfg.hidden_size, dtype=dtype)
        self.layers = nnx.List([Block(cfg, dtype) for _ in range(cfg.num_layers)])
        self.ln_f = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=dtype)

    def __call__(
        self, tokens: jax.Array, positions: jax.Array, cache: KVCache, span: int, row: jax.Array | None = None
    ):
        """tokens, positions: (B, T) -> hidden (B, T, D), updated cache (its row
        ``row`` only, when it is set: B = 1)."""
        x = self.wte(tokens) + self.wpe(jnp.minimum(positions, self.cfg.max_position_embeddings - 1))
        mask = causal_mask(positions, span)
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, positions, *cache.layer(i), span, mask, row)
            cache = cache.replace(i, k, v)
        return self.ln_f(x), cache

    def logits(self, hidden: jax.Array) -> jax.Array:  # (..., D) -> (..., V) float32
        return self.wte.attend(hidden).astype(jnp.float32)


def cache_shape(cfg: GPT2Config) -> tuple[int, int, int]:
    return cfg.num_layers, cfg.num_heads, cfg.head_dim


def weight_rules(cfg: GPT2Config) -> list[Rule]:
    rules = [
        Rule(("wte", "table"), ("wte.weight",)),
        Rule(("wpe", "table"), ("wpe.weight",)),
        Rule(("ln_f", "weight"), ("ln_f.weight",), vector),
        Rule(("ln_f", "bias"), ("ln_f.bias",), vector),
    ]
    names = {
        "ln_1": "ln_1",
        "c_attn": "attn.c_attn",
        "attn_proj": "attn.c_proj",
        "ln_2": "ln_2",
        "c_fc": "mlp.c_fc",
        "mlp_proj": "mlp.c_proj",
    }
    for i in range(cfg.num_layers):
        for ours, theirs in names.items():
            weight = "weight" if ours.startswith("ln") else "kernel"
            rules += [
                Rule(("layers", i, ours, weight), (f"h.{i}.{theirs}.weight",)),  # Conv1D: (in, out) already
                Rule(("layers", i, ours, "bias"), (f"h.{i}.{theirs}.bias",), vector),
            ]
    return rules


Config = GPT2Config
Model = GPT2Model
