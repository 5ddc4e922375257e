"""The math every family shares: projections, norms, embeddings, RoPE, attention
over a KV cache, activations.

Shapes: B batch, T query tokens, S cached positions (the attention span), D model
width, H query heads, K key/value heads, G = H // K heads per key/value head, Dh
head width, L layers.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import kernels
from .quant import BLOCK

Array = jax.Array


class QuantizedWeight(nnx.Module):
    """A quantized (rows, cols) matrix (see :mod:`..quant`), blocks of BLOCK values
    along each row: ``values`` int8, or uint8 holding two 4-bit values, ``scales``
    and (4 bits) ``offsets`` float32 (rows, cols // BLOCK). A Linear's kernel is
    kept as (out, in), an embedding table as (count, dim): the orientation of
    torch, of GGUF, and of the native kernel, which reads each row's bytes in order.

    ``contract`` multiplies without a float copy through :mod:`..kernels` when
    ``native`` (the engine turns it on for one CPU device) and the input has few
    rows (a decode step); otherwise, and for ``rows``, the matrix is dequantized
    inside the jitted program that reads it: a temporary, never a buffer that stays."""

    def __init__(self, shape: tuple[int, int], bits: int, *, dtype: Any, native: bool = False) -> None:
        if bits not in (8, 4) or shape[1] % BLOCK:
            raise ValueError(f"cannot quantize {shape} to {bits} bits in blocks of {BLOCK}")
        rows, cols = shape
        self.values = nnx.Param(
            jnp.zeros((rows, cols // 2 if bits == 4 else cols), jnp.int8 if bits == 8 else jnp.uint8)
        )
        self.scales = nnx.Param(jnp.zeros((rows, cols // BLOCK), jnp.float32))
        self.offsets = nnx.Param(jnp.zeros((rows, cols // BLOCK), jnp.float32)) if bits == 4 else None
        self.bits, self.shape, self.dtype, self.native = bits, tuple(shape), dtype, native

    def dequantize(
        self, values: Array | None = None, scales: Array | None = None, offsets: Array | None = None
    ) -> Array:
        """The float matrix (or the rows given)."""
        values = self.values[...] if values is None else values
        scales = self.scales[...] if scales is None else scales
        if offsets is None and self.offsets is not None:
            offsets = self.offsets[...]
        lead = values.shape[:-1]
        groups = scales.shape[-1]
        if self.bits == 4:  # per block, 16 bytes: values j (low nibble) and j + 16 (high)
            packed = values.reshape(*lead, groups, BLOCK // 2)
            q = jnp.concatenate([packed & 15, packed >> 4], axis=-1)
        else:
            q = values.reshape(*lead, groups, BLOCK)
        w = q.astype(self.dtype) * scales[..., None].astype(self.dtype)
        if offsets is not None:
            w = w + offsets[..., None].astype(self.dtype)
        return w.reshape(*lead, groups * BLOCK)

    def rows(self, ids: Array) -> Array:
        """Rows ``ids`` (any shape), dequantized: (*ids, cols)."""
        take = functools.partial(jnp.take, indices=ids, axis=0)
        return self.dequantize(
            take(self.values[...]), take(self.scales[...]), None if self.offsets is None else take(self.offsets[...])
        )

    def contract(self, x: Array) -> Array:
        """x (..., cols) against every row: (..., rows), float32 accumulation."""
        flat = x.reshape(-1, x.shape[-1])
        if self.native and flat.shape[0] <= kernels.MAX_ROWS:
            offsets = None if self.offsets is None else self.offsets[...]
            y = kernels.qmatmul(flat, self.values[...], self.scales[...], offsets, self.bits)
        else:  # W @ x.T reads the (rows, cols) matrix row by row: no transposed copy
            w = self.dequantize()
            y = jnp.dot(w, flat.astype(self.dtype).T, preferred_element_type=jnp.float32).T
        return y.reshape(*x.shape[:-1], self.shape[0])


class Linear(nnx.Module):
    """y = x @ kernel (+ bias); kernel (in, out), the transpose of torch's Linear.
    With ``bits`` (8 or 4) the kernel is a :class:`QuantizedWeight` kept as
    (out, in), torch's orientation; ``native`` as there."""

    def __init__(
        self, in_dim: int, out_dim: int, *, bias: bool, dtype: Any, bits: int | None = None, native: bool = False
    ) -> None:
        if bits is None:
            self.kernel = nnx.Param(jnp.zeros((in_dim, out_dim), dtype))
        else:
            self.kernel = QuantizedWeight((out_dim, in_dim), bits, dtype=dtype, native=native)
        self.bias = nnx.Param(jnp.zeros((out_dim,), dtype)) if bias else None

    def __call__(self, x: Array) -> Array:  # (..., in) -> (..., out)
        if isinstance(self.kernel, QuantizedWeight):
            y = self.kernel.contract(x).astype(self.kernel.dtype)
        else:
            y = jnp.dot(x.astype(self.kernel.dtype), self.kernel[...])
        return y + self.bias[...] if self.bias is not None else y


class Embedding(nnx.Module):
    """Token (or position) embeddings, table (V, D); ``attend`` is the tied head.
    With ``bits`` the table is a :class:`QuantizedWeight` (blocks along D)."""

    def __init__(self, count: int, dim: int, *, dtype: Any, bits: int | None = None, native: bool = False) -> None:
        if bits is None:
            self.table = nnx.Param(jnp.zeros((count, dim), dtype))
        else:
            self.table = QuantizedWeight((count, dim), bits, dtype=dtype, native=native)

    def __call__(self, ids: Array) -> Array:  # (B, T) -> (B, T, D)
        if isinstance(self.table, QuantizedWeight):
            return self.table.rows(ids)
        return jnp.take(self.table[...], ids, axis=0)

    def attend(self, x: Array) -> Array:  # (..., D) -> (..., V)
        if isinstance(self.table, QuantizedWeight):
            return self.table.contract(x)
        # table @ x.T reads the (V, D) table row by row: no transposed copy of it
        flat = x.reshape(-1, x.shape[-1]).astype(self.table.dtype)
        return jnp.dot(self.table[...], flat.T).T.reshape(*x.shape[:-1], -1)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, *, eps: float, dtype: Any) -> None:
        self.weight = nnx.Param(jnp.ones((dim,), dtype))
        self.eps = eps

    def __call__(self, x: Array) -> Array:  # (..., D), computed in float32
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (x32 * self.weight[...].astype(jnp.float32)).astype(x.dtype)


