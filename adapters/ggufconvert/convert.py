"""Materialize a GGUF file as a Hugging Face model folder.

The folder is written into a temporary sibling and renamed into place, so readers
see either nothing or a complete folder; a folder already there is reused. Cache
folders are keyed by the GGUF's path, size and modification time (:func:`cache_key`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from typing import Any, Callable

from modelport.domain import ModelLoadError, UnsupportedArchitecture

from .tokenizer import build_tokenizer

# Bump when the folders written change, so that stale cache entries are not reused.
CONVERTER_VERSION = 1
SUPPORTED_ARCHITECTURES = ("llama",)
DTYPES = ("float32", "float16")
_BLOCK = re.compile(r"blk\.(\d+)\.(.+)")

# GGUF tensor name -> Hugging Face name, for the llama architecture.
_LLAMA_TOP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LLAMA_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def cache_key(gguf_path: str) -> str:
    """A folder name for ``gguf_path``'s conversion: its stem and a hash of its real
    path, size, modification time and the converter version."""
    real = os.path.realpath(gguf_path)
    stat = os.stat(real)
    text = f"{real}\0{stat.st_size}\0{stat.st_mtime_ns}\0{CONVERTER_VERSION}"
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(real).removesuffix(".gguf"))[:64]
    return f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def materialize_hf_folder(gguf_path: str, out_dir: str, *, dtype: str = "float32") -> str:
    """Write ``gguf_path`` as a Hugging Face folder at ``out_dir`` (atomically) and
    return ``out_dir``; when ``out_dir`` already holds a conversion, reuse it."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if os.path.isfile(os.path.join(out_dir, "config.json")):
        return out_dir
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    temp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out_dir)}.", suffix=".tmp")
    try:
        _write_folder(gguf_path, temp, dtype)
        try:
            os.rename(temp, out_dir)
        except OSError:
            if not os.path.isfile(os.path.join(out_dir, "config.json")):
                raise
            shutil.rmtree(temp, ignore_errors=True)  # another process finished first
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return out_dir


def _write_folder(gguf_path: str, folder: str, dtype: str) -> None:
    reader = _open(gguf_path)
    meta = _Metadata(reader)
    arch = meta.get("general.architecture", "unknown")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitecture(f"{arch} (GGUF conversion)", SUPPORTED_ARCHITECTURES)
    tensors = {t.name: t for t in reader.tensors}
    config = _llama_config(meta, tied="output.weight" not in tensors)
    weights = _llama_weights(tensors, config, dtype)
    tokenizer, special = build_tokenizer(meta.get)
    tokenizer.save(os.path.join(folder, "tokenizer.json"))
    _write_json(folder, "config.json", {**config, **{k: v for k, v in special.items() if k.endswith("_id")}})
    _write_json(folder, "tokenizer_config.json", _tokenizer_config(meta, special))
    _write_json(folder, "generation_config.json", _generation_config(special))
    from safetensors.numpy import save_file

    save_file(weights, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})


def _open(path: str) -> Any:
    import gguf

    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError) as exc:
        raise ModelLoadError(f"cannot read the GGUF file {path}: {exc}") from None


class _Metadata:
    """GGUF key/value metadata as plain Python values."""

    def __init__(self, reader: Any) -> None:
        self._fields = reader.fields

    def get(self, key: str, default: Any = None) -> Any:
        field = self._fields.get(key)
        return default if field is None else field.contents()

    def arch(self, key: str, default: Any = None) -> Any:
        return self.get(f"{self.get('general.architecture')}.{key}", default)

    def require(self, key: str) -> Any:
        value = self.arch(key)
        if value is None:
            raise ModelLoadError(f"the GGUF metadata has no '{self.get('general.architecture')}.{key}'")
        return value


