"""Rendering a chat template that a model was created with (a Modelfile's TEMPLATE)."""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence


class ChatTemplates(Protocol):
    """Renders Jinja chat templates the way Hugging Face's tokenizers do."""

    def check(self, template: str) -> None:
        """Raise InvalidRequest (naming the problem) when ``template`` does not compile."""
        ...

    def render(self, template: str, messages: Sequence[Mapping[str, str]]) -> str:
        """The prompt: ``template`` over ``messages`` with ``add_generation_prompt``;
        a template error is an InvalidRequest."""
        ...
