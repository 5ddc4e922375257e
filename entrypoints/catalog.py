"""A curated list of small, well-known models, and how much memory each needs.

The estimate is ``weights + KV cache + 10 %``: the weights at the quantization's
effective bits per weight (GGUF files keep embeddings and some tensors at higher
precision, so Q4_K_M averages about 5 bits), the KV cache in f16 for the context
asked for (keys and values, every layer, every KV head), and a tenth on top for
the engine's buffers. It is an estimate: the real figure depends on the engine,
the batch size and the context actually used.
"""

from __future__ import annotations

from typing import Iterable

import attrs

from modelport.domain import ModelInfo

# Effective bits per weight of whole files (measured on published GGUF files:
# SmolLM2-1.7B Q4_K_M is 1.06 GB for 1.71 B parameters, Qwen2.5-1.5B 986 MB for 1.54 B).
BITS_PER_WEIGHT: dict[str, float] = {
    "Q2_K": 3.4,
    "Q3_K_M": 4.0,
    "Q4_0": 4.55,
    "Q4_1": 5.0,
    "Q4_K_S": 4.8,
    "Q4_K_M": 5.0,
    "Q5_K_M": 5.7,
    "Q6_K": 6.6,
    "Q8_0": 8.5,
    "F16": 16.0,
    "BF16": 16.0,
    "F32": 32.0,
}
KV_BYTES_PER_VALUE = 2  # f16 keys and values
OVERHEAD = 0.10


@attrs.frozen(kw_only=True)
class CatalogEntry:
    """One model: what to pull, and the shapes the memory estimate needs."""

    name: str  # a short name to talk about it
    source: str  # what `modelport pull` takes: org/repo:QUANT ("" when bundled)
    family: str
    parameters: int
    quantization: str
    format: str = "gguf"
    layers: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    context_length: int = 0
    kind: str = "chat"  # chat or embedding
    license: str = ""
    bundled: bool = False

    @property
    def weights_bytes(self) -> int:
        return int(self.parameters * BITS_PER_WEIGHT[self.quantization] / 8)

    def kv_cache_bytes(self, num_ctx: int) -> int:
        return kv_cache_bytes(self.layers, self.kv_heads, self.head_dim, self.context(num_ctx))

    def context(self, num_ctx: int) -> int:
        return min(num_ctx, self.context_length) if self.context_length else num_ctx

    def memory_bytes(self, num_ctx: int) -> int:
        return estimate(self.weights_bytes, self.kv_cache_bytes(num_ctx))

    @property
    def pull_name(self) -> str:
        return self.source or self.name


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, num_ctx: int) -> int:
    """Keys and values for ``num_ctx`` tokens: 2 x layers x KV heads x head_dim x context."""
    return 2 * layers * kv_heads * head_dim * num_ctx * KV_BYTES_PER_VALUE


def estimate(weights: int, kv_cache: int) -> int:
    return int((weights + kv_cache) * (1 + OVERHEAD))


def _e(
    name: str,
    source: str,
    family: str,
    parameters: float,
    quantization: str,
    layers: int,
    kv_heads: int,
    head_dim: int,
    context_length: int,
    license: str,
    **more: object,
) -> CatalogEntry:
    return CatalogEntry(
        name=name,
        source=source,
        family=family,
        parameters=int(parameters),
        quantization=quantization,
        layers=layers,
        kv_heads=kv_heads,
        head_dim=head_dim,
        context_length=context_length,
        license=license,
        **more,
    )  # type: ignore[arg-type]


