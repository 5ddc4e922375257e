"""The gguf engine's self-check, run in a child process: does this llama.cpp build
generate a token on this CPU at all?

:func:`main` (``python -m modelport.adapters.llamacpp.selfcheck``) writes a tiny Llama GGUF (one
layer, 64 wide, Q8_0 weights, written here with the standard library), loads it with
llama-cpp-python, evaluates a 40-token prompt and generates two tokens, and prints one
JSON line. The dimensions are multiples of 32 and the weights are Q8_0 so that a
build's vector and matrix paths (AVX2, AVX-512 VNNI, the AMX tiles for prompts of
more than one token) all run, as they do on a real model. A build that uses
instructions this CPU (or its VM) does not execute dies with a signal instead; the
parent (``modelport.adapters.selfcheck``) tells the two apart.
"""

from __future__ import annotations

import json
import os
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

WIDTH, FFN, HEADS, VOCAB, CONTEXT = 64, 128, 2, 288, 256
PROMPT_TOKENS = 40
ALIGNMENT = 32
# The build flags of requirements/llama-cpp.txt (a test keeps the two the same): no
# -march=native, so no AMX and no AVX-512; AVX2, FMA and F16C, which every x86-64 CPU
# of the last ten years has.
BUILD_FLAGS = ("-DGGML_NATIVE=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF")
# GGUF value types and ggml tensor types used here
_U32, _I32, _F32, _STR, _ARR = 4, 5, 6, 8, 9
_GGML_F32, _GGML_Q8_0 = 0, 8


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _value(kind: int, value) -> bytes:
    if kind == _U32:
        return struct.pack("<I", value)
    if kind == _F32:
        return struct.pack("<f", value)
    if kind == _STR:
        return _string(value)
    element, items = value
    packed = b"".join(
        _string(v) if element == _STR else struct.pack({_F32: "<f", _I32: "<i", _U32: "<I"}[element], v) for v in items
    )
    return struct.pack("<IQ", element, len(items)) + packed


def _q8_0(values: list[float]) -> bytes:
    """ggml's Q8_0: blocks of 32 values as an f16 scale and 32 int8s."""
    out = bytearray()
    for start in range(0, len(values), 32):
        block = values[start : start + 32]
        scale = max(abs(v) for v in block) / 127 or 1.0
        out += struct.pack("<e", scale)
        out += struct.pack("<32b", *(max(-127, min(127, round(v / scale))) for v in block))
    return bytes(out)


def _vocabulary() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    words = VOCAB - len(tokens)
    tokens += [f"\u2581w{i}" for i in range(words)]
    types = [2, 3, 3] + [6] * 256 + [1] * words  # unknown, control, byte, normal
    scores = [0.0] * 259 + [-float(i) for i in range(words)]
    return tokens, scores, types


