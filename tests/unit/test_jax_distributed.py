"""The distributed steps' wire format (numpy only) and the group's argument checks,
which come before JAX starts. (Two processes serving one model: tests/e2e.)"""

from __future__ import annotations

import numpy as np
import pytest

from modelport.adapters.jax import distributed
from modelport.domain import InvalidRequest


def test_a_step_goes_over_the_wire_as_arrays_and_json() -> None:
    arrays = {
        "tokens": np.arange(5, dtype=np.int32),
        "mask": np.ones((2, 7), bool),
        "keys": np.zeros((2, 2), np.uint32),
    }
    op, meta, back = distributed._unpack(distributed._pack("sample", {"mode": [True, False]}, arrays))
    assert (op, meta) == ("sample", {"mode": [True, False]})
    assert set(back) == set(arrays)
    for name, value in arrays.items():
        assert back[name].dtype == value.dtype and np.array_equal(back[name], value)


def test_a_step_never_carries_a_pickle() -> None:
    data = distributed._pack("decode", {}, {"tokens": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(ValueError, match="pickle"):
        distributed._unpack(data)


@pytest.mark.parametrize(
    "coordinator, processes, process, message",
    [
        ("", 2, 0, "needs --coordinator"),
        ("127.0.0.1:1234", 2, 2, "--process-id must be 0 to 1"),
        ("127.0.0.1:1234", 3, -1, "--process-id must be 0 to 2"),
    ],
)
def test_a_group_that_cannot_be_is_refused_before_jax_starts(coordinator, processes, process, message) -> None:
    with pytest.raises(InvalidRequest, match=message):
        distributed.initialize(coordinator, processes, process)


def test_one_process_is_no_group() -> None:
    distributed.initialize("", 1, 0)  # nothing to join, nothing started
