"""GGUF models through llama-cpp-python (imported lazily, on load)."""

from .engine import LlamaCppEngine
from .selfcheck import BUILD_FLAGS, reinstall_command
from .vocabulary import vocabulary_of

__all__ = ["BUILD_FLAGS", "LlamaCppEngine", "reinstall_command", "vocabulary_of"]
