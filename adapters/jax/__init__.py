"""modelport's own models on JAX and Flax NNX, for the CPU and GPUs.

Importing this package imports neither JAX nor Flax: the engine imports them when
it loads a model.
"""

from .engine import JaxEngine

__all__ = ["JaxEngine"]