class LayerNorm(nnx.Module):
    def __init__(self, dim: int, *, eps: float, dtype: Any) -> None:
        self.weight = nnx.Param(jnp.ones((dim,), dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), dtype))
        self.eps = eps

    def __call__(self, x: Array) -> Array:  # (..., D), computed in float32
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.weight[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(x.dtype)


# -- activations -------------------------------------------------------------------------

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


# -- rotary position embeddings ----------------------------------------------------------


def rope_inverse_frequencies(rot_dim: int, theta: float, scaling: Mapping[str, Any] | None) -> np.ndarray:
    """(rot_dim // 2,) inverse frequencies, with linear or Llama 3 scaling applied."""
    inv = 1.0 / (theta ** (np.arange(0, rot_dim, 2, dtype=np.float64) / rot_dim))
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return inv.astype(np.float32)
    if kind == "linear":
        return (inv / float(scaling["factor"])).astype(np.float32)  # type: ignore[index]
    if kind == "llama3":
        return _llama3_scaled(inv, scaling).astype(np.float32)  # type: ignore[arg-type]
    raise ValueError(f"RoPE scaling '{kind}' is not supported (default, linear, llama3 are)")


def _llama3_scaled(inv: np.ndarray, scaling: Mapping[str, Any]) -> np.ndarray:
    """Llama 3.1's frequency-dependent scaling: long wavelengths divided by ``factor``,
    short ones kept, a smooth blend between."""
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    original = float(scaling["original_max_position_embeddings"])
    wavelength = 2 * math.pi / inv
    smooth = (original / wavelength - low) / (high - low)
    blended = (1 - smooth) * inv / factor + smooth * inv
    return np.where(wavelength > original / low, inv / factor, np.where(wavelength < original / high, inv, blended))


def apply_rope(x: Array, positions: Array, inv_freq: Array) -> Array:
    """Rotate the first 2 * len(inv_freq) features of each head, in the Hugging Face
    half-split layout. x: (B, T, N, Dh); positions: (B, T)."""
    rot = 2 * inv_freq.shape[0]
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # (B, T, rot/2)
    cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    first, second, rest = x32[..., : rot // 2], x32[..., rot // 2 : rot], x32[..., rot:]
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin, rest], axis=-1)
    return rotated.astype(x.dtype)


# -- attention -----------------------------------------------------------------------------


def causal_mask(positions: Array, span: int, window: int | None = None) -> Array:
    """(B, T, S) True where query (at ``positions`` (B, T)) may see cached position s:
    s <= position, and within the sliding window when there is one."""
    keys = jnp.arange(span)[None, None, :]
    queries = positions[:, :, None]
    mask = keys <= queries
    if window:
        mask &= queries - keys < window
    return mask


def attention(q: Array, k: Array, v: Array, mask: Array, scale: float) -> Array:
    """Grouped-query attention. q: (B, T, H, Dh); k, v: (B, S, K, Dh); mask: (B, T, S)
    -> (B, T, H, Dh). Scores and softmax in float32."""
    b, t, h, dh = q.shape
    groups = h // k.shape[2]
    q = q.reshape(b, t, k.shape[2], groups, dh)  # (B, T, K, G, Dh)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32) * scale
    scores = jnp.where(mask[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", weights, v)
    return out.reshape(b, t, h, dh)


def write_cache(cache: Array, new: Array, positions: Array, row: Array | None = None) -> Array:
    """Write ``new`` (B, T, K, Dh) into one layer's ``cache`` at ``positions`` (B, T):
    row b of the batch is cache row b, or, with ``row`` (a scalar, B = 1), cache row
    ``row``. Positions past the cache are dropped (a row that sits a step out is
    given such positions)."""
    if row is None:
        rows = jnp.arange(new.shape[0])[:, None]
        return cache.at[rows, positions].set(new.astype(cache.dtype), mode="drop")
    return cache.at[row, positions[0]].set(new[0].astype(cache.dtype), mode="drop")


def read_cache(cache: Array, span: int, row: Array | None = None) -> Array:
    """The first ``span`` positions of every cache row (B, span, K, Dh), or of cache
    row ``row`` only (1, span, K, Dh)."""
    if row is None:
        return cache[:, :span]
    return jax.lax.dynamic_slice_in_dim(cache, row, 1, axis=0)[:, :span]
