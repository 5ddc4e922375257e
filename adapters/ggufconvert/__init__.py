"""GGUF files turned into Hugging Face folders (config.json, float32 safetensors,
tokenizer.json, tokenizer_config.json, generation_config.json), so that engines which
load Hugging Face folders (JAX, MLX) can run GGUF models too.

The ``gguf`` package dequantizes the tensors and ``tokenizers`` rebuilds the
tokenizer; both are imported on first use, never when this package is imported.
``cache.py`` owns the one cache of conversions (``<home>/cache/hf-from-gguf/``).
"""

from .cache import cache_root, converted_folder
from .convert import (
    CONVERTER_VERSION,
    SUPPORTED_ARCHITECTURES,
    cache_key,
    dequantize_tensor,
    llama_tensor_name,
    materialize_hf_folder,
)

__all__ = [
    "CONVERTER_VERSION",
    "SUPPORTED_ARCHITECTURES",
    "cache_key",
    "cache_root",
    "converted_folder",
    "dequantize_tensor",
    "llama_tensor_name",
    "materialize_hf_folder",
]
