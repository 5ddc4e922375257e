"""What a model's own files say about it: GGUF headers, or a Hugging Face folder's
config.json, safetensors headers and tokenizer config. Only headers are read."""

from __future__ import annotations

import collections
import functools
import json
import math
import os
import struct
from typing import Any

import attrs

from modelport.domain import Capability, InvalidRequest, ModelFormat
from modelport.domain.modelfile import parameter_policy

from .gguf_header import GGUFHeader, read_gguf_header

# Encoder-only architectures: these models embed, they do not generate.
GGUF_EMBEDDING_ARCHITECTURES = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert", "neo-bert"}
)
HF_EMBEDDING_ARCHITECTURES = frozenset({"bert", "roberta", "xlm-roberta", "nomic_bert"})
_MAX_SAFETENSORS_HEADER = 100 << 20
_DTYPE_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}


@attrs.frozen(kw_only=True)
class Details:
    """The ModelInfo fields that come from the model's files."""

    format: ModelFormat
    architecture: str = "unknown"
    family: str = ""
    parameter_count: int | None = None
    quantization: str | None = None
    context_length: int | None = None
    embedding_length: int | None = None
    chat_template: str | None = None
    capabilities: frozenset[Capability] = frozenset({Capability.COMPLETION})
    license: str | None = None
    metadata: tuple[tuple[str, object], ...] = ()
    default_options: tuple[tuple[str, object], ...] = attrs.field(
        default=(), converter=lambda d: tuple(sorted(dict(d).items()))
    )


def _capabilities(embedding: bool, chat_template: str | None) -> frozenset[Capability]:
    if embedding:
        return frozenset({Capability.EMBEDDING})
    if chat_template:
        return frozenset({Capability.COMPLETION, Capability.CHAT})
    return frozenset({Capability.COMPLETION})


# -- GGUF -------------------------------------------------------------------------------


def describe_gguf(path: str) -> Details:
    """Details of a GGUF file; cached while the file's size and mtime stay the same."""
    stat = os.stat(path)
    return _describe_gguf(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _describe_gguf(path: str, _size: int, _mtime_ns: int) -> Details:
    header = read_gguf_header(path)
    architecture = header.architecture or "unknown"
    return Details(
        format=ModelFormat.GGUF,
        architecture=architecture,
        family=architecture,
        parameter_count=header.parameter_count,
        quantization=header.quantization,
        context_length=header.context_length,
        embedding_length=header.embedding_length,
        chat_template=header.chat_template,
        capabilities=_capabilities(architecture in GGUF_EMBEDDING_ARCHITECTURES, header.chat_template),
        license=header.license,
        metadata=_gguf_metadata(header),
    )


def _gguf_metadata(header: GGUFHeader) -> tuple[tuple[str, object], ...]:
    keys = (
        "general.name",
        "general.basename",
        "general.size_label",
        "general.finetune",
        "general.file_type",
        "tokenizer.ggml.model",
    )
    arch_keys = (
        "block_count",
        "feed_forward_length",
        "attention.head_count",
        "attention.head_count_kv",
        "rope.freq_base",
        "vocab_size",
    )
    pairs = [(key, header.get(key)) for key in keys]
    pairs += [(f"{header.architecture}.{key}", header.arch_value(key)) for key in arch_keys]
    tokens = header.get("tokenizer.ggml.tokens")
    if tokens is not None:
        pairs.append(("tokenizer.ggml.tokens.length", len(tokens)))
    pairs.append(("gguf.version", header.version))
    return tuple((k, v) for k, v in pairs if isinstance(v, (str, int, float)))


# -- Hugging Face folders ---------------------------------------------------------------


def describe_folder(folder: str) -> Details:
    """Details of a Hugging Face model folder (config.json and safetensors weights)."""
    config_path = os.path.join(folder, "config.json")
    config = _json_file(config_path)
    if not isinstance(config, dict):
        raise InvalidRequest(f"'{config_path}' is not a JSON object")
    text_config = config.get("text_config")
    values = {**(text_config if isinstance(text_config, dict) else {}), **config}
    quantization_config = config.get("quantization")
    is_mlx = isinstance(quantization_config, dict)
    architecture = str(values.get("model_type") or "unknown")
    bits = quantization_config.get("bits") if is_mlx else None
    parameters, dtype = _weights_summary(folder, mlx_bits=bits if isinstance(bits, int) else None)
    chat_template = _chat_template(folder)
    sentence_transformers = os.path.isfile(os.path.join(folder, "modules.json"))
    embedding = architecture in HF_EMBEDDING_ARCHITECTURES or sentence_transformers
    if isinstance(bits, int):
        quantization: str | None = f"Q{bits}"
    else:
        quantization = _dtype_name(dtype or values.get("torch_dtype") or values.get("dtype"))
    return Details(
        format=ModelFormat.MLX if is_mlx else ModelFormat.SAFETENSORS,
        architecture=architecture,
        family=architecture,
        parameter_count=parameters,
        quantization=quantization,
        context_length=_first_int(values, "max_position_embeddings", "n_positions", "n_ctx"),
        embedding_length=_first_int(values, "hidden_size", "n_embd", "d_model"),
        chat_template=chat_template,
        capabilities=_capabilities(embedding, chat_template),
        license=_readme_license(folder),
        default_options=generation_defaults(folder),
        metadata=tuple(
            (key, values[key])
            for key in (
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "intermediate_size",
                "vocab_size",
                "rope_theta",
            )
            if isinstance(values.get(key), (int, float)) and not isinstance(values.get(key), bool)
        ),
    )


# generation_config.json key -> Modelfile parameter (the names a model's defaults are kept in)
_GENERATION_KEYS = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "repetition_penalty": "repeat_penalty",
}