def write_probe_gguf(path: Path, seed: int = 0) -> Path:
    """A one-layer random Llama with a sentencepiece-style vocabulary of 288 tokens."""
    rng = random.Random(seed)

    def matrix(columns: int, rows: int) -> bytes:
        return _q8_0([rng.gauss(0.0, 0.2) for _ in range(columns * rows)])

    def norm(width: int) -> bytes:
        return struct.pack(f"<{width}f", *(1.0 + rng.gauss(0.0, 0.1) for _ in range(width)))

    tensors: list[tuple[str, tuple[int, ...], int, bytes]] = [
        ("token_embd.weight", (WIDTH, VOCAB), _GGML_Q8_0, matrix(WIDTH, VOCAB)),
        ("output_norm.weight", (WIDTH,), _GGML_F32, norm(WIDTH)),
        ("output.weight", (WIDTH, VOCAB), _GGML_Q8_0, matrix(WIDTH, VOCAB)),
        ("blk.0.attn_norm.weight", (WIDTH,), _GGML_F32, norm(WIDTH)),
        ("blk.0.ffn_norm.weight", (WIDTH,), _GGML_F32, norm(WIDTH)),
    ]
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        tensors.append((f"blk.0.{name}.weight", (WIDTH, WIDTH), _GGML_Q8_0, matrix(WIDTH, WIDTH)))
    for name in ("ffn_gate", "ffn_up"):
        tensors.append((f"blk.0.{name}.weight", (WIDTH, FFN), _GGML_Q8_0, matrix(WIDTH, FFN)))
    tensors.append(("blk.0.ffn_down.weight", (FFN, WIDTH), _GGML_Q8_0, matrix(FFN, WIDTH)))

    tokens, scores, types = _vocabulary()
    metadata = [
        ("general.architecture", _STR, "llama"),
        ("general.name", _STR, "modelport self-check"),
        ("general.alignment", _U32, ALIGNMENT),
        ("llama.context_length", _U32, CONTEXT),
        ("llama.embedding_length", _U32, WIDTH),
        ("llama.block_count", _U32, 1),
        ("llama.feed_forward_length", _U32, FFN),
        ("llama.attention.head_count", _U32, HEADS),
        ("llama.attention.head_count_kv", _U32, HEADS),
        ("llama.attention.layer_norm_rms_epsilon", _F32, 1e-5),
        ("llama.rope.dimension_count", _U32, WIDTH // HEADS),
        ("llama.vocab_size", _U32, VOCAB),
        ("tokenizer.ggml.model", _STR, "llama"),
        ("tokenizer.ggml.tokens", _ARR, (_STR, tokens)),
        ("tokenizer.ggml.scores", _ARR, (_F32, scores)),
        ("tokenizer.ggml.token_type", _ARR, (_I32, types)),
        ("tokenizer.ggml.unknown_token_id", _U32, 0),
        ("tokenizer.ggml.bos_token_id", _U32, 1),
        ("tokenizer.ggml.eos_token_id", _U32, 2),
    ]
    head = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
    for key, kind, value in metadata:
        head += _string(key) + struct.pack("<I", kind) + _value(kind, value)
    offset, data = 0, bytearray()
    for name, dims, kind, payload in tensors:
        head += _string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        head += struct.pack("<IQ", kind, offset)
        data += payload + b"\0" * (-len(payload) % ALIGNMENT)
        offset = len(data)
    head += b"\0" * (-len(head) % ALIGNMENT)
    path.write_bytes(bytes(head + data))
    return path


def reinstall_command(python: str, version: str) -> str:
    """The command that rebuilds llama-cpp-python ``version`` with :data:`BUILD_FLAGS`
    into the environment of ``python``, never from pip's cache."""
    pin = f"llama-cpp-python=={version}" if version and version != "unknown" else "llama-cpp-python"
    return (
        f'CMAKE_ARGS="{" ".join(BUILD_FLAGS)}" {python} -m pip install --force-reinstall --no-cache-dir --no-deps {pin}'
    )


def run() -> dict:
    """Load the probe model and generate; returns what the parent records."""
    import llama_cpp

    started = time.monotonic()
    threads = min(4, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="modelport-selfcheck-") as folder:
        model = write_probe_gguf(Path(folder) / "probe.gguf")
        llm = llama_cpp.Llama(
            model_path=str(model),
            n_ctx=CONTEXT,
            n_batch=64,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            verbose=False,
        )
        prompt = [3 + (i * 7) % (VOCAB - 3) for i in range(PROMPT_TOKENS)]
        generated = []
        for token in llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
            generated.append(int(token))
            if len(generated) == 2:
                break
        llm.close()
    system_info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    return {
        "ok": len(generated) == 2,
        "tokens": generated,
        "version": llama_cpp.__version__,
        "system_info": system_info,
        "detail": "CPU: " + " ".join(cpu_features(system_info)),
        "seconds": round(time.monotonic() - started, 3),
    }


def cpu_features(system_info: str) -> list[str]:
    """The features a build's ``llama_print_system_info()`` reports on, e.g.
    ``CPU : SSE3 = 1 | AVX2 = 1 | ...`` -> ["SSE3", "AVX2", ...]."""
    features = []
    for part in system_info.replace("CPU :", "|").split("|"):
        name, _, value = part.partition("=")
        if value.strip() == "1":
            features.append(name.strip())
    return features


def main() -> int:
    print(json.dumps(run()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
