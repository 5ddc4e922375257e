"""Quantized weights: int8 and int4 in blocks of 32, dequantized inside the jitted
matmul so that only the small form stays in memory.

One format for every source. A matrix of ``rows`` outputs by ``cols`` inputs is cut
along its inputs into blocks of :data:`BLOCK` values; block ``g`` of output ``n``
holds ``w = scale[g, n] * q + offset[g, n]``:

- **int8**: ``q`` int8, no offset (llama.cpp's Q8_0; symmetric, scale max|w| / 127).
- **int4**: ``q`` in 0..15, two to a byte; in each block byte ``j`` holds value ``j``
  in its low nibble and value ``j + 16`` in its high one (the Q4_0/Q4_1 layout), so a
  GGUF's Q4_0 and Q4_1 blocks load as they are and Q4_K's are only repacked.

On the numpy side (loading) a :class:`Blocks` holds a matrix as (rows, cols), blocks
along each row, the orientation of torch's Linear and of GGUF; in the model a
:class:`~.layers.QuantizedWeight` holds it the same way (a Linear's kernel as
(out, in), an embedding's table as (count, dim)), so a GGUF's blocks load as they are.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from modelport.domain import InvalidRequest, ModelLoadError

BLOCK = 32
MODES = ("auto", "none", "int8", "int4")


@dataclasses.dataclass(frozen=True)
class Quantization:
    """What a model quantizes: its projections (``linear``) and its embedding table
    (``embed``) to 8 or 4 bits, or None (float)."""

    linear: int | None = None
    embed: int | None = None
    native: bool = False  # multiply through the native kernel (:mod:`.kernels`) where it applies

    @classmethod
    def of(cls, mode: str) -> "Quantization":
        """``none``, ``int8`` (everything 8-bit) or ``int4`` (projections 4-bit, the
        embedding table 8-bit, as llama.cpp's 4-bit files keep it)."""
        if mode == "none":
            return cls()
        if mode == "int8":
            return cls(8, 8)
        if mode == "int4":
            return cls(4, 8)
        raise InvalidRequest(f"quantize must be one of {', '.join(MODES)}, got {mode!r}")

    @property
    def active(self) -> bool:
        return self.linear is not None or self.embed is not None

    @property
    def name(self) -> str:
        return {None: "none", 8: "int8", 4: "int4"}[self.linear]

    def bits_for(self, cols: int, *, embedding: bool = False) -> int | None:
        """The bits of a matrix with ``cols`` inputs (None: it stays float, when its
        inputs do not fill whole blocks)."""
        bits = self.embed if embedding else self.linear
        return bits if bits is not None and cols % BLOCK == 0 else None


# -- numpy: blocks at load time ------------------------------------------------------------


@dataclasses.dataclass
class Blocks:
    """A quantized (rows, cols) matrix, blocks along each row (see the module doc).

    values: int8 (rows, cols) for 8 bits, uint8 (rows, cols // 2) for 4; scales and
    offsets float32 (rows, cols // BLOCK); offsets None for 8 bits."""

    bits: int
    values: np.ndarray
    scales: np.ndarray
    offsets: np.ndarray | None

    @property
    def shape(self) -> tuple[int, int]:
        return self.scales.shape[0], self.scales.shape[1] * BLOCK

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.scales.nbytes + (self.offsets.nbytes if self.offsets is not None else 0)

    def take_rows(self, order: np.ndarray) -> "Blocks":
        return Blocks(
            self.bits, self.values[order], self.scales[order], None if self.offsets is None else self.offsets[order]
        )

    def dequantize(self) -> np.ndarray:
        """float32 (rows, cols): for checks and for requantizing."""
        rows, cols = self.shape
        q = unpack4(self.values) if self.bits == 4 else self.values
        w = q.reshape(rows, cols // BLOCK, BLOCK).astype(np.float32) * self.scales[..., None]
        if self.offsets is not None:
            w += self.offsets[..., None]
        return w.reshape(rows, cols)


def concat_rows(parts: Sequence[Blocks]) -> Blocks:
    """Several matrices of the same inputs stacked by outputs (a fused projection)."""
    bits = {p.bits for p in parts}
    if len(bits) != 1:  # one 4-bit and one 8-bit part: bring them to the smaller
        parts = [p if p.bits == min(bits) else quantize(p.dequantize(), min(bits)) for p in parts]
    offsets = None if parts[0].offsets is None else np.concatenate([p.offsets for p in parts])
    return Blocks(
        parts[0].bits, np.concatenate([p.values for p in parts]), np.concatenate([p.scales for p in parts]), offsets
    )


def quantize(weight: np.ndarray, bits: int) -> Blocks:
    """A float (rows, cols) matrix in blocks of ``bits``: int8 symmetric (scale
    max|w| / 127), int4 affine (the block's minimum and (max - min) / 15)."""
    rows, cols = weight.shape
    if cols % BLOCK:
        raise ValueError(f"{cols} inputs do not fill blocks of {BLOCK}")
    w = np.asarray(weight, np.float32).reshape(rows, cols // BLOCK, BLOCK)
    if bits == 8:
        scales = np.abs(w).max(axis=-1) / 127.0
        safe = np.where(scales > 0, scales, 1.0)
        q = np.clip(np.rint(w / safe[..., None]), -127, 127).astype(np.int8)
        return Blocks(8, q.reshape(rows, cols), scales.astype(np.float32), None)
    if bits == 4:
        low, high = w.min(axis=-1), w.max(axis=-1)
        scales = (high - low) / 15.0
        safe = np.where(scales > 0, scales, 1.0)
        q = np.clip(np.rint((w - low[..., None]) / safe[..., None]), 0, 15).astype(np.uint8)
        return Blocks(4, pack4(q.reshape(rows, cols)), scales.astype(np.float32), low.astype(np.float32))
    raise ValueError(f"bits must be 8 or 4, got {bits}")


def pack4(q: np.ndarray) -> np.ndarray:
    """uint8 values 0..15 (rows, cols) -> (rows, cols // 2), per block of 32 value j
    low and j + 16 high."""
    rows, cols = q.shape
    blocks = q.reshape(rows, cols // BLOCK, 2, BLOCK // 2)
    return (blocks[:, :, 0] | (blocks[:, :, 1] << 4)).reshape(rows, cols // 2)


def unpack4(packed: np.ndarray) -> np.ndarray:
    rows, half = packed.shape
    blocks = packed.reshape(rows, half * 2 // BLOCK, 1, BLOCK // 2)
    return np.concatenate([blocks & 15, blocks >> 4], axis=2).reshape(rows, half * 2)


# -- GGUF blocks ----------------------------------------------------------------------------


def from_gguf(data: np.ndarray, kind: str, shape: tuple[int, int]) -> Blocks | None:
    """A GGUF tensor's raw blocks (uint8 (rows, bytes per row)) of type ``kind``
    (GGMLQuantizationType's name) as :class:`Blocks`, never through float32; None for
    a type that has no direct form (then dequantize and :func:`quantize`)."""
    rows, cols = shape
    raw = np.ascontiguousarray(data).reshape(rows, -1)
    if kind == "Q8_0":  # 34 bytes: f16 d, 32 x int8
        blocks = raw.reshape(rows, cols // 32, 34)
        d = blocks[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
        return Blocks(8, blocks[..., 2:].copy().view(np.int8).reshape(rows, cols), d, None)
    if kind == "Q4_0":  # 18 bytes: f16 d, 16 bytes of nibbles; w = d * (q - 8)
        blocks = raw.reshape(rows, cols // 32, 18)
        d = blocks[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
        return Blocks(4, blocks[..., 2:].reshape(rows, cols // 2).copy(), d, -8.0 * d)
    if kind == "Q4_1":  # 20 bytes: f16 d, f16 m, 16 bytes of nibbles; w = d * q + m
        blocks = raw.reshape(rows, cols // 32, 20)
        dm = blocks[..., :4].copy().view(np.float16).astype(np.float32)
        return Blocks(4, blocks[..., 4:].reshape(rows, cols // 2).copy(), dm[..., 0], dm[..., 1])
    if kind == "Q4_K":
        return _q4_k(raw, rows, cols)
    return None


def _q4_k(raw: np.ndarray, rows: int, cols: int) -> Blocks:
    """Q4_K super-blocks of 256 (144 bytes: f16 d, f16 dmin, 12 bytes of eight 6-bit
    scales and mins, 128 bytes of nibbles): eight blocks of 32 with
    ``w = d * scale_j * q - dmin * min_j``. Their nibbles pair value l with l + 32 of
    each 64; they are repacked into the 32-block layout."""
    supers = raw.reshape(rows, cols // 256, 144)
    dd = supers[..., :4].copy().view(np.float16).astype(np.float32)  # (rows, S, 2)
    packed = supers[..., 4:16].astype(np.uint8)  # (rows, S, 12)
    sc, mn = np.empty((*packed.shape[:2], 8), np.uint8), np.empty((*packed.shape[:2], 8), np.uint8)
    sc[..., :4], mn[..., :4] = packed[..., 0:4] & 63, packed[..., 4:8] & 63
    sc[..., 4:] = (packed[..., 8:12] & 15) | ((packed[..., 0:4] >> 6) << 4)
    mn[..., 4:] = (packed[..., 8:12] >> 4) | ((packed[..., 4:8] >> 6) << 4)
    scales = (dd[..., :1] * sc).reshape(rows, cols // BLOCK)
    offsets = (-dd[..., 1:2] * mn).reshape(rows, cols // BLOCK)
    qs = supers[..., 16:].reshape(rows, cols // 256, 4, 1, 32)  # 4 chunks of 64 values
    q = np.concatenate([qs & 15, qs >> 4], axis=3).reshape(rows, cols)  # value order
    return Blocks(4, pack4(q), scales.astype(np.float32), offsets.astype(np.float32))


def to_blocks(tensor: Any, bits: int) -> Blocks:
    """A checkpoint tensor (float numpy or :class:`Blocks`) as blocks of ``bits``:
    blocks of that width are kept as they are; float tensors and blocks of another
    width are quantized (the latter through a float32 copy of that one tensor)."""
    if isinstance(tensor, Blocks):
        return tensor if tensor.bits == bits else quantize(tensor.dequantize(), bits)
    if tensor.ndim != 2:
        raise ModelLoadError(f"a {tensor.ndim}-d tensor cannot be a quantized matrix")
    return quantize(np.asarray(tensor, np.float32), bits)


__all__ = ["BLOCK", "Blocks", "MODES", "Quantization", "concat_rows", "from_gguf", "quantize", "to_blocks"]
