"""The Llama family: Llama 2/3 (with Llama 3 RoPE scaling), TinyLlama, SmolLM,
Mistral (sliding window), Qwen2 (q/k/v bias), Phi-3 (fused qkv and gate_up) and
Granite (embedding, residual, attention and logit multipliers).

They differ only by configuration. Q, K and V are one fused projection here, and
gate and up one more, whatever the checkpoint holds: fewer, larger matmuls decode
faster. Over ``shards`` devices (tensor parallelism) the fused columns come in one
block per device (see :mod:`..sharding`); the layers split them that way, which
on one device is the checkpoint's order.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..kvcache import KVCache
from ..layers import (
    ACTIVATIONS,
    Embedding,
    Linear,
    RMSNorm,
    apply_rope,
    attention,
    causal_mask,
    read_cache,
    rope_inverse_frequencies,
    write_cache,
)
from ..quant import Quantization
from ..sharding import gate_up_order, qkv_order
from ..weights import Rule, concat, concat_linear_t, linear_t, vector

MODEL_TYPES = ("llama", "mistral", "qwen2", "phi3", "granite")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, Any], ...] = ()  # hashable form of the HF dict
    partial_rotary_factor: float = 1.0
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None
    hidden_act: str = "silu"
    fused_checkpoint: bool = False  # Phi-3 stores qkv_proj and gate_up_proj
    embedding_multiplier: float = 1.0
    residual_multiplier: float = 1.0
    attention_multiplier: float | None = None  # None: 1 / sqrt(head_dim)
    logits_scaling: float = 1.0

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> "LlamaConfig":
        kind = config.get("model_type", "llama")
        heads = int(config["num_attention_heads"])
        rope = dict(config.get("rope_scaling") or config.get("rope_parameters") or {})
        theta = config.get("rope_theta") or rope.pop("rope_theta", None) or 10000.0
        rope.pop("rope_theta", None)
        if rope.get("rope_type", rope.get("type", "default")) == "default":
            rope = {}
        bias = bool(config.get("attention_bias", False))
        window = config.get("sliding_window") if kind in ("mistral", "phi3") else None
        if kind == "qwen2" and config.get("use_sliding_window"):
            raise ValueError("Qwen2 with use_sliding_window is not supported")
        return cls(
            model_type=kind,
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            intermediate_size=int(config["intermediate_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            rope_scaling=tuple(sorted(rope.items())),
            partial_rotary_factor=float(config.get("partial_rotary_factor", 1.0)),
            max_position_embeddings=int(config.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=bias or kind == "qwen2",
            o_bias=bias,
            mlp_bias=bool(config.get("mlp_bias", False)),
            sliding_window=int(window) if window else None,
            hidden_act=str(config.get("hidden_act", "silu")),
            fused_checkpoint=kind == "phi3",
            embedding_multiplier=float(config.get("embedding_multiplier", 1.0)),
            residual_multiplier=float(config.get("residual_multiplier", 1.0)),
            attention_multiplier=float(config["attention_multiplier"]) if "attention_multiplier" in config else None,
            logits_scaling=float(config.get("logits_scaling", 1.0)),
        )

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def attention_scale(self) -> float:
        return self.attention_multiplier if self.attention_multiplier is not None else self.head_dim**-0.5

    @property
    def context_length(self) -> int:
        return self.max_position_embeddings


class Attention(nnx.Module):
    def __init__(self, cfg: LlamaConfig, dtype: Any, quant: Quantization, shards: int = 1) -> None:
        q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.qkv = Linear(
            cfg.hidden_size,
            q + 2 * kv,
            bias=cfg.qkv_bias,
            dtype=dtype,
            bits=quant.bits_for(cfg.hidden_size),
            native=quant.native,
        )  # D -> (H + 2K) * Dh
        self.o = Linear(
            q, cfg.hidden_size, bias=cfg.o_bias, dtype=dtype, bits=quant.bits_for(q), native=quant.native
        )  # H * Dh -> D
        self.heads, self.kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.shards = shards

    def project(self, x: jax.Array, positions: jax.Array, inv_freq: jax.Array):
        """(B, T, D) -> q (B, T, H, Dh), k and v (B, T, K, Dh), RoPE applied. The
        fused output is N = ``shards`` blocks of [H/N q | K/N k | K/N v] heads."""
        b, t, _ = x.shape
        q_size, kv_size = self.heads // self.shards * self.head_dim, self.kv_heads // self.shards * self.head_dim
        qkv = self.qkv(x).reshape(b, t, self.shards, -1)  # (B, T, N, (H + 2K) / N * Dh)
        q = qkv[..., :q_size].reshape(b, t, self.heads, self.head_dim)
        k = qkv[..., q_size : q_size + kv_size].reshape(b, t, self.kv_heads, self.head_dim)
        v = qkv[..., q_size + kv_size :].reshape(b, t, self.kv_heads, self.head_dim)
        return apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq), v


class MLP(nnx.Module):
    def __init__(self, cfg: LlamaConfig, dtype: Any, quant: Quantization, shards: int = 1) -> None:
        self.gate_up = Linear(
            cfg.hidden_size,
            2 * cfg.intermediate_size,
            bias=cfg.mlp_bias,
            dtype=dtype,
            bits=quant.bits_for(cfg.hidden_size),
            native=quant.native,
        )
        self.down = Linear(
            cfg.intermediate_size,
            cfg.hidden_size,
            bias=cfg.mlp_bias,
            dtype=dtype,
            bits=quant.bits_for(cfg.intermediate_size),
            native=quant.native,
        )
        self.act = ACTIVATIONS[cfg.hidden_act]
        self.shards = shards

    def __call__(self, x: jax.Array) -> jax.Array:  # (B, T, D) -> (B, T, D)
        fused = self.gate_up(x).reshape(*x.shape[:-1], self.shards, 2, -1)  # (B, T, N, 2, F / N)
        hidden = self.act(fused[..., 0, :]) * fused[..., 1, :]  # (B, T, N, F / N)
        return self.down(hidden.reshape(*x.shape[:-1], -1))


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: LlamaConfig, dtype: Any, quant: Quantization, shards: int = 1) -> None:
        self.input_norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)
        self.attn = Attention(cfg, dtype, quant, shards)
        self.post_norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)
        self.mlp = MLP(cfg, dtype, quant, shards)

    def __call__(
        self, x: jax.Array, positions: jax.Array, k_cache: jax.Array, v_cache: jax.Array, span: int, ctx: "_Context"
    ):
        """One block. Writes this step's keys and values at ``positions`` (B, T) into
        the layer's caches (rows, S, K, Dh) and attends over their first ``span``
        positions (of cache row ``ctx.row`` only, when it is set). x: (B, T, D)."""
        q, k, v = self.attn.project(self.input_norm(x), positions, ctx.inv_freq)
        k_cache, v_cache = write_cache(k_cache, k, positions, ctx.row), write_cache(v_cache, v, positions, ctx.row)
        seen_k, seen_v = read_cache(k_cache, span, ctx.row), read_cache(v_cache, span, ctx.row)
        out = attention(q, seen_k, seen_v, ctx.mask, ctx.scale)  # (B, T, H, Dh)
        x = x + ctx.residual * self.attn.o(out.reshape(*out.shape[:2], -1))
        x = x + ctx.residual * self.mlp(self.post_norm(x))
        return x, k_cache, v_cache


@dataclasses.dataclass(frozen=True)
class _Context:
    """What every layer of one forward pass shares."""

    inv_freq: jax.Array
    mask: jax.Array
    scale: float
    residual: float
    row: jax.Array | None  # the cache row of a one-row batch (None: batch row b is cache row b)


class LlamaModel(nnx.Module):
    """Decoder-only transformer over a KV cache (see :mod:`..decode`). ``quant``
    quantizes the projections and the embedding table (and an untied head, as the
    table); norms stay float. ``shards``: the devices it is split over (their fused
    projections' column order; :func:`shard_counts` must divide by it)."""

    def __init__(
        self, cfg: LlamaConfig, *, dtype: Any = jnp.float32, quant: Quantization = Quantization(), shards: int = 1
    ) -> None:
        self.cfg = cfg
        table_bits = quant.bits_for(cfg.hidden_size, embedding=True)
        self.embed = Embedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype, bits=table_bits, native=quant.native)
        self.layers = nnx.List([DecoderLayer(cfg, dtype, quant, shards) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)
        self.lm_head = (
            None
            if cfg.tie_word_embeddings
            else Linear(cfg.hidden_size, cfg.vocab_size, bias=False, dtype=dtype, bits=table_bits, native=quant.native)
        )

    def __call__(
        self, tokens: jax.Array, positions: jax.Array, cache: KVCache, span: int, row: jax.Array | None = None
    ):
        """tokens, positions: (B, T) -> hidden (B, T, D), updated cache. With ``row``
        (B = 1), the tokens go into that row of the cache, the others untouched."""
        cfg = self.cfg
        x = self.embed(tokens)
        if cfg.embedding_multiplier != 1.0:
            x = x * cfg.embedding_multiplier
        ctx = _Context(
            jnp.asarray(_inv_freq(cfg)),
            causal_mask(positions, span, cfg.sliding_window),
            cfg.attention_scale,
            cfg.residual_multiplier,
            row,
        )
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, positions, *cache.layer(i), span, ctx)
            cache = cache.replace(i, k, v)
        return self.norm(x), cache

    def logits(self, hidden: jax.Array) -> jax.Array:  # (..., D) -> (..., V) float32
        out = self.embed.attend(hidden) if self.lm_head is None else self.lm_head(hidden)
        out = out.astype(jnp.float32)
        return out / self.cfg.logits_scaling if self.cfg.logits_scaling != 1.0 else out


