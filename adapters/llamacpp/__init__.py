"""GGUF models through llama-cpp-python (imported lazily, on load)."""

from .engine import LlamaCppEngine
from .vocabulary import vocabulary_of

__all__ = ["LlamaCppEngine", "vocabulary_of"]
