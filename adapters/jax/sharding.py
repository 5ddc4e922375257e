"""Tensor parallelism: which mesh axis a parameter's logical axes go to, the column
order of fused projections, and the mesh itself.

A family declares, next to its weight rules, the logical axes of every parameter
(``("embed", "heads")`` for a fused qkv kernel (D, (H + 2K) * Dh)). One table,
:data:`LOGICAL_AXES`, maps logical axes to the mesh's one axis, :data:`TP`; the
layers never name a mesh axis. A dimension that does not divide by the number of
devices stays whole (replicated) on every device.

A fused projection is split in equal contiguous blocks, one per device, so its
columns are reordered when loading: device d's block holds its query heads, then
the key and value heads they share (qkv), or its block of gate columns, then the
same block of up columns (gate_up). With one device the order is the checkpoint's.

The functions on numpy need no JAX; :func:`mesh`, :func:`named` and the placement
helpers import it when called.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from modelport.domain import InvalidRequest

TP = "tp"  # the mesh axis tensor parallelism splits over
LOGICAL_AXES: Mapping[str, str | None] = {
    "vocab": TP,  # embedding rows, the output head's columns
    "heads": TP,  # query heads (a fused qkv's columns, in per-device blocks; o's rows)
    "kv_heads": TP,  # the KV cache's heads
    "mlp": TP,  # intermediate columns (gate_up, in per-device blocks; down's rows)
    "embed": None,  # the model width: whole on every device
    "batch": None,
    "length": None,
    "head_dim": None,
}
CACHE_AXES = ("batch", "length", "kv_heads", "head_dim")  # a layer's K or V (B, S, K, Dh)


def spec(axes: Sequence[str | None], shape: Sequence[int], shards: int) -> tuple[str | None, ...]:
    """The mesh axis of each dimension of an array of ``shape`` with logical
    ``axes`` (``()``: replicated): :data:`LOGICAL_AXES`' entry, or None where the
    dimension does not divide by ``shards``."""
    if not axes:
        return (None,) * len(shape)
    if len(axes) != len(shape):
        raise ValueError(f"{len(axes)} logical axes {tuple(axes)} for an array of shape {tuple(shape)}")
    out = []
    for axis, size in zip(axes, shape):
        if axis is not None and axis not in LOGICAL_AXES:
            raise ValueError(f"unknown logical axis {axis!r} (known: {', '.join(LOGICAL_AXES)})")
        mesh_axis = LOGICAL_AXES.get(axis) if axis is not None else None
        out.append(mesh_axis if mesh_axis is not None and shards > 1 and size % shards == 0 else None)
    return tuple(out)


def valid_shards(counts: Mapping[str, int]) -> list[int]:
    """The device counts that divide every one of ``counts``."""
    top = min(counts.values()) if counts else 1
    return [n for n in range(1, top + 1) if all(c % n == 0 for c in counts.values())]


def check_shards(shards: int, counts: Mapping[str, int], model: str = "the model") -> None:
    """A clear error when ``shards`` does not divide one of ``counts`` (what a
    family splits in whole pieces: heads, key/value heads, MLP width)."""
    if shards < 1:
        raise InvalidRequest(f"tensor_parallel must be at least 1, got {shards}")
    bad = [f"{count} {what}" for what, count in counts.items() if count % shards]
    if bad:
        valid = [str(n) for n in valid_shards(counts)]
        choices = valid[0] if len(valid) == 1 else f"{', '.join(valid[:-1])} or {valid[-1]}"
        raise InvalidRequest(
            f"--tensor-parallel {shards} does not divide the {' and '.join(bad)} of {model}; "
            f"it can be split over {choices} devices"
        )


# -- fused projections: the column orders -----------------------------------------------


def qkv_order(shards: int, heads: int, kv_heads: int, head_dim: int) -> np.ndarray:
    """The columns of a fused [q | k | v] projection ((H + 2K) * Dh) reordered so
    that ``shards`` contiguous blocks each hold whole heads: [q heads of KV group
    block d | k of block d | v of block d] for each device d in turn. Query head h
    belongs to KV head h // (H / K), so block d's query heads are exactly those of
    its KV heads."""
    q, kv = heads * head_dim, kv_heads * head_dim
    cols = np.arange(q + 2 * kv)
    parts = [cols[:q], cols[q : q + kv], cols[q + kv :]]
    return np.concatenate([p.reshape(shards, -1) for p in parts], axis=1).reshape(-1)


def gate_up_order(shards: int, intermediate: int) -> np.ndarray:
    """The columns of a fused [gate | up] projection (2F) reordered into ``shards``
    blocks of [gate block d | up block d]."""
    return np.arange(2 * intermediate).reshape(2, shards, -1).transpose(1, 0, 2).reshape(-1)


# -- JAX: the mesh and placing arrays on it ------------------------------------------------


def mesh(devices: Sequence[Any]) -> Any:
    """A one-axis (:data:`TP`) mesh over ``devices``."""
    import jax

    return jax.sharding.Mesh(np.asarray(devices, dtype=object), (TP,))


def named(mesh_: Any, axes: Sequence[str | None], shape: Sequence[int]) -> Any:
    """The NamedSharding of an array of ``shape`` with logical ``axes`` on ``mesh_``."""
    import jax

    return jax.sharding.NamedSharding(mesh_, jax.sharding.PartitionSpec(*spec(axes, shape, mesh_.size)))


def replicated(mesh_: Any) -> Any:
    import jax

    return jax.sharding.NamedSharding(mesh_, jax.sharding.PartitionSpec())


def place(value: np.ndarray, sharding: Any) -> Any:
    """A host array as a (possibly multi-process) global array: each process
    builds only its own devices' pieces, from the same host value."""
    import jax

    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def fetch(array: Any) -> np.ndarray:
    """A replicated array's value on the host (in a multi-process mesh, this
    process's copy)."""
    if getattr(array, "is_fully_addressable", True):
        return np.asarray(array)
    return np.asarray(array.addressable_data(0))


def bytes_per_device(arrays: Sequence[Any]) -> int:
    """The most bytes of ``arrays`` that any one device holds."""
    held: dict[Any, int] = {}
    for array in arrays:
        for shard in getattr(array, "addressable_shards", ()):
            held[shard.device] = held.get(shard.device, 0) + int(shard.data.nbytes)
    return max(held.values(), default=0)