def _inv_freq(cfg: LlamaConfig) -> np.ndarray:
    return rope_inverse_frequencies(cfg.rotary_dim, cfg.rope_theta, dict(cfg.rope_scaling) or None)


def cache_shape(cfg: LlamaConfig) -> tuple[int, int, int]:
    """(layers, key/value heads, head width) of the KV cache."""
    return cfg.num_layers, cfg.num_kv_heads, cfg.head_dim


def shard_counts(cfg: LlamaConfig) -> dict[str, int]:
    """What tensor parallelism splits in whole pieces: the number of devices must
    divide each (the vocabulary is split only where it divides, else replicated)."""
    return {"attention heads": cfg.num_heads, "key/value heads": cfg.num_kv_heads, "MLP width": cfg.intermediate_size}


def weight_rules(cfg: LlamaConfig) -> list[Rule]:
    """Checkpoint tensors -> parameters, with their logical axes (sharding)."""
    rules = [
        Rule(("embed", "table"), ("model.embed_tokens.weight",), axes=("vocab", "embed")),
        Rule(("norm", "weight"), ("model.norm.weight",), vector, axes=("embed",)),
    ]
    if not cfg.tie_word_embeddings:
        rules.append(Rule(("lm_head", "kernel"), ("lm_head.weight",), linear_t, axes=("embed", "vocab")))
    for i in range(cfg.num_layers):
        rules += _layer_rules(cfg, i)
    return rules