CATALOG: tuple[CatalogEntry, ...] = (
    _e("smollm2:135m", "", "llama", 134_515_008, "Q4_1", 30, 3, 64, 8192, "apache-2.0", bundled=True),
    _e(
        "smollm2:135m-bf16",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "llama",
        134_515_008,
        "BF16",
        30,
        3,
        64,
        8192,
        "apache-2.0",
        format="safetensors",
    ),
    _e(
        "smollm2:360m",
        "HuggingFaceTB/SmolLM2-360M-Instruct-GGUF:Q8_0",
        "llama",
        361.8e6,
        "Q8_0",
        32,
        5,
        64,
        8192,
        "apache-2.0",
    ),
    _e(
        "smollm2:360m-bf16",
        "HuggingFaceTB/SmolLM2-360M-Instruct",
        "llama",
        361.8e6,
        "BF16",
        32,
        5,
        64,
        8192,
        "apache-2.0",
        format="safetensors",
    ),
    _e(
        "smollm2:1.7b",
        "HuggingFaceTB/SmolLM2-1.7B-Instruct-GGUF:Q4_K_M",
        "llama",
        1.71e9,
        "Q4_K_M",
        24,
        32,
        64,
        8192,
        "apache-2.0",
    ),
    _e(
        "qwen2.5:0.5b",
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
        "qwen2",
        494e6,
        "Q4_K_M",
        24,
        2,
        64,
        32768,
        "apache-2.0",
    ),
    _e(
        "qwen2.5:1.5b",
        "Qwen/Qwen2.5-1.5B-Instruct-GGUF:Q4_K_M",
        "qwen2",
        1.54e9,
        "Q4_K_M",
        28,
        2,
        128,
        32768,
        "apache-2.0",
    ),
    _e(
        "qwen2.5-coder:1.5b",
        "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF:Q4_K_M",
        "qwen2",
        1.54e9,
        "Q4_K_M",
        28,
        2,
        128,
        32768,
        "apache-2.0",
    ),
    _e(
        "qwen2.5:3b",
        "Qwen/Qwen2.5-3B-Instruct-GGUF:Q4_K_M",
        "qwen2",
        3.09e9,
        "Q4_K_M",
        36,
        2,
        128,
        32768,
        "qwen-research",
    ),
    _e(
        "qwen2.5:7b",
        "bartowski/Qwen2.5-7B-Instruct-GGUF:Q4_K_M",
        "qwen2",
        7.62e9,
        "Q4_K_M",
        28,
        4,
        128,
        32768,
        "apache-2.0",
    ),
    _e(
        "llama3.2:1b",
        "bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
        "llama",
        1.24e9,
        "Q4_K_M",
        16,
        8,
        64,
        131072,
        "llama3.2",
    ),
    _e(
        "llama3.2:3b",
        "bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M",
        "llama",
        3.21e9,
        "Q4_K_M",
        28,
        8,
        128,
        131072,
        "llama3.2",
    ),
    _e(
        "llama3.1:8b",
        "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF:Q4_K_M",
        "llama",
        8.03e9,
        "Q4_K_M",
        32,
        8,
        128,
        131072,
        "llama3.1",
    ),
    _e(
        "phi3.5:3.8b",
        "bartowski/Phi-3.5-mini-instruct-GGUF:Q4_K_M",
        "phi3",
        3.82e9,
        "Q4_K_M",
        32,
        32,
        96,
        131072,
        "mit",
    ),
    _e("gemma2:2b", "bartowski/gemma-2-2b-it-GGUF:Q4_K_M", "gemma2", 2.61e9, "Q4_K_M", 26, 4, 256, 8192, "gemma"),
    _e(
        "mistral:7b",
        "bartowski/Mistral-7B-Instruct-v0.3-GGUF:Q4_K_M",
        "llama",
        7.25e9,
        "Q4_K_M",
        32,
        8,
        128,
        32768,
        "apache-2.0",
    ),
    _e(
        "all-minilm:l6-v2",
        "",
        "bert",
        22.7e6,
        "F32",
        0,
        0,
        0,
        256,
        "apache-2.0",
        format="safetensors",
        kind="embedding",
        bundled=True,
    ),
    # RustLLM's registry names (docs/migrating-rustllm.md), each a 4-bit GGUF on the Hub.
    _e("llama2-7b", "TheBloke/Llama-2-7B-Chat-GGUF:Q4_K_M", "llama", 6.74e9, "Q4_K_M", 32, 32, 128, 4096, "llama2"),
    _e(
        "mistral-7b",
        "TheBloke/Mistral-7B-Instruct-v0.2-GGUF:Q4_K_M",
        "llama",
        7.24e9,
        "Q4_K_M",
        32,
        8,
        128,
        32768,
        "apache-2.0",
    ),
    _e("phi-2", "TheBloke/phi-2-GGUF:Q4_K_M", "phi2", 2.78e9, "Q4_K_M", 32, 32, 80, 2048, "mit"),
    _e(
        "neural-chat-7b",
        "TheBloke/neural-chat-7B-v3-1-GGUF:Q4_K_M",
        "llama",
        7.24e9,
        "Q4_K_M",
        32,
        8,
        128,
        32768,
        "apache-2.0",
    ),
)

