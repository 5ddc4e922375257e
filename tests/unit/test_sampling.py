from __future__ import annotations

import pytest

import doctest

from modelport.domain import InvalidRequest, SamplingPolicy, modelfile, sampling, stopping
from modelport.domain.modelfile import as_parameters, parameter_policy
from modelport.domain.sampling import layered
from modelport.entrypoints.http.openai_schemas import sampling_changes


def test_defaults_follow_ollama() -> None:
    policy = SamplingPolicy()
    assert (policy.temperature, policy.top_k, policy.top_p, policy.repeat_last_n) == (0.8, 40, 0.9, 64)
    assert policy.max_tokens is None and policy.seed is None and not policy.is_greedy


def test_greedy() -> None:
    policy = SamplingPolicy.greedy(max_tokens=10)
    assert policy.is_greedy and policy.max_tokens == 10 and policy.temperature == 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", -0.1),
        ("top_k", -1),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("min_p", 2.0),
        ("repeat_penalty", 0.0),
        ("repeat_last_n", -2),
        ("seed", -5),
        ("max_tokens", 0),
        ("num_ctx", 8),
    ],
)
def test_out_of_range_values_are_rejected_with_the_field_named(field, value) -> None:
    with pytest.raises(InvalidRequest, match=field):
        SamplingPolicy(**{field: value})


def test_ollama_options_map_and_unknown_keys_are_ignored() -> None:
    policy = parameter_policy(
        {
            "temperature": 0,
            "top_k": 5.0,
            "num_predict": 12,
            "seed": 7,
            "stop": ["\n"],
            "num_ctx": 2048,
            "mirostat": 2,
            "numa": False,
            "penalize_newline": True,
        }
    )
    assert (policy.temperature, policy.top_k, policy.max_tokens, policy.seed) == (0.0, 5, 12, 7)
    assert policy.stop == ("\n",) and policy.num_ctx == 2048


def test_ollama_sentinels() -> None:
    policy = parameter_policy({"seed": -1, "num_predict": -1})
    assert policy.seed is None and policy.max_tokens is None
    assert parameter_policy({"num_predict": -2}).max_tokens is None


@pytest.mark.parametrize(
    "options", [{"top_k": "5"}, {"top_k": 1.5}, {"temperature": True}, {"stop": 3}, {"stop": [""]}, {"num_predict": 0}]
)
def test_ollama_wrong_types_are_rejected(options) -> None:
    with pytest.raises(InvalidRequest):
        parameter_policy(options)


def test_options_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest):
        parameter_policy(["temperature"])  # type: ignore[arg-type]


def test_openai_fields() -> None:
    policy = layered(
        sampling_changes(
            {
                "temperature": 0.2,
                "max_completion_tokens": 9,
                "stop": "END",
                "top_p": 0.5,
                "seed": 3,
                "presence_penalty": 1,
            }
        )
    )
    assert (policy.temperature, policy.max_tokens, policy.stop, policy.top_p, policy.seed) == (0.2, 9, ("END",), 0.5, 3)
    assert sampling_changes({}) == {}  # the model's own defaults and modelport's stand


def test_options_round_trip() -> None:
    policy = SamplingPolicy(temperature=0.3, top_k=7, seed=11, stop=("a", "b"), max_tokens=5, num_ctx=1024)
    assert parameter_policy(as_parameters(policy)) == policy
    assert parameter_policy(as_parameters(SamplingPolicy())) == SamplingPolicy()


def test_policies_are_hashable_values() -> None:
    assert hash(SamplingPolicy(seed=1)) == hash(SamplingPolicy(seed=1))
    assert SamplingPolicy(stop=["x", "x"]).stop == ("x",)


def test_changes_name_policy_fields_only() -> None:
    assert SamplingPolicy().with_changes({"max_tokens": 5}).max_tokens == 5
    with pytest.raises(InvalidRequest, match="num_predict"):
        SamplingPolicy().with_changes({"num_predict": 5})  # a wire name, not a field


def test_layers_merge_in_order() -> None:
    policy = layered({"temperature": 0.2, "top_k": 5}, None, {"temperature": 0.0, "stop": ["x"]})
    assert (policy.temperature, policy.top_k, policy.stop) == (0.0, 5, ("x",))


@pytest.mark.parametrize("module", [sampling, modelfile, stopping], ids=lambda m: m.__name__)
def test_the_domain_doctests(module) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0
