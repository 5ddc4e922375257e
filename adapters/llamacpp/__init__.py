"""GGUF models through llama-cpp-python (imported lazily, on load)."""

from .engine import LlamaCppEngine
from .selfcheck import BUILD_FLAGS, reinstall_command

__all__ = ["BUILD_FLAGS", "LlamaCppEngine", "reinstall_command"]