# RustLLM's registry: each short name, the Hub repository:quantization it pulls and the
# one file of that repository the quantization picks (its sha256 is the Hub's, checked).
RUSTLLM_FILES: dict[str, str] = {
    "llama2-7b": "llama-2-7b-chat.Q4_K_M.gguf",
    "mistral-7b": "mistral-7b-instruct-v0.2.Q4_K_M.gguf",
    "phi-2": "phi-2.Q4_K_M.gguf",
    "neural-chat-7b": "neural-chat-7b-v3-1.Q4_K_M.gguf",
}


def registry_source(name: str) -> str | None:
    """What a RustLLM registry name (``phi-2``, also ``phi-2:latest``) pulls: the Hub
    ``org/repo:QUANT`` from the catalog; None for any other name."""
    short = name.strip().lower().removesuffix(":latest")
    if short not in RUSTLLM_FILES:
        return None
    return next(e.source for e in CATALOG if e.name == short)


def registry_name(model_name: str) -> str | None:
    """The RustLLM short name of an installed model pulled through one (or None)."""
    lowered = model_name.lower()
    for short in RUSTLLM_FILES:
        source = registry_source(short)
        if source and lowered == source.lower():
            return short
    return None


def resolve_name(name: str) -> str:
    """A model name as the store knows it: RustLLM's registry names become their Hub
    source, anything else is left alone."""
    return registry_source(name) or name


@attrs.frozen(kw_only=True)
class Budget:
    """The memory to fit in: what was given (``--memory``), or what was detected."""

    given: int | None = None
    ram: int | None = None
    vram: int | None = None

    def place(self, need: int) -> str:
        """``yes``/``no`` against a given budget; else ``gpu``, ``cpu`` or ``no``."""
        if self.given is not None:
            return "yes" if need <= self.given else "no"
        if self.vram is not None and need <= self.vram:
            return "gpu"
        if self.ram is not None and need <= self.ram:
            return "cpu"
        return "no" if (self.ram or self.vram) else "unknown"


def entries(budget: Budget, num_ctx: int, *, everything: bool = False) -> list[tuple[CatalogEntry, int, str]]:
    """(entry, bytes needed, placement), smallest first; only what fits unless ``everything``."""
    rows = [(e, e.memory_bytes(num_ctx), "") for e in CATALOG]
    rows = [(e, need, budget.place(need)) for e, need, _ in rows]
    rows.sort(key=lambda row: row[1])
    return rows if everything else [row for row in rows if row[2] not in ("no",)]


def model_memory(info: ModelInfo, num_ctx: int) -> tuple[int, int | None]:
    """An installed model's (file bytes, estimated KV cache bytes or None when the
    metadata does not give its shape)."""
    meta = dict(info.metadata)
    arch = info.architecture

    def number(*keys: str) -> int | None:
        for key in keys:
            value = meta.get(key)
            if isinstance(value, (int, float)) and value > 0:
                return int(value)
        return None

    layers = number(f"{arch}.block_count", "num_hidden_layers")
    heads = number(f"{arch}.attention.head_count", "num_attention_heads")
    kv_heads = number(f"{arch}.attention.head_count_kv", "num_key_value_heads") or heads
    head_dim = number(f"{arch}.attention.key_length", "head_dim")
    if head_dim is None and heads and info.embedding_length:
        head_dim = info.embedding_length // heads
    if not (layers and kv_heads and head_dim) or info.architecture in ("bert",):
        return info.size, None
    context = min(num_ctx, info.context_length) if info.context_length else num_ctx
    return info.size, kv_cache_bytes(layers, kv_heads, head_dim, context)


def installed_names(models: Iterable[ModelInfo]) -> set[str]:
    """Every name and alias an installed model answers to, lower-cased, untagged too."""
    names: set[str] = set()
    for model in models:
        for name in (model.name, *model.aliases):
            names.add(name.lower())
    return names
