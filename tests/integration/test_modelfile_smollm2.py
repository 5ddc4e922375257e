"""A model created from the bundled SmolLM2 with a Modelfile: its SYSTEM, PARAMETERs
and Ollama's ChatML Go template (translated to Jinja, rendered by the use case) give
the very prompt the model's own template gives, and so the same answer."""

from __future__ import annotations

import pytest

from modelport.domain import Completion, GenerationRequest, ModelRef, Modelfile, system_and_user
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.config import Settings

pytestmark = pytest.mark.slow

CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
MODELFILE = f'''FROM smollm2
SYSTEM "You are a geography teacher."
PARAMETER temperature 0
PARAMETER num_predict 12
TEMPLATE """{CHATML}"""
'''
QUESTION = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    services = bootstrap(Settings.load({"home": str(tmp_path_factory.mktemp("home"))}, dotenv=None))
    yield services
    services.close()


def test_the_created_model_answers_as_its_base_with_the_same_system_prompt(services) -> None:
    modelfile = Modelfile.parse(MODELFILE)
    created = services.create("teacher", modelfile.base, modelfile.defaults)
    assert created.defaults.system == "You are a geography teacher."
    mine = GenerationRequest(
        model=ModelRef.parse("teacher"), messages=system_and_user(QUESTION), sampling=services.sampling_for("teacher")
    )
    same = services.sampling_for("smollm2", {"temperature": 0, "max_tokens": 12})  # repeat_penalty 1.1 too
    assert same == mine.sampling
    theirs = GenerationRequest(
        model=ModelRef.parse("smollm2"),
        sampling=same,
        messages=system_and_user(QUESTION, "You are a geography teacher."),
    )
    a, b = Completion.fold(services.generate(mine)), Completion.fold(services.generate(theirs))
    assert a.usage.prompt_tokens == b.usage.prompt_tokens and a.token_ids == b.token_ids
    assert "Paris" in a.text and a.usage.completion_tokens <= 12
