"""Small, valid model files built in memory for tests: GGUF headers and safetensors."""

from __future__ import annotations

import json
import math
import random
import struct


def _string(text: str) -> bytes:
    return struct.pack("<Q", len(text.encode())) + text.encode()


def gguf_bytes(architecture: str = "llama", chat_template: str | None = "{{ messages }}", file_type: int = 2) -> bytes:
    """A small GGUF file: a few metadata strings and uint32s, two tensors, 64 data bytes."""
    strings = {"general.architecture": architecture}
    if chat_template:
        strings["tokenizer.chat_template"] = chat_template
    numbers = {
        "general.file_type": file_type,
        f"{architecture}.context_length": 256,
        f"{architecture}.embedding_length": 16,
    }
    out = b"GGUF" + struct.pack("<IQQ", 3, 2, len(strings) + len(numbers))
    out += b"".join(_string(k) + struct.pack("<I", 8) + _string(v) for k, v in strings.items())
    out += b"".join(_string(k) + struct.pack("<II", 4, v) for k, v in numbers.items())
    out += _string("token_embd.weight") + struct.pack("<IQQIQ", 2, 16, 10, 2, 0)
    out += _string("output_norm.weight") + struct.pack("<IQIQ", 1, 16, 0, 32)
    return out + bytes(64)


def safetensors_bytes(tensors: dict[str, tuple[str, list[int]]]) -> bytes:
    itemsize = {"F32": 4, "F16": 2, "BF16": 2, "U32": 4, "I64": 8}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        length = math.prod(shape) * itemsize[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + length]}
        offset += length
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob + bytes(offset)


def gguf_with_data(size: int, seed: int = 0, **kwargs) -> bytes:
    """A GGUF file of ``size`` bytes: a valid header, then random bytes."""
    head = gguf_bytes(**kwargs)
    return head + random.Random(seed).randbytes(max(size - len(head), 0))
