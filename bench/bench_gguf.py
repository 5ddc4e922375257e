"""modelport's GGUF engine against llama-cpp-python itself, same weights, one run.

Measures greedy decode and prompt (prefill) throughput on the bundled SmolLM2-135M
Q4_1, alternating the two sides so that drift of the machine's speed hits both, and
prints medians and the ratio ours / llama.cpp.

    python bench/bench_gguf.py [--reps 5] [--decode-tokens 128] [--prompt-tokens 500] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import attrs

from modelport.adapters.filesystem import FilesystemModelStore
from modelport.domain import Completion, GenerationRequest, ModelRef, SamplingPolicy
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.config import Settings


def filler(tokens: int) -> str:
    words = "the quick brown fox jumps over the lazy dog and keeps running far away".split()
    return " ".join(words[i % len(words)] for i in range(tokens))


def ours(services, prompt: str, max_tokens: int) -> tuple[float, float]:
    request = GenerationRequest(
        model=ModelRef.parse("smollm2"),
        prompt=prompt,
        # a seed makes the engine evaluate the prompt afresh: no KV prefix reuse
        sampling=SamplingPolicy.greedy(max_tokens=max_tokens, seed=0, num_ctx=2048),
    )
    usage = Completion.fold(services.generate(request)).usage
    # eval_rate counts the steps between the first token and the last, as the llama.cpp side does
    return usage.prompt_rate, usage.eval_rate


def anchor(llm, prompt: str, max_tokens: int, cpu: dict[str, list[float]] | None = None) -> tuple[float, float]:
    """Wall-clock rates; with ``cpu``, also appends tokens per CPU-second of this
    process (what a busy machine's scheduling does not change much)."""
    llm.reset()
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    first = cpu_first = None
    count = 0
    for _ in llm.generate(tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        if first is None:
            first, cpu_first = time.perf_counter(), time.process_time()
        count += 1
        if count >= max_tokens:
            break
    done, cpu_done = time.perf_counter(), time.process_time()
    prefill = len(tokens) / (first - started)
    decode = (count - 1) / (done - first) if count > 1 else 0.0
    if cpu is not None:
        if max_tokens == 1:
            cpu["prefill"].append(len(tokens) / max(cpu_first - cpu_started, 1e-9))
        elif count > 1:
            cpu["decode"].append((count - 1) / max(cpu_done - cpu_first, 1e-9))
    return prefill, decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=500)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    import llama_cpp

    home = Path(os.environ.get("TMPDIR", "/tmp")) / "modelport-bench"
    services = bootstrap(Settings(home=str(home)))
    threads = args.threads
    services.engine_options = attrs.evolve(services.engine_options, threads=threads)
    info = FilesystemModelStore(home / "models").resolve(ModelRef.parse("smollm2"))
    llm = llama_cpp.Llama(
        model_path=str(Path(info.location) / info.primary_file),
        n_ctx=2048,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=0,
        verbose=False,
    )

    long_prompt, short_prompt = filler(args.prompt_tokens), "Once upon a time"
    results: dict[str, list[float]] = {k: [] for k in ("our_prefill", "our_decode", "cpp_prefill", "cpp_decode")}
    cpu: dict[str, list[float]] = {"prefill": [], "decode": []}
    ours(services, short_prompt, 4), anchor(llm, short_prompt, 4)  # warm-up
    for _ in range(args.reps):
        results["our_prefill"].append(ours(services, long_prompt, 1)[0])
        results["cpp_prefill"].append(anchor(llm, long_prompt, 1, cpu)[0])
        results["our_decode"].append(ours(services, short_prompt, args.decode_tokens)[1])
        results["cpp_decode"].append(anchor(llm, short_prompt, args.decode_tokens, cpu)[1])

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"SmolLM2-135M Q4_1, {threads} threads, {args.reps} reps, medians (llama-cpp-python {llama_cpp.__version__})")
    print(f"{'':28}{'modelport gguf':>16}{'llama.cpp':>12}{'ratio':>8}")
    print(
        f"{'prefill tok/s (' + str(args.prompt_tokens) + ' tokens)':28}"
        f"{med['our_prefill']:16.1f}{med['cpp_prefill']:12.1f}{med['our_prefill'] / med['cpp_prefill']:8.2f}"
    )
    print(
        f"{'decode tok/s (' + str(args.decode_tokens) + ' tokens)':28}"
        f"{med['our_decode']:16.1f}{med['cpp_decode']:12.1f}{med['our_decode'] / med['cpp_decode']:8.2f}"
    )
    print(
        f"llama.cpp per CPU-second of this process: prefill {statistics.median(cpu['prefill']):.1f} tok/s, "
        f"decode {statistics.median(cpu['decode']):.1f} tok/s"
    )


if __name__ == "__main__":
    main()
