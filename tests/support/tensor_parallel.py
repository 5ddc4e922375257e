"""Run in a child process with virtual CPU devices (the test process's JAX already
has one): load a model through the JAX engine on 1..N devices and print, as one
JSON line, each load's greedy tokens (decoded through the engine's slots), logits
of a fixed prompt, and where a few parameters and the KV cache live.

    python tests/support/tensor_parallel.py SPEC

SPEC is JSON: {"model": "smollm2" | a folder, "home": str, "loads": [[N, quantize], ...],
"prompt": str, "max_tokens": int}. A load that fails prints {"error": message}
in its place.
"""

from __future__ import annotations

import json
import sys

DEVICES = 4
ENV = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}", "JAX_PLATFORMS": "cpu"}

PROBED = {  # parameter -> its path in the decoder's state (tree-flattened order is unknown, so by path)
    "embed": ("embed", "table"),
    "qkv": ("layers", 0, "attn", "qkv", "kernel"),
    "o": ("layers", 0, "attn", "o", "kernel"),
    "down": ("layers", 0, "mlp", "down", "kernel"),
}


def _shards(array) -> int:
    return len({s.device for s in array.addressable_shards if s.data.size < array.size}) or 1


def _probe(engine) -> dict:
    from flax import nnx

    decoder = engine._rt.decoder
    state = nnx.to_pure_dict(nnx.state(decoder.graph.merge(decoder.state)))
    out = {}
    for name, path in PROBED.items():
        node = state
        for key in path:
            node = node[key]
        leaves = {"": node} if not isinstance(node, dict) else {f".{k}": v for k, v in node.items() if v is not None}
        for suffix, leaf in leaves.items():
            out[name + suffix] = _shards(leaf)
    out["cache"] = _shards(decoder.cache.k[0])
    out["bytes_per_device"] = decoder.bytes_per_device
    return out


def main(spec: dict) -> list[dict]:
    import numpy as np

    from modelport.adapters.filesystem import FilesystemModelStore
    from modelport.adapters.jax import JaxEngine
    from modelport.domain import Completion, GenerationRequest, ModelFormat, ModelInfo, ModelRef, SamplingPolicy
    from modelport.ports import EngineOptions

    if spec["model"] == "smollm2":
        model = FilesystemModelStore("/nonexistent-modelport-store").resolve(ModelRef.parse("smollm2"))
    else:
        model = ModelInfo(
            name="tiny", format=ModelFormat.SAFETENSORS, location=spec["model"], primary_file="config.json"
        )
    results = []
    for shards, quantize in spec["loads"]:
        engine = JaxEngine(spec["home"])
        options = EngineOptions(
            num_ctx=64, device="cpu", home=spec["home"], slots=2, quantize=quantize, tensor_parallel=shards
        )
        try:
            engine.load(model, options)
        except Exception as exc:  # the message is what the test checks
            results.append({"shards": shards, "quantize": quantize, "error": f"{type(exc).__name__}: {exc}"})
            continue
        try:
            request = GenerationRequest(
                model=ModelRef.parse("m"),
                prompt=spec["prompt"],
                sampling=SamplingPolicy.greedy(max_tokens=spec["max_tokens"]),
            )
            tokens = list(Completion.fold(engine.stream(request)).token_ids)
            prompt = np.asarray([engine.tokenize(spec["prompt"])], np.int32)
            logits = engine._rt.decoder.forward(prompt)[0, -1]
            results.append(
                {
                    "shards": shards,
                    "quantize": quantize,
                    "tokens": tokens,
                    "logits": [float(x) for x in logits[:64]],
                    **_probe(engine),
                }
            )
        finally:
            engine.unload()
    return results


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
