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


def _layers(blocks, native: bool):
    """A Linear and an Embedding holding ``blocks`` (torch's (out, in))."""
    import jax.numpy as jnp

    from modelport.adapters.jax.layers import Embedding, Linear

    rows, cols = blocks.shape
    linear = Linear(cols, rows, bias=False, dtype=jnp.float32, bits=blocks.bits, native=native)
    table = Embedding(rows, cols, dtype=jnp.float32, bits=blocks.bits, native=native)
    for matrix in (linear.kernel, table.table):
        matrix.values[...] = jnp.asarray(blocks.values)
        matrix.scales[...] = jnp.asarray(blocks.scales)
        if blocks.bits == 4:
            matrix.offsets[...] = jnp.asarray(blocks.offsets)
    return linear, table


@pytest.mark.parametrize("bits", [8, 4])
def test_xlas_dequantization_matches_numpy(bits) -> None:
    """Without the native kernel the layers multiply by the dequantized matrix
    exactly as numpy does, and an embedding's rows are the dequantized rows."""
    import jax.numpy as jnp

    rng = np.random.default_rng(5)
    blocks = quant.quantize(rng.standard_normal((48, 96)).astype(np.float32), bits)
    linear, table = _layers(blocks, native=False)
    expected = blocks.dequantize()
    for rows in ((2, 3), (1, 1), (3, 7)):
        x = rng.standard_normal((*rows, 96)).astype(np.float32)
        np.testing.assert_allclose(np.asarray(linear(jnp.asarray(x))), x @ expected.T, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(table.attend(jnp.asarray(x))), x @ expected.T, rtol=1e-4, atol=1e-4)
    ids = jnp.asarray([[0, 5, 47]])
    np.testing.assert_allclose(np.asarray(table(ids)), expected[[0, 5, 47]][None], atol=1e-5)


def _int8_activations_product(x: np.ndarray, blocks) -> np.ndarray:
    """The native kernel's arithmetic in numpy (llama.cpp's): each row of x in
    blocks of 32 quantized to int8 with the scale max|x| / 127, integer dot products
    per block, scaled by both scales, plus the int4 offsets times x's block sums."""
    m, k = x.shape
    xb = x.reshape(m, k // quant.BLOCK, quant.BLOCK).astype(np.float32)
    d = (np.abs(xb).max(axis=-1) / np.float32(127)).astype(np.float32)
    inverse = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32)
    xq = np.rint(xb * inverse[..., None]).astype(np.int64)
    q = quant.unpack4(blocks.values) if blocks.bits == 4 else blocks.values
    q = q.reshape(blocks.shape[0], k // quant.BLOCK, quant.BLOCK).astype(np.int64)
    dots = np.einsum("mgj,ngj->mng", xq, q).astype(np.float64)
    y = (dots * blocks.scales[None].astype(np.float64) * d[:, None, :]).sum(axis=-1)
    if blocks.offsets is not None:
        y += (blocks.offsets[None].astype(np.float64) * xb.sum(axis=-1)[:, None, :]).sum(axis=-1)
    return y


@pytest.mark.parametrize("shape", [(48, 96), (1040, 320)], ids=["odd-blocks", "threaded"])
@pytest.mark.parametrize("bits", [8, 4])
def test_the_native_kernel_computes_llama_cpps_arithmetic(bits, shape, tmp_path) -> None:
    """A decode step's few rows (1 to 16, one pass of 8 and a second) through the
    native kernel equal the same integer arithmetic in numpy; an odd number of
    blocks (96 inputs) takes the kernel's tail, 1040 x 320 its threads. Every row's
    result is the same whatever rows run beside it, and within int8 rounding of the
    float product; a prefill's many rows take XLA's dot."""
    import jax.numpy as jnp

    from modelport.adapters.jax import kernels

    assert kernels.available(str(tmp_path)), kernels.why_not()
    rng = np.random.default_rng(7)
    blocks = quant.quantize(rng.standard_normal(shape).astype(np.float32), bits)
    linear, table = _layers(blocks, native=True)
    x = rng.standard_normal((kernels.MAX_ROWS, shape[1])).astype(np.float32)
    x[3, :32] = 0.0  # an all-zero block
    x[4] *= 100.0
    expected = _int8_activations_product(x, blocks)
    for count in (1, 5, 11, kernels.MAX_ROWS):
        for layer in (linear, table.attend):
            ours = np.asarray(layer(jnp.asarray(x[:count])))
            np.testing.assert_allclose(ours, expected[:count], rtol=2e-5, atol=2e-5 * np.abs(expected).max())
            alone = np.asarray(layer(jnp.asarray(x[count - 1 : count])))
            np.testing.assert_array_equal(alone[0], ours[count - 1])
    exact = x @ blocks.dequantize().T
    assert np.linalg.norm(expected - exact) <= 0.02 * np.linalg.norm(exact)
    many = rng.standard_normal((kernels.MAX_ROWS + 1, shape[1])).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(linear(jnp.asarray(many))), many @ blocks.dequantize().T, rtol=1e-4, atol=1e-3
    )
