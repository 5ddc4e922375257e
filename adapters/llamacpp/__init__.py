"""GGUF models through llama-cpp-python (imported lazily, on load)."""

from .engine import LlamaCppEngine

__all__ = ["LlamaCppEngine"]
