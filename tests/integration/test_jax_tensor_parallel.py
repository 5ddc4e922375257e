"""Tensor parallelism on virtual CPU devices: a model split over N devices decodes
the same greedy tokens through the engine's slots as on one, float and int8/int4;
its parameters and KV cache are split as the rules say; a device count that does
not divide the heads is refused with the counts that do.

This process's JAX already has one device, so each case runs in a child process
with four (tests/support/tensor_parallel.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import tensor_parallel, tiny_llama

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
GOLDEN_TOKENS = (20391, 617, 5732, 288, 1238, 281, 260, 2388, 30, 2306)  # test_jax_smollm2.py's
WIDE = dict(
    tiny_llama.CONFIG, hidden_size=64, num_attention_heads=8, num_key_value_heads=4, intermediate_size=128
)  # 8 heads, 4 KV heads: splits over 1, 2 and 4 devices


def run_child(spec: dict) -> list[dict]:
    env = {**os.environ, **tensor_parallel.ENV}
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "support" / "tensor_parallel.py"), json.dumps(spec)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def by_load(results: list[dict]) -> dict[tuple[int, str], dict]:
    return {(r["shards"], r["quantize"]): r for r in results}


@pytest.fixture(scope="module")
def wide(tmp_path_factory, engine_home) -> dict[tuple[int, str], dict]:
    folder = tiny_llama.build(tmp_path_factory.mktemp("wide-llama"), config=WIDE)
    loads = [[n, q] for q in ("none", "int8", "int4") for n in (1, 2, 4)]
    return by_load(
        run_child(
            {
                "model": str(folder),
                "home": engine_home,
                "loads": loads,
                "prompt": "the quick brown fox",
                "max_tokens": 12,
            }
        )
    )


@pytest.fixture(scope="module")
def smollm2(engine_home) -> dict[tuple[int, str], dict]:
    loads = [[1, "none"], [3, "none"], [2, "none"], [4, "none"], [3, "int8"]]
    return by_load(
        run_child(
            {
                "model": "smollm2",
                "home": engine_home,
                "loads": loads,
                "prompt": "Once upon a time, there was a little girl named",
                "max_tokens": 8,
            }
        )
    )


@pytest.mark.parametrize("quantize", ["none", "int8", "int4"])
def test_a_wide_llama_decodes_the_same_on_1_2_and_4_devices(wide, quantize) -> None:
    one = wide[(1, quantize)]
    assert len(one["tokens"]) == 12
    for n in (2, 4):
        split = wide[(n, quantize)]
        assert "error" not in split, split.get("error")
        assert split["tokens"] == one["tokens"], n
        np.testing.assert_allclose(split["logits"], one["logits"], atol=1e-4)


def test_a_wide_llama_is_split_by_heads_mlp_columns_and_kv_heads(wide) -> None:
    for n in (1, 2, 4):
        probe = wide[(n, "none")]
        assert (probe["qkv"], probe["o"], probe["down"], probe["cache"]) == (n, n, n, n)
        # 30522 rows do not divide by 4: the table stays whole on every device
        assert probe["embed"] == (n if 30522 % n == 0 else 1)
    assert wide[(2, "none")]["bytes_per_device"] < wide[(1, "none")]["bytes_per_device"]
    for quantize in ("int8", "int4"):
        probe = wide[(2, quantize)]
        assert probe["qkv.values"] == probe["qkv.scales"] == probe["down.values"] == 2
    assert wide[(2, "int4")]["qkv.offsets"] == 2


def test_smollm2_decodes_the_same_on_three_devices(smollm2) -> None:
    """int8 gives the first 8 golden tokens on one device (test_jax_quantized.py), so
    both split loads are held to them."""
    assert smollm2[(1, "none")]["tokens"] == list(GOLDEN_TOKENS[:8])
    for quantize, suffix in (("none", ""), ("int8", ".values")):
        three = smollm2[(3, quantize)]
        assert "error" not in three, three.get("error")
        assert three["tokens"] == list(GOLDEN_TOKENS[:8])
        assert (three["qkv" + suffix], three["embed" + suffix], three["cache"]) == (3, 3, 3)


def test_a_device_count_that_does_not_divide_smollm2s_heads_is_refused(smollm2) -> None:
    for n in (2, 4):
        error = smollm2[(n, "none")]["error"]
        assert error.startswith("InvalidRequest: --tensor-parallel"), error
        assert "9 attention heads" in error and "3 key/value heads" in error
        assert "it can be split over 1 or 3 devices" in error


def test_every_llama_parameter_has_logical_axes_of_its_rank_and_the_fused_ones_an_order() -> None:
    from flax import nnx

    from modelport.adapters.jax.models import llama
    from modelport.adapters.jax.quant import Quantization
    from modelport.adapters.jax.weights import _flatten

    for config in (WIDE, dict(WIDE, model_type="qwen2", tie_word_embeddings=False), dict(WIDE, model_type="phi3")):
        cfg = llama.LlamaConfig.from_hf_config(config)
        for quant in (Quantization(), Quantization.of("int4")):
            state = nnx.state(nnx.eval_shape(lambda: llama.LlamaModel(cfg, quant=quant, shards=2)))
            params = _flatten(nnx.to_pure_dict(state))
            for rule in llama.weight_rules(cfg):
                parts = [p for p in params if p[: len(rule.path)] == rule.path]
                assert parts, rule.name
                for path in parts:
                    assert len(rule.axes) == len(params[path].shape), (rule.name, path)
                fused = rule.path[-2] in ("qkv", "gate_up")
                assert (rule.order is not None) == fused, rule.name
