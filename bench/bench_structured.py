"""Mask cost and decode rate with and without a constraint, on the bundled SmolLM2.

    python bench/bench_structured.py [--engine mlx|gguf|jax] [--tokens 96]

For each run: the tokens generated, the decode rate (tokens/s over the decode
phase, from Usage), and for the constrained runs the time llguidance spent
computing masks per token (GrammarConstraint.mask_ns / masks) next to the time
of a whole step. Greedy decoding; one request at a time, then ``--parallel``
requests together (one constrained, the rest free) to see what a mask costs
the other slots.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

from modelport.adapters.llguidance import LLGuidanceCompiler
from modelport.domain import (
    Completion,
    GenerationRequest,
    ModelFormat,
    ModelRef,
    OutputFormat,
    SamplingPolicy,
    Tool,
    ToolChoice,
    system_and_user,
)
from modelport.ports import EngineOptions

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 4},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "hobbies", "address"],
    "additionalProperties": False,
}
WEATHER = Tool(
    name="get_weather",
    parameters_text={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def model_for(engine: str):
    from modelport.adapters.filesystem import FilesystemModelStore
    from modelport.adapters.ggufconvert import materialize_hf_folder

    store = FilesystemModelStore(tempfile.mkdtemp(prefix="modelport-bench-"), converter=materialize_hf_folder)
    gguf = store.resolve(ModelRef.parse("smollm2"))
    return store.materialize(gguf, ModelFormat.SAFETENSORS) if engine == "mlx" else gguf


def build(engine: str):
    if engine == "mlx":
        from modelport.adapters.mlx import MlxEngine

        return MlxEngine()
    if engine == "gguf":
        from modelport.adapters.llamacpp import LlamaCppEngine

        return LlamaCppEngine()
    from modelport.adapters.jax import JaxEngine

    return JaxEngine()


def request(tokens: int, **fields) -> GenerationRequest:
    return GenerationRequest(
        model=ModelRef.parse("smollm2"),
        sampling=SamplingPolicy.greedy(max_tokens=tokens),
        messages=system_and_user("Describe a person called Ada as JSON."),
        **fields,
    )


def run(engine, compiler, tokens: int, label: str, **fields) -> tuple[Completion, object]:
    req = request(tokens, **fields)
    constraint = None
    if req.output_spec.constrained:
        constraint = compiler.compile(req.output_spec, engine.vocabulary())
    done = Completion.fold(engine.scheduler.submit(req, constraint=constraint))
    return done, constraint


def report(label: str, done: Completion, constraint, wall: float) -> None:
    usage = done.usage
    step_ms = usage.eval_ns / max(1, usage.completion_tokens - 1) / 1e6
    line = f"{label:<28} {usage.completion_tokens:>4} tokens  {usage.eval_rate:7.1f} tok/s  step {step_ms:6.2f} ms"
    if constraint is not None and getattr(constraint, "masks", 0):
        line += f"  mask {constraint.mask_ns / constraint.masks / 1e3:7.1f} us/token ({constraint.masks} masks)"
    print(line + f"  wall {wall:5.2f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", default="mlx", choices=("mlx", "gguf", "jax"))
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    engine = build(args.engine)
    if not hasattr(engine, "vocabulary"):
        print(f"the {args.engine} engine does not describe its vocabulary yet", file=sys.stderr)
        return 2
    engine.load(model_for(args.engine), EngineOptions(num_ctx=2048, slots=args.parallel, device=args.device))
    compiler = LLGuidanceCompiler()
    print(f"engine {args.engine}, load average {os.getloadavg()[0]:.2f}, cpus {os.cpu_count()}")
    t = time.perf_counter()
    compiler.tokenizer(engine.vocabulary())
    print(f"llguidance tokenizer built in {time.perf_counter() - t:.2f} s (once per model)")
    run(engine, compiler, 8, "warm-up")
    run(engine, compiler, 8, "warm-up", format=OutputFormat.from_schema(SCHEMA))
    for label, fields in [
        ("free", {}),
        ("json schema", {"format": OutputFormat.from_schema(SCHEMA)}),
        ("json mode", {"format": OutputFormat.json_mode()}),
        ("tool call (required)", {"tools": (WEATHER,), "tool_choice": ToolChoice(mode="required")}),
        ("tools auto (free text)", {"tools": (WEATHER,)}),
    ]:
        t = time.perf_counter()
        done, constraint = run(engine, compiler, args.tokens, label, **fields)
        report(label, done, constraint, time.perf_counter() - t)
    results: dict[str, tuple] = {}

    def one(key: str, **fields) -> None:
        t0 = time.perf_counter()
        results[key] = (*run(engine, compiler, args.tokens, key, **fields), time.perf_counter() - t0)

    threads = [
        threading.Thread(target=one, args=("batch: json schema",), kwargs={"format": OutputFormat.from_schema(SCHEMA)})
    ]
    threads += [threading.Thread(target=one, args=(f"batch: free {i}",)) for i in range(args.parallel - 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for key in sorted(results):
        report(key, *results[key])
    engine.unload()
    return 0


if __name__ == "__main__":
    sys.exit(main())