def _llama_config(meta: _Metadata, *, tied: bool) -> dict[str, Any]:
    heads = int(meta.require("attention.head_count"))
    width = int(meta.require("embedding_length"))
    tokens = meta.get("tokenizer.ggml.tokens") or []
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "vocab_size": int(meta.arch("vocab_size", len(tokens))),
        "hidden_size": width,
        "intermediate_size": int(meta.require("feed_forward_length")),
        "num_hidden_layers": int(meta.require("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.arch("attention.head_count_kv", heads)),
        "head_dim": int(meta.arch("attention.key_length", width // heads)),
        "rms_norm_eps": float(meta.arch("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(meta.arch("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta.arch("context_length", 2048)),
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    scaling = meta.arch("rope.scaling.type")
    if scaling == "linear":
        config["rope_scaling"] = {"rope_type": "linear", "factor": float(meta.arch("rope.scaling.factor"))}
    elif scaling not in (None, "none"):
        raise ModelLoadError(f"the GGUF's RoPE scaling '{scaling}' cannot be converted yet")
    return config


def _llama_weights(tensors: dict[str, Any], config: dict[str, Any], dtype: str) -> dict[str, Any]:
    """Dequantized tensors under Hugging Face names, Q and K rows un-permuted."""
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    weights, unknown = {}, []
    for name, tensor in tensors.items():
        hf_name, fix = _llama_name(name, heads, kv_heads)
        if hf_name is None:
            unknown.append(name)
            continue
        weights[hf_name] = fix(dequantize_tensor(tensor)).astype(dtype)
    if unknown:
        raise ModelLoadError(f"the GGUF holds tensors the converter does not know: {', '.join(sorted(unknown))}")
    return weights


def _llama_name(name: str, heads: int, kv_heads: int) -> tuple[str | None, Callable[[Any], Any]]:
    keep: Callable[[Any], Any] = lambda w: w  # noqa: E731
    if name in _LLAMA_TOP:
        return _LLAMA_TOP[name], keep
    match = _BLOCK.fullmatch(name)
    if not match or match.group(2) not in _LLAMA_BLOCK:
        return None, keep
    layer, part = match.groups()
    fix = keep
    if part == "attn_q.weight":
        fix = lambda w: unpermute_rows(w, heads)  # noqa: E731
    elif part == "attn_k.weight":
        fix = lambda w: unpermute_rows(w, kv_heads)  # noqa: E731
    return f"model.layers.{layer}.{_LLAMA_BLOCK[part]}", fix


llama_tensor_name = _llama_name  # for loaders that read the GGUF's tensors themselves


def unpermute_rows(weight: Any, heads: int) -> Any:
    """Undo llama.cpp's interleaving of Q/K rows for its RoPE layout.

    weight: (heads * head_dim, in); per head, rows (i, half) -> (half, i).
    """
    out_dim, in_dim = weight.shape
    head_dim = out_dim // heads
    return weight.reshape(heads, head_dim // 2, 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)


def dequantize_tensor(tensor: Any) -> Any:
    """A GGUF tensor as float32 numpy, in numpy order (out, in)."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    shape = tuple(int(d) for d in reversed(tensor.shape))
    if tensor.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        array = np.asarray(tensor.data, dtype=np.float32)
    else:
        try:
            array = dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError:
            raise ModelLoadError(
                f"the gguf package cannot dequantize {tensor.tensor_type.name} ({tensor.name})"
            ) from None
    if array.size != int(np.prod(shape)):
        raise ModelLoadError(f"tensor {tensor.name}: {array.shape} does not hold {shape}")
    return array.reshape(shape)


def _tokenizer_config(meta: _Metadata, special: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "model_max_length": int(meta.arch("context_length", 2048)),
    }
    for name in ("bos", "eos", "unk", "pad"):
        if f"{name}_token" in special:
            config[f"{name}_token"] = special[f"{name}_token"]
    template = meta.get("tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    return config


def _generation_config(special: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if "bos_token_id" in special:
        config["bos_token_id"] = special["bos_token_id"]
    ends = [special[k] for k in ("eos_token_id", "eot_token_id", "eom_token_id") if k in special]
    if ends:
        config["eos_token_id"] = list(dict.fromkeys(ends)) if len(set(ends)) > 1 else ends[0]
    if "pad_token_id" in special:
        config["pad_token_id"] = special["pad_token_id"]
    return config


def _write_json(folder: str, name: str, value: dict[str, Any]) -> None:
    with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
