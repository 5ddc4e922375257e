"""The JAX engine's slots through the generation core: aggregate decode tokens/s at
1 and more concurrent streams on SmolLM2-135M (greedy, 128 tokens per stream), and
time to first token.

Each round submits N requests with different prompts to the engine's scheduler at
once, one reader thread per stream recording when each token arrives. Decode rate
of a round: all the tokens after each stream's first, over the time from the first
stream's first token to the last stream's last. The rounds alternate between the
stream counts, so that drift of the machine's speed hits all of them; medians are
printed, with the ratio to one stream.

    python bench/bench_jax_slots.py [--streams 1,8] [--reps 3] [--tokens 128] [--slots 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

from modelport.adapters.filesystem import FilesystemModelStore
from modelport.adapters.jax import JaxEngine
from modelport.domain import GenerationRequest, ModelRef, SamplingPolicy
from modelport.ports import EngineOptions

PROMPTS = [
    "Once upon a time, there was a little girl named",
    "The history of the Roman Empire begins with",
    "Here is a long story about a dragon who lived in a cave:",
    "Chapter one. The ship left the harbour at dawn, and",
    "My grandmother always told me stories about the war. She said",
    "The scientist looked at the results and realized that",
    "In the small village at the edge of the forest, there lived",
    "Write a story about a robot learning to paint. The robot",
]


def one_round(engine: JaxEngine, streams: int, tokens: int) -> dict[str, float]:
    requests = [
        GenerationRequest(
            model=ModelRef.parse("smollm2"),
            prompt=PROMPTS[i % len(PROMPTS)] + " " * (i // 8),
            sampling=SamplingPolicy.greedy(max_tokens=tokens),
        )
        for i in range(streams)
    ]
    arrivals: list[list[int]] = [[] for _ in range(streams)]

    def read(stream, times: list[int]) -> None:
        for event in stream:
            if event.token_id is not None:
                times.append(time.perf_counter_ns())

    started = time.perf_counter_ns()
    generations = [engine.scheduler.submit(r) for r in requests]
    readers = [threading.Thread(target=read, args=(g, arrivals[i])) for i, g in enumerate(generations)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    first = min(times[0] for times in arrivals)
    last = max(times[-1] for times in arrivals)
    decoded = sum(len(times) - 1 for times in arrivals)
    ttft = sorted((times[0] - started) / 1e6 for times in arrivals)
    return {
        "decode": decoded / ((last - first) / 1e9),
        "tokens": sum(len(times) for times in arrivals) / streams,
        "ttft_p50": ttft[len(ttft) // 2],
        "ttft_p95": ttft[min(len(ttft) - 1, int(round(0.95 * (len(ttft) - 1))))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,8", help="concurrent stream counts, comma separated")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--num-ctx", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    counts = [int(n) for n in args.streams.split(",")]

    import jax

    model = FilesystemModelStore("/nonexistent-modelport-store").resolve(ModelRef.parse("smollm2"))
    engine = JaxEngine()
    loading = time.perf_counter()
    engine.load(model, EngineOptions(num_ctx=args.num_ctx, device=args.device, slots=args.slots))
    loaded = time.perf_counter() - loading
    for n in counts:  # one untimed round each
        one_round(engine, n, 8)
    results: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    for _ in range(args.reps):
        for n in counts:
            results[n].append(one_round(engine, n, args.tokens))
    engine.unload()

    print(
        f"SmolLM2-135M (bundled Q4_1 as float32), JAX engine through the scheduler, greedy, {args.tokens} tokens "
        f"per stream, {args.slots} slots, num_ctx {args.num_ctx}; JAX {jax.__version__} on {args.device}, "
        f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
        f"load + warm-up {loaded:.0f} s; medians of {args.reps}"
    )
    print(
        f"{'streams':>8} {'decode tok/s':>13} {'x one':>7} {'tokens/stream':>14} {'TTFT p50 ms':>12} "
        f"{'TTFT p95 ms':>12}"
    )
    base = statistics.median(r["decode"] for r in results[counts[0]]) if counts[0] == 1 else None
    for n in counts:
        rate = statistics.median(r["decode"] for r in results[n])
        ratio = f"{rate / base:.2f}" if base else "-"
        print(
            f"{n:>8} {rate:>13.1f} {ratio:>7} {statistics.median(r['tokens'] for r in results[n]):>14.0f} "
            f"{statistics.median(r['ttft_p50'] for r in results[n]):>12.0f} "
            f"{statistics.median(r['ttft_p95'] for r in results[n]):>12.0f}"
        )


if __name__ == "__main__":
    main()