def _layer_rules(cfg: LlamaConfig, i: int) -> list[Rule]:
    ours, theirs = ("layers", i), f"model.layers.{i}."
    attn, mlp = theirs + "self_attn.", theirs + "mlp."
    qkv_cols = functools.partial(_qkv_order, cfg)  # per-device blocks of whole heads
    gate_up_cols = functools.partial(_gate_up_order, cfg)
    if cfg.fused_checkpoint:
        qkv_keys, qkv_fuse = (attn + "qkv_proj.weight",), linear_t
        gate_up_keys, gate_up_fuse = (mlp + "gate_up_proj.weight",), linear_t
    else:
        qkv_keys, qkv_fuse = tuple(attn + f"{p}_proj.weight" for p in "qkv"), concat_linear_t
        gate_up_keys, gate_up_fuse = (mlp + "gate_proj.weight", mlp + "up_proj.weight"), concat_linear_t
    rules = [
        Rule((*ours, "input_norm", "weight"), (theirs + "input_layernorm.weight",), vector, axes=("embed",)),
        Rule((*ours, "post_norm", "weight"), (theirs + "post_attention_layernorm.weight",), vector, axes=("embed",)),
        Rule((*ours, "attn", "qkv", "kernel"), qkv_keys, qkv_fuse, axes=("embed", "heads"), order=qkv_cols),
        Rule((*ours, "attn", "o", "kernel"), (attn + "o_proj.weight",), linear_t, axes=("heads", "embed")),
        Rule(
            (*ours, "mlp", "gate_up", "kernel"), gate_up_keys, gate_up_fuse, axes=("embed", "mlp"), order=gate_up_cols
        ),
        Rule((*ours, "mlp", "down", "kernel"), (mlp + "down_proj.weight",), linear_t, axes=("mlp", "embed")),
    ]
    if cfg.qkv_bias:
        rules.append(
            Rule(
                (*ours, "attn", "qkv", "bias"),
                tuple(attn + f"{p}_proj.bias" for p in "qkv"),
                concat,
                axes=("heads",),
                order=qkv_cols,
            )
        )
    if cfg.o_bias:
        rules.append(Rule((*ours, "attn", "o", "bias"), (attn + "o_proj.bias",), vector, axes=("embed",)))
    if cfg.mlp_bias:
        rules += [
            Rule(
                (*ours, "mlp", "gate_up", "bias"),
                (mlp + "gate_proj.bias", mlp + "up_proj.bias"),
                concat,
                axes=("mlp",),
                order=gate_up_cols,
            ),
            Rule((*ours, "mlp", "down", "bias"), (mlp + "down_proj.bias",), vector, axes=("embed",)),
        ]
    return rules


def _qkv_order(cfg: LlamaConfig, shards: int) -> np.ndarray:
    return qkv_order(shards, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim)


def _gate_up_order(cfg: LlamaConfig, shards: int) -> np.ndarray:
    return gate_up_order(shards, cfg.intermediate_size)


# Checkpoint entries that are buffers, not parameters.
IGNORED = (r".*rotary_emb\.inv_freq", r"lm_head\.weight")

KIND = "decoder"
QUANTIZABLE = True  # Model takes quant=
SHARDABLE = True  # Model takes shards=, shard_counts says which divide
PREFIXES: tuple[str, ...] = ()
Config = LlamaConfig
Model = LlamaModel
