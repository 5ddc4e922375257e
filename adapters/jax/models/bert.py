"""BERT as an encoder (sentence embedders such as all-MiniLM): token, position and
token-type embeddings, post-norm blocks with bidirectional attention over the
non-padding tokens. Pooling and normalization live in ``..encode``.

The residual stream, norms and softmax are float32 whatever the weights are; with
bfloat16 weights each product reads bfloat16 and sums in float32 (``dense``), the
form XLA's CPU backend runs fastest (several times a float32 product on a CPU with
AMX or AVX-512 BF16)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from ..layers import ACTIVATIONS, Embedding, LayerNorm, Linear, attention
from ..weights import Rule, concat, concat_linear_t, linear_t, vector

KIND = "encoder"
PREFIXES = ("bert.",)
IGNORED = (r"pooler\..*", r"cls\..*", r"embeddings\.position_ids")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> "BertConfig":
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=int(config["num_attention_heads"]),
            intermediate_size=int(config["intermediate_size"]),
            hidden_act=str(config.get("hidden_act", "gelu")),
            max_position_embeddings=int(config.get("max_position_embeddings", 512)),
            type_vocab_size=int(config.get("type_vocab_size", 2)),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class EncoderLayer(nnx.Module):
    def __init__(self, cfg: BertConfig, dtype: Any) -> None:
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.qkv = Linear(d, 3 * d, bias=True, dtype=dtype)  # D -> 3 * H * Dh
        self.o = Linear(d, d, bias=True, dtype=dtype)
        self.attn_norm = LayerNorm(d, eps=cfg.layer_norm_eps, dtype=dtype)
        self.up = Linear(d, f, bias=True, dtype=dtype)
        self.down = Linear(f, d, bias=True, dtype=dtype)
        self.out_norm = LayerNorm(d, eps=cfg.layer_norm_eps, dtype=dtype)
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.act = ACTIVATIONS[cfg.hidden_act]

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x (B, T, D) float32; mask (B, T, T) -> (B, T, D) float32."""
        b, t, d = x.shape
        qkv = dense(self.qkv, x).astype(self.qkv.kernel.dtype)
        q, k, v = (part.reshape(b, t, self.heads, self.head_dim) for part in jnp.split(qkv, 3, axis=-1))
        out = attention(q, k, v, mask, self.head_dim**-0.5).reshape(b, t, d)
        x = self.attn_norm(x + dense(self.o, out))
        return self.out_norm(x + dense(self.down, self.act(dense(self.up, x))))


def dense(layer: Linear, x: jax.Array) -> jax.Array:
    """x (..., in) @ kernel + bias -> (..., out) float32, the product in the kernel's
    dtype and summed in float32."""
    kernel = layer.kernel[...]
    y = jnp.dot(x.astype(kernel.dtype), kernel, preferred_element_type=jnp.float32)
    return y + layer.bias[...].astype(jnp.float32)


class BertModel(nnx.Module):
    def __init__(self, cfg: BertConfig, *, dtype: Any = jnp.float32) -> None:
        self.cfg = cfg
        self.words = Embedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype)
        self.positions = Embedding(cfg.max_position_embeddings, cfg.hidden_size, dtype=dtype)
        self.token_types = Embedding(cfg.type_vocab_size, cfg.hidden_size, dtype=dtype)
        self.embed_norm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=dtype)
        self.layers = nnx.List([EncoderLayer(cfg, dtype) for _ in range(cfg.num_layers)])

    def __call__(self, tokens: jax.Array, valid: jax.Array) -> jax.Array:
        """tokens (B, T), right-padded; valid (B, T) bool -> hidden states (B, T, D) float32."""
        b, t = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(t), (b, t))
        x = self.words(tokens) + self.positions(positions) + self.token_types(jnp.zeros_like(tokens))
        x = self.embed_norm(x.astype(jnp.float32))
        mask = jnp.broadcast_to(valid[:, None, :], (b, t, t))  # every query sees the real tokens
        for layer in self.layers:
            x = layer(x, mask)
        return x


def weight_rules(cfg: BertConfig) -> list[Rule]:
    rules = [
        Rule(("words", "table"), ("embeddings.word_embeddings.weight",)),
        Rule(("positions", "table"), ("embeddings.position_embeddings.weight",)),
        Rule(("token_types", "table"), ("embeddings.token_type_embeddings.weight",)),
        Rule(("embed_norm", "weight"), ("embeddings.LayerNorm.weight",), vector),
        Rule(("embed_norm", "bias"), ("embeddings.LayerNorm.bias",), vector),
    ]
    for i in range(cfg.num_layers):
        ours, theirs = ("layers", i), f"encoder.layer.{i}."
        attn = theirs + "attention."
        rules += [
            Rule(
                (*ours, "qkv", "kernel"),
                tuple(f"{attn}self.{p}.weight" for p in ("query", "key", "value")),
                concat_linear_t,
            ),
            Rule((*ours, "qkv", "bias"), tuple(f"{attn}self.{p}.bias" for p in ("query", "key", "value")), concat),
            Rule((*ours, "o", "kernel"), (attn + "output.dense.weight",), linear_t),
            Rule((*ours, "o", "bias"), (attn + "output.dense.bias",), vector),
            Rule((*ours, "attn_norm", "weight"), (attn + "output.LayerNorm.weight",), vector),
            Rule((*ours, "attn_norm", "bias"), (attn + "output.LayerNorm.bias",), vector),
            Rule((*ours, "up", "kernel"), (theirs + "intermediate.dense.weight",), linear_t),
            Rule((*ours, "up", "bias"), (theirs + "intermediate.dense.bias",), vector),
            Rule((*ours, "down", "kernel"), (theirs + "output.dense.weight",), linear_t),
            Rule((*ours, "down", "bias"), (theirs + "output.dense.bias",), vector),
            Rule((*ours, "out_norm", "weight"), (theirs + "output.LayerNorm.weight",), vector),
            Rule((*ours, "out_norm", "bias"), (theirs + "output.LayerNorm.bias",), vector),
        ]
    return rules


Config = BertConfig
Model = BertModel
