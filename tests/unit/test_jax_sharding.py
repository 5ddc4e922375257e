"""Tensor parallelism's tables and column orders, on numpy alone: which mesh axis a
logical axis goes to, the fused projections' per-device blocks, the refusal of a
device count that does not divide."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.adapters.jax import sharding
from modelport.adapters.jax.sharding import TP, check_shards, gate_up_order, qkv_order, spec, valid_shards
from modelport.domain import InvalidRequest


def _qkv_labels(heads: int, kv_heads: int, head_dim: int) -> list[tuple[str, int]]:
    """(kind, head) of each column of a fused [q | k | v] kernel."""
    return (
        [("q", h) for h in range(heads) for _ in range(head_dim)]
        + [("k", h) for h in range(kv_heads) for _ in range(head_dim)]
        + [("v", h) for h in range(kv_heads) for _ in range(head_dim)]
    )


@pytest.mark.parametrize("heads, kv_heads, shards", [(9, 3, 3), (8, 4, 2), (8, 4, 4), (8, 2, 2), (4, 4, 4)])
def test_each_device_block_of_qkv_holds_its_kv_heads_and_their_query_heads(heads, kv_heads, shards) -> None:
    head_dim, groups = 4, heads // kv_heads
    labels = _qkv_labels(heads, kv_heads, head_dim)
    order = qkv_order(shards, heads, kv_heads, head_dim)
    assert sorted(order.tolist()) == list(range(len(labels)))  # a permutation
    blocks = np.array_split(order, shards)
    for d, block in enumerate(blocks):
        got = [labels[i] for i in block]
        kv = set(range(d * kv_heads // shards, (d + 1) * kv_heads // shards))
        assert {h for kind, h in got if kind == "k"} == kv == {h for kind, h in got if kind == "v"}
        assert {h for kind, h in got if kind == "q"} == {h for h in range(heads) if h // groups in kv}
        # within a block: q, then k, then v, each in head order (what the layer reshapes)
        assert [kind for kind, _ in got] == sorted((kind for kind, _ in got), key="qkv".index)


def test_on_one_device_the_orders_are_the_checkpoints() -> None:
    assert np.array_equal(qkv_order(1, 9, 3, 64), np.arange((9 + 6) * 64))
    assert np.array_equal(gate_up_order(1, 1536), np.arange(2 * 1536))


def test_each_device_block_of_gate_up_is_its_gate_columns_then_the_same_up_columns() -> None:
    order = gate_up_order(3, 6)  # gate 0..5, up 6..11
    assert order.tolist() == [0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11]


def test_split_kernels_compute_the_same_as_the_whole_one() -> None:
    """x @ the reordered kernel, cut in N blocks and split per block into q, k, v,
    gives the checkpoint's q, k, v heads."""
    rng = np.random.default_rng(0)
    heads, kv_heads, dh, d, n = 8, 4, 3, 5, 2
    kernel = rng.standard_normal((d, (heads + 2 * kv_heads) * dh))
    x = rng.standard_normal((2, d))
    whole = x @ kernel
    q, k = whole[:, : heads * dh].reshape(2, heads, dh), whole[:, heads * dh : (heads + kv_heads) * dh]
    split = (x @ kernel[:, qkv_order(n, heads, kv_heads, dh)]).reshape(2, n, -1)
    q_split = split[..., : heads // n * dh].reshape(2, heads, dh)
    k_split = split[..., heads // n * dh : (heads + kv_heads) // n * dh].reshape(2, kv_heads * dh)
    assert np.allclose(q_split, q) and np.allclose(k_split, k)


def test_logical_axes_map_to_the_mesh_axis_where_the_dimension_divides() -> None:
    assert spec(("embed", "heads"), (576, 960), 3) == (None, TP)
    assert spec(("vocab", "embed"), (49152, 576), 3) == (TP, None)
    assert spec(("vocab", "embed"), (30522, 64), 4) == (None, None)  # does not divide: replicated
    assert spec(("embed", "heads"), (576, 960), 1) == (None, None)
    assert spec((), (3, 4), 4) == (None, None)
    assert spec(sharding.CACHE_AXES, (4, 256, 3, 64), 3) == (None, None, TP, None)
    with pytest.raises(ValueError, match="unknown logical axis"):
        spec(("embed", "hedas"), (4, 4), 2)
    with pytest.raises(ValueError, match="2 logical axes"):
        spec(("embed", "heads"), (4,), 2)


def test_a_count_that_does_not_divide_is_refused_with_those_that_do() -> None:
    counts = {"attention heads": 9, "key/value heads": 3, "MLP width": 1536}
    assert valid_shards(counts) == [1, 3]
    check_shards(3, counts)
    with pytest.raises(InvalidRequest) as caught:
        check_shards(2, counts, "'smollm2'")
    assert str(caught.value) == (
        "--tensor-parallel 2 does not divide the 9 attention heads and 3 key/value "
        "heads of 'smollm2'; it can be split over 1 or 3 devices"
    )
