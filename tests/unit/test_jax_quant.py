"""The quantized formats: blocks from float weights and straight from GGUF's Q8_0,
Q4_0, Q4_1 and Q4_K bytes (checked against the gguf package's own dequantizer),
and the model's in-program dequantization against numpy's."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.domain import InvalidRequest

quant = pytest.importorskip("modelport.adapters.jax.quant")


def _random_blocks(kind: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random bytes of a GGUF tensor of type ``kind``, with finite f16 scales."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[kind]]
    raw = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    halves = {"Q8_0": 1, "Q4_0": 1, "Q4_1": 2, "Q4_K": 2}[kind]  # leading f16 fields
    raw[..., : 2 * halves] = (
        rng.uniform(-0.05, 0.05, (rows, cols // block, halves))
        .astype(np.float16)
        .view(np.uint8)
        .reshape(rows, cols // block, 2 * halves)
    )
    return raw.reshape(rows, -1)


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_1", "Q4_K"])
def test_gguf_blocks_load_as_they_are_and_agree_with_the_gguf_package(kind) -> None:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    rng = np.random.default_rng(0)
    rows, cols = 6, 512
    raw = _random_blocks(kind, rows, cols, rng)
    blocks = quant.from_gguf(raw, kind, (rows, cols))
    assert blocks.bits == (8 if kind == "Q8_0" else 4) and blocks.shape == (rows, cols)
    assert blocks.values.dtype == (np.int8 if kind == "Q8_0" else np.uint8)
    expected = dequantize(raw, GGMLQuantizationType[kind]).reshape(rows, cols)
    np.testing.assert_allclose(blocks.dequantize(), expected, rtol=1e-5, atol=1e-6)


def test_types_without_a_direct_form_say_so() -> None:
    assert quant.from_gguf(np.zeros((2, 210), np.uint8), "Q6_K", (2, 256)) is None


@pytest.mark.parametrize("bits, tolerance", [(8, 1 / 127), (4, 1 / 15)])
def test_quantizing_floats_stays_within_half_a_step(bits, tolerance) -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 128)).astype(np.float32)
    blocks = quant.quantize(w, bits)
    error = np.abs(blocks.dequantize() - w).reshape(8, 4, 32).max(axis=-1)
    spread = np.abs(w).reshape(8, 4, 32).max(axis=-1) * (1 if bits == 8 else 2)
    assert np.all(error <= spread * tolerance * 0.5 + 1e-6)
    assert blocks.nbytes < w.nbytes / (3 if bits == 8 else 5)


def test_a_constant_block_and_zeros_survive() -> None:
    w = np.zeros((2, 64), np.float32)
    w[1, 32:] = 3.0
    for bits in (8, 4):
        np.testing.assert_allclose(quant.quantize(w, bits).dequantize(), w, atol=1e-6)


def test_pack_and_unpack_are_inverse() -> None:
    q = np.random.default_rng(2).integers(0, 16, (3, 96), dtype=np.uint8)
    packed = quant.pack4(q)
    assert packed.shape == (3, 48)
    assert np.array_equal(quant.unpack4(packed), q)
    assert packed[0, 0] == q[0, 0] | (q[0, 16] << 4)  # the Q4_0 layout: value j low, j + 16 high


def test_rows_taken_and_stacked_keep_their_values() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((4, 64)), rng.standard_normal((2, 64))
    qa, qb = quant.quantize(a, 4), quant.quantize(b, 8)
    stacked = quant.concat_rows([qa, qb])  # mixed widths meet at the narrower
    assert stacked.bits == 4 and stacked.shape == (6, 64)
    np.testing.assert_allclose(stacked.dequantize()[:4], qa.dequantize(), atol=1e-6)
    order = np.array([3, 1, 0, 2])
    np.testing.assert_allclose(qa.take_rows(order).dequantize(), qa.dequantize()[order], atol=1e-6)


def test_to_blocks_keeps_blocks_of_the_width_asked_and_requantizes_others() -> None:
    w = np.random.default_rng(4).standard_normal((2, 64)).astype(np.float32)
    eight = quant.quantize(w, 8)
    assert quant.to_blocks(eight, 8) is eight
    assert quant.to_blocks(eight, 4).bits == 4 and quant.to_blocks(w, 4).bits == 4
    with pytest.raises(ValueError):
        quant.quantize(np.zeros((2, 40), np.float32), 8)


def test_modes() -> None:
    assert quant.Quantization.of("none").active is False
    assert quant.Quantization.of("int8") == quant.Quantization(8, 8)
    assert quant.Quantization.of("int4") == quant.Quantization(4, 8)  # the table stays 8-bit
    assert quant.Quantization(8, 8).bits_for(40) is None  # inputs that do not fill blocks stay float
    with pytest.raises(InvalidRequest):
        quant.Quantization.of("int3")


@pytest.mark.parametrize("native", [False, True], ids=["xla", "native"])
@pytest.mark.parametrize("bits", [8, 4])
def test_the_programs_dequantization_matches_numpy(bits, native, tmp_path) -> None:
    """The layers' products equal numpy's on the dequantized matrix, through XLA's
    dequantize-then-dot and through the native kernel (a decode step's few rows; a
    prefill's many rows take XLA's dot even then)."""
    import jax.numpy as jnp

    from modelport.adapters.jax import kernels
    from modelport.adapters.jax.layers import Embedding, Linear

    if native:
        assert kernels.available(str(tmp_path)), kernels.why_not()
    rng = np.random.default_rng(5)
    w = rng.standard_normal((48, 96)).astype(np.float32)  # torch (out, in), as the layers keep it
    blocks = quant.quantize(w, bits)
    linear = Linear(96, 48, bias=False, dtype=jnp.float32, bits=bits, native=native)
    table = Embedding(48, 96, dtype=jnp.float32, bits=bits, native=native)
    for matrix in (linear.kernel, table.table):
        matrix.values[...] = jnp.asarray(blocks.values)
        matrix.scales[...] = jnp.asarray(blocks.scales)
        if bits == 4:
            matrix.offsets[...] = jnp.asarray(blocks.offsets)
    expected = blocks.dequantize()
    for rows in ((2, 3), (1, 1), (3, 7)):  # 6 and 1 rows: the native kernel when on; 21: XLA's dot
        x = rng.standard_normal((*rows, 96)).astype(np.float32)
        np.testing.assert_allclose(np.asarray(linear(jnp.asarray(x))), x @ expected.T, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(table.attend(jnp.asarray(x))), x @ expected.T, rtol=1e-4, atol=1e-4)
    ids = jnp.asarray([[0, 5, 47]])
    np.testing.assert_allclose(np.asarray(table(ids)), expected[[0, 5, 47]][None], atol=1e-5)
