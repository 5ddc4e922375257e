"""Read a GGUF file's header: its metadata and tensor descriptions, never the weights.

A GGUF file (versions 2 and 3, little-endian) starts with the magic ``GGUF``, a
uint32 version, a uint64 tensor count and a uint64 key/value count. Then come the
key/value pairs (string key, uint32 value type, value) and one record per tensor
(name, uint32 number of dims, uint64 dims, uint32 ggml type, uint64 data offset).
Strings are a uint64 byte length followed by UTF-8 bytes.
"""

from __future__ import annotations

import collections
import enum
import math
import mmap
import os
import struct
import types
from typing import Any, Collection, Mapping

import attrs

from modelport.domain import InvalidRequest

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_MAX_ITEMS = 1024
_MAX_DIMS = 8


class ValueType(enum.IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALAR_CODES = {
    ValueType.UINT8: "B",
    ValueType.INT8: "b",
    ValueType.UINT16: "H",
    ValueType.INT16: "h",
    ValueType.UINT32: "I",
    ValueType.INT32: "i",
    ValueType.FLOAT32: "f",
    ValueType.BOOL: "?",
    ValueType.UINT64: "Q",
    ValueType.INT64: "q",
    ValueType.FLOAT64: "d",
}
_SCALARS = {kind: struct.Struct("<" + code) for kind, code in _SCALAR_CODES.items()}
_U32 = _SCALARS[ValueType.UINT32]
_U64 = _SCALARS[ValueType.UINT64]

# ggml tensor types (ggml.h), by number.
GGML_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    9: "Q8_1",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    15: "Q8_K",
    16: "IQ2_XXS",
    17: "IQ2_XS",
    18: "IQ3_XXS",
    19: "IQ1_S",
    20: "IQ4_NL",
    21: "IQ3_S",
    22: "IQ2_S",
    23: "IQ4_XS",
    24: "I8",
    25: "I16",
    26: "I32",
    27: "I64",
    28: "F64",
    29: "IQ1_M",
    30: "BF16",
    34: "TQ1_0",
    35: "TQ2_0",
    39: "MXFP4",
}

# ``general.file_type`` (llama.cpp's llama_ftype) as llama.cpp names it.
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}


@attrs.frozen
class SkippedArray:
    """An array left unread because it is long (a vocabulary, merges): only its size."""

    item_type: ValueType
    length: int

    def __len__(self) -> int:
        return self.length