def generation_defaults(folder: str) -> dict[str, object]:
    """The sampling defaults of a folder's generation_config.json, as Modelfile parameters.

    Only sampled decoding counts (``do_sample`` true or absent); values a policy would
    refuse are dropped, so a bad file never breaks requests.
    """
    try:
        config = _json_object(os.path.join(folder, "generation_config.json"))
    except (OSError, InvalidRequest, ValueError):
        return {}
    if config.get("do_sample") is False:
        return {}
    options = {}
    for key, option in _GENERATION_KEYS.items():
        value = config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                parameter_policy({option: value})
            except InvalidRequest:
                continue
            options[option] = value
    return options


def read_safetensors_header(path: str) -> dict[str, Any]:
    """The JSON header of a safetensors file: 8-byte little-endian length, then JSON."""
    return safetensors_layout(path)[0]


def safetensors_layout(path: str) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and where its data begins (the tensors'
    offsets count from there). InvalidRequest, saying what is wrong, for a file that
    is not one."""
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise InvalidRequest(f"'{path}' is not a safetensors file (too short)")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(_MAX_SAFETENSORS_HEADER, os.fstat(handle.fileno()).st_size - 8):
                raise InvalidRequest(f"'{path}' is not a safetensors file (bad header length)")
            header = json.loads(handle.read(length))
    except OSError as exc:
        raise InvalidRequest(f"cannot read '{path}': {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(f"'{path}' is not a safetensors file (bad JSON header)") from None
    if not isinstance(header, dict):
        raise InvalidRequest(f"'{path}' is not a safetensors file (header is not an object)")
    return header, 8 + length


def weight_files(folder: str) -> list[str]:
    """The safetensors files that hold the weights (the sharded index wins when present)."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        weight_map = _json_object(index).get("weight_map")
        return sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
    if os.path.isfile(os.path.join(folder, "model.safetensors")):
        return ["model.safetensors"]
    return sorted(name for name in os.listdir(folder) if name.endswith(".safetensors"))


def _weights_summary(folder: str, mlx_bits: int | None) -> tuple[int | None, str | None]:
    """Parameter count and the dtype holding most elements, from the headers only."""
    tensors: dict[str, Any] = {}
    for name in weight_files(folder):
        header = read_safetensors_header(os.path.join(folder, name))
        tensors.update((key, value) for key, value in header.items() if key != "__metadata__")
    if not tensors:
        return None, None
    total = 0
    by_dtype: collections.Counter[str] = collections.Counter()
    for key, tensor in tensors.items():
        if not isinstance(tensor, dict) or tensor.get("dtype") == "I64":
            continue  # int64 tensors are buffers (position_ids), not parameters
        count = math.prod(tensor.get("shape") or ())
        stem = key.rsplit(".", 1)[0]
        if mlx_bits and key.endswith((".scales", ".biases")) and f"{stem}.weight" in tensors:
            continue  # quantization constants, not parameters
        if mlx_bits and tensor.get("dtype") == "U32" and f"{stem}.scales" in tensors:
            count = count * 32 // mlx_bits  # packed quantized weights
        total += count
        by_dtype[str(tensor.get("dtype"))] += count
    return total, by_dtype.most_common(1)[0][0]


def _dtype_name(dtype: Any) -> str | None:
    """``F32``/``F16``/``BF16`` from a safetensors dtype or a config's torch_dtype."""
    if not isinstance(dtype, str):
        return None
    return _DTYPE_NAMES.get(dtype.lower(), dtype.upper())


def _chat_template(folder: str) -> str | None:
    jinja = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as handle:
            return handle.read()
    for name in ("tokenizer_config.json", "chat_template.json"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            template = _json_object(path).get("chat_template")
            if isinstance(template, list):  # named templates: prefer "default"
                named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
                template = named.get("default") or next(iter(named.values()), None)
            if isinstance(template, str) and template:
                return template
    return None


def _readme_license(folder: str) -> str | None:
    """``license:`` from the YAML front matter of a model card, if any."""
    path = os.path.join(folder, "README.md")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read(8192).splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, sep, value = line.partition(":")
        if sep and key.strip() == "license" and value.strip():
            return value.strip().strip("'\"")
    return None


def _first_int(values: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = values.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _json_object(path: str) -> dict[str, Any]:
    value = _json_file(path)
    return value if isinstance(value, dict) else {}


def _json_file(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise InvalidRequest(f"cannot read '{path}': {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InvalidRequest(f"'{path}' is not valid JSON: {exc}") from None
