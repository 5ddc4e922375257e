"""The JAX engine's pieces that need no JAX: the family table and the refusals an
unloaded engine gives. (JAX itself is exercised in tests/integration.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.adapters.jax import JaxEngine
from modelport.adapters.jax import registry
from modelport.adapters.jax.registry import ALIASES, FAMILIES, SUPPORTED, family_name
from modelport.domain import EngineUnavailable, ModelFormat, ModelInfo, ModelLoadError, UnsupportedArchitecture
from modelport.ports import EngineOptions


@pytest.mark.parametrize(
    "model_type, family",
    [
        ("llama", "llama"),
        ("mistral", "llama"),
        ("qwen2", "llama"),
        ("phi3", "llama"),
        ("granite", "llama"),
        ("gpt2", "gpt2"),
        ("bert", "bert"),
    ],
)
def test_model_types_map_to_family_files(model_type: str, family: str) -> None:
    assert family_name(model_type) == family


def test_every_supported_type_has_a_family_file() -> None:
    """What the refusal lists is what loads: every name resolves to a family whose
    module is there (importing it needs flax, so only the file is checked here)."""
    folder = Path(registry.__file__).parent / "models"
    assert SUPPORTED and set(ALIASES.values()) <= set(FAMILIES)
    for model_type in SUPPORTED:
        assert (folder / f"{family_name(model_type)}.py").is_file(), model_type


def test_other_types_are_refused_with_the_supported_list() -> None:
    with pytest.raises(UnsupportedArchitecture) as caught:
        family_name("mamba")
    assert "'mamba'" in str(caught.value) and all(name in str(caught.value) for name in SUPPORTED)


def test_an_unloaded_engine_refuses_politely() -> None:
    engine = JaxEngine()
    assert engine.memory_used() == 0
    with pytest.raises(ModelLoadError):
        engine.tokenize("x")
    mlx = ModelInfo(name="m:latest", format=ModelFormat.MLX, location="/nowhere", primary_file="config.json")
    with pytest.raises(EngineUnavailable):
        engine.load(mlx, EngineOptions())