@attrs.frozen(kw_only=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def element_count(self) -> int:
        return math.prod(self.shape)

    @property
    def type_name(self) -> str:
        return GGML_TYPES.get(self.ggml_type, f"TYPE_{self.ggml_type}")


@attrs.frozen(kw_only=True)
class GGUFHeader:
    """The metadata and tensor list of one GGUF file, with the usual questions answered."""

    path: str
    version: int
    metadata: Mapping[str, Any] = attrs.field(converter=types.MappingProxyType, hash=False)
    tensors: tuple[TensorInfo, ...] = attrs.field(converter=tuple)
    # Where the tensor data begins (the tensors' offsets count from here): the end of
    # the header, rounded up to ``general.alignment`` (32 unless the file says).
    data_offset: int = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str | None:
        return self._text("general.architecture")

    @property
    def name(self) -> str | None:
        return self._text("general.name")

    @property
    def license(self) -> str | None:
        return self._text("general.license")

    @property
    def chat_template(self) -> str | None:
        return self._text("tokenizer.chat_template")

    @property
    def context_length(self) -> int | None:
        return self._arch_int("context_length")

    @property
    def embedding_length(self) -> int | None:
        return self._arch_int("embedding_length")

    @property
    def parameter_count(self) -> int:
        return sum(tensor.element_count for tensor in self.tensors)

    @property
    def file_type(self) -> int | None:
        return _integer(self.metadata.get("general.file_type"))

    @property
    def quantization(self) -> str | None:
        """llama.cpp's name for ``general.file_type``, else the most common tensor type."""
        named = FILE_TYPES.get(self.file_type) if self.file_type is not None else None
        if named:
            return named
        counts = collections.Counter(t.type_name for t in self.tensors)
        return counts.most_common(1)[0][0] if counts else None

    def arch_value(self, suffix: str) -> Any:
        """``<architecture>.<suffix>``, e.g. ``arch_value("block_count")``."""
        return self.metadata.get(f"{self.architecture}.{suffix}")

    def _text(self, key: str) -> str | None:
        value = self.metadata.get(key)
        return value if isinstance(value, str) else None

    def _arch_int(self, suffix: str) -> int | None:
        return _integer(self.arch_value(suffix))


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_gguf_header(
    path: str | os.PathLike[str], *, keep: Collection[str] = (), max_items: int = DEFAULT_MAX_ITEMS
) -> GGUFHeader:
    """Read the header of the GGUF file at ``path``.

    Arrays longer than ``max_items`` become :class:`SkippedArray` unless their key is
    in ``keep``. A file that is not GGUF, or is cut short, raises InvalidRequest.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 24:
                data: Any = handle.read()
                return _Parser(data, path, keep, max_items).header()
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _Parser(data, path, keep, max_items).header()
    except OSError as exc:
        raise InvalidRequest(f"cannot read '{path}': {exc.strerror or exc}") from None


class _Parser:
    """A cursor over the file's bytes; every read is bounds-checked."""

    def __init__(self, data: Any, path: str, keep: Collection[str], max_items: int) -> None:
        self.data = data
        self.size = len(data)
        self.path = path
        self.keep = keep
        self.max_items = max_items
        self.pos = 0

    def header(self) -> GGUFHeader:
        if self.size < 4 or self.data[:4] != MAGIC:
            raise self._error("is not a GGUF file (it does not start with 'GGUF')")
        self.pos = 4
        version = self._scalar(_U32)
        if version not in SUPPORTED_VERSIONS:
            if version & 0xFFFF == 0 and (version >> 24) in SUPPORTED_VERSIONS:
                raise self._error("is a big-endian GGUF file; only little-endian is supported")
            raise self._error(f"is GGUF version {version}; versions 2 and 3 are supported")
        tensor_count = self._count(self._scalar(_U64), 8 + 4 + 4 + 8, "tensors")
        kv_count = self._count(self._scalar(_U64), 8 + 4 + 1, "metadata entries")
        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = self._string()
            kind = self._value_type(self._scalar(_U32))
            metadata[key] = self._value(kind, key in self.keep)
        tensors = tuple(self._tensor() for _ in range(tensor_count))
        alignment = _integer(metadata.get("general.alignment")) or 32
        data_offset = -(-self.pos // alignment) * alignment
        return GGUFHeader(path=self.path, version=version, metadata=metadata, tensors=tensors, data_offset=data_offset)

    # -- primitives -------------------------------------------------------------------

    def _error(self, problem: str) -> InvalidRequest:
        return InvalidRequest(f"'{self.path}' {problem}")

    def _truncated(self) -> InvalidRequest:
        return self._error("is a truncated or damaged GGUF file (header cut short)")

    def _advance(self, length: int) -> int:
        start, self.pos = self.pos, self.pos + length
        if self.pos > self.size:
            raise self._truncated()
        return start

    def _scalar(self, fmt: struct.Struct) -> Any:
        start = self._advance(fmt.size)
        return fmt.unpack_from(self.data, start)[0]

    def _string(self) -> str:
        length = self._scalar(_U64)
        start = self._advance(length)
        return bytes(self.data[start : self.pos]).decode("utf-8", errors="replace")

    def _count(self, count: int, min_bytes: int, what: str) -> int:
        """Reject counts the rest of the file could not possibly hold."""
        if count * min_bytes > self.size - self.pos:
            raise self._error(f"is a truncated or damaged GGUF file: it claims {count} {what}")
        return count

    def _value_type(self, number: int) -> ValueType:
        try:
            return ValueType(number)
        except ValueError:
            raise self._error(f"is a damaged GGUF file: unknown value type {number}") from None

    # -- values -----------------------------------------------------------------------

    def _value(self, kind: ValueType, keep: bool) -> Any:
        if kind in _SCALARS:
            return self._scalar(_SCALARS[kind])
        if kind is ValueType.STRING:
            return self._string()
        item_type = self._value_type(self._scalar(_U32))
        item_size = _SCALARS[item_type].size if item_type in _SCALARS else 8
        length = self._count(self._scalar(_U64), item_size, "array items")
        if keep or length <= self.max_items:
            return self._array(item_type, length)
        self._skip(item_type, length)
        return SkippedArray(item_type, length)

    def _array(self, item_type: ValueType, length: int) -> tuple:
        if item_type in _SCALARS:
            fmt = struct.Struct(f"<{length}{_SCALAR_CODES[item_type]}")
            start = self._advance(fmt.size)
            return fmt.unpack_from(self.data, start)
        return tuple(self._value(item_type, True) for _ in range(length))

    def _skip(self, item_type: ValueType, length: int) -> None:
        if item_type in _SCALARS:
            self._advance(_SCALARS[item_type].size * length)
        elif item_type is ValueType.STRING:
            pos, data, unpack = self.pos, self.data, _U64.unpack_from
            for _ in range(length):
                if pos + 8 > self.size:
                    raise self._truncated()
                pos += 8 + unpack(data, pos)[0]
            self.pos = pos
            if pos > self.size:
                raise self._truncated()
        else:
            for _ in range(length):
                inner = self._value_type(self._scalar(_U32))
                self._skip(inner, self._scalar(_U64))

    def _tensor(self) -> TensorInfo:
        name = self._string()
        n_dims = self._scalar(_U32)
        if n_dims > _MAX_DIMS:
            raise self._error(f"is a damaged GGUF file: tensor '{name}' has {n_dims} dims")
        shape = tuple(self._scalar(_U64) for _ in range(n_dims))
        ggml_type = self._scalar(_U32)
        offset = self._scalar(_U64)
        return TensorInfo(name=name, shape=shape, ggml_type=ggml_type, offset=offset)
