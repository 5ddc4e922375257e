"""Hugging Face and MLX folders through mlx-lm (imported lazily, on load)."""

from .engine import MlxEngine

__all__ = ["MlxEngine"]
