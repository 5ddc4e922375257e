"""Which family module implements a Hugging Face ``model_type``.

A family module is named after the ``model_type`` it was written for; the types
that differ from one only by configuration are aliases of it. Importing this
module imports no framework: the family module is imported on lookup.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from modelport.domain import UnsupportedArchitecture

FAMILIES = ("llama", "gpt2", "bert")
ALIASES = {
    "mistral": "llama",  # sliding-window attention
    "qwen2": "llama",  # q/k/v bias
    "phi3": "llama",  # fused qkv and gate_up in the checkpoint
    "granite": "llama",  # embedding, residual, attention and logit multipliers
}
SUPPORTED = tuple(sorted({*FAMILIES, *ALIASES}))


def family_name(model_type: str) -> str:
    name = ALIASES.get(model_type, model_type)
    if name not in FAMILIES:
        raise UnsupportedArchitecture(model_type or "unknown", SUPPORTED)
    return name


def family(model_type: str) -> ModuleType:
    """The family module for ``model_type``; UnsupportedArchitecture names the
    supported types when there is none."""
    return importlib.import_module(f"{__package__}.models.{family_name(model_type)}")
