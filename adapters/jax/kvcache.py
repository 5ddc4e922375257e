"""The KV cache: preallocated key and value buffers, one pair per layer, each with
every row of the batch. Decode steps donate it and get it back updated in place.

One buffer per layer (rather than one stacked (L, ...) buffer) lets XLA update each
in place and read it without copying a slice out of a larger array."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    k: tuple[jax.Array, ...]  # L x (B, S, K, Dh)
    v: tuple[jax.Array, ...]  # L x (B, S, K, Dh)

    @classmethod
    def zeros(
        cls, layers: int, batch: int, length: int, kv_heads: int, head_dim: int, dtype: Any, device: Any = None
    ) -> "KVCache":
        """``device``: a device, or a sharding (on a mesh: split by KV heads, see
        :func:`.sharding.named` with :data:`.sharding.CACHE_AXES`)."""
        shape = (batch, length, kv_heads, head_dim)

        def buffer() -> jax.Array:
            return jnp.zeros(shape, dtype, device=device)

        return cls(k=tuple(buffer() for _ in range(layers)), v=tuple(buffer() for _ in range(layers)))

    @property
    def length(self) -> int:
        return self.k[0].shape[1]

    @property
    def batch(self) -> int:
        return self.k[0].shape[0]

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.k + self.v))

    def layer(self, index: int) -> tuple[jax.Array, jax.Array]:
        return self.k[index], self.v[index]

    def replace(self, index: int, k: jax.Array, v: jax.Array) -> "KVCache":
        return KVCache(k=_put(self.k, index, k), v=_put(self.v, index, v))


def _put(items: tuple, index: int, value: Any) -> tuple:
    return items[:index] + (value,) + items[index + 1 :]
