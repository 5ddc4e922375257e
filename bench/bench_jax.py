"""modelport's JAX engine against llama.cpp on SmolLM2-135M, side by side, one run.

The JAX engine runs the bundled Q4_1 GGUF dequantized to float32 (through the GGUF
converter). llama.cpp (llama-cpp-python) runs an F32 GGUF made from the same Q4_1
file with its own quantizer (``llama_model_quantize``, ``allow_requantize``), so
both sides compute with the same float32 weights; the shipped Q4_1 file is
measured too, for reference. Greedy decoding; the sides alternate each repetition
so that drift of the machine's speed hits all of them. Prints medians and the
ratio JAX / llama.cpp F32.

    python bench/bench_jax.py [--reps 5] [--decode-tokens 128] [--prompt-tokens 500] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from pathlib import Path
from typing import Iterator

from modelport.adapters.filesystem import FilesystemModelStore
from modelport.adapters.jax import JaxEngine
from modelport.domain import Completion, GenerationRequest, ModelRef, SamplingPolicy
from modelport.ports import EngineOptions

CONTEXT = 2048


def filler(tokens: int) -> str:
    words = "the quick brown fox jumps over the lazy dog and keeps running far away".split()
    return " ".join(words[i % len(words)] for i in range(tokens))


def jax_run(engine: JaxEngine, prompt: str, max_tokens: int) -> tuple[float, float]:
    """(prefill tok/s, decode tok/s) of one request through the generation core."""
    request = GenerationRequest(model=ModelRef.parse("smollm2"), prompt=prompt,
                                sampling=SamplingPolicy.greedy(max_tokens=max_tokens, num_ctx=CONTEXT))
    completion = Completion.fold(engine.stream(request))
    usage = completion.usage
    # eval_ns runs from the first token to the last: count the steps between them
    decode = (usage.completion_tokens - 1) / usage.eval_ns * 1e9 if usage.completion_tokens > 1 else 0.0
    return usage.prompt_rate, decode


def cpp_run(llm, prompt: str, max_tokens: int) -> tuple[float, float]:
    llm.reset()
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    started = time.perf_counter()
    first, count = None, 0
    for _ in llm.generate(tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        if first is None:
            first = time.perf_counter()
        count += 1
        if count >= max_tokens:
            break
    done = time.perf_counter()
    return len(tokens) / (first - started), (count - 1) / (done - first) if count > 1 else 0.0


def f32_gguf(source: Path, folder: Path) -> Path:
    """The Q4_1 file requantized to F32 by llama.cpp (made once, then reused)."""
    import llama_cpp

    target = folder / (source.stem + ".F32.gguf")
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_ALL_F32
        params.allow_requantize = True
        partial = target.with_suffix(".partial")
        with quiet_stderr():  # the quantizer logs every tensor
            status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
        if status != 0:
            raise SystemExit("llama_model_quantize failed")
        partial.rename(target)
    return target


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2, where C libraries write."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=500)
    parser.add_argument("--device", default="cpu", help="the JAX engine's device: cpu, gpu or auto")
    args = parser.parse_args()

    import jax
    import llama_cpp

    home = Path(os.environ.get("TMPDIR", "/tmp")) / "modelport-bench"
    info = FilesystemModelStore(home / "models").resolve(ModelRef.parse("smollm2"))
    q4_path = Path(info.location) / info.primary_file
    engine = JaxEngine()
    engine.load(info, EngineOptions(num_ctx=CONTEXT, device=args.device, home=str(home), slots=1))
    threads = os.cpu_count() or 1
    cpp = {
        name: llama_cpp.Llama(model_path=str(path), n_ctx=CONTEXT, n_threads=threads, n_threads_batch=threads,
                              n_gpu_layers=0, verbose=False)
        for name, path in (("f32", f32_gguf(q4_path, home / "bench")), ("q4_1", q4_path))
    }
    runs = {
        "jax": lambda prompt, n: jax_run(engine, prompt, n),
        "cpp-f32": lambda prompt, n: cpp_run(cpp["f32"], prompt, n),
        "cpp-q4_1": lambda prompt, n: cpp_run(cpp["q4_1"], prompt, n),
    }
    long_prompt, short_prompt = filler(args.prompt_tokens), "Once upon a time"
    for run in runs.values():  # warm-up: compile every shape used below
        run(long_prompt, 2), run(short_prompt, args.decode_tokens)
    prefill: dict[str, list[float]] = {name: [] for name in runs}
    decode: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.reps):
        for name, run in runs.items():
            prefill[name].append(run(long_prompt, 1)[0])
            decode[name].append(run(short_prompt, args.decode_tokens)[1])

    p = {name: statistics.median(v) for name, v in prefill.items()}
    d = {name: statistics.median(v) for name, v in decode.items()}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"SmolLM2-135M, greedy, {args.reps} reps, medians; JAX {jax.__version__} on {engine._rt.device}, "
          f"llama-cpp-python {llama_cpp.__version__} on {threads} threads; load average {load}")
    header = ["", "JAX", "llama.cpp F32", "llama.cpp Q4_1", "JAX/F32"]
    rows = [
        (f"prefill tok/s ({args.prompt_tokens} tokens)", p),
        (f"decode tok/s ({args.decode_tokens} tokens)", d),
    ]
    print(f"{header[0]:30}" + "".join(f"{h:>16}" for h in header[1:]))
    for label, m in rows:
        values = [m["jax"], m["cpp-f32"], m["cpp-q4_1"], m["jax"] / m["cpp-f32"]]
        print(f"{label:30}" + "".join(f"{v:16.2f}" if i >= 3 else f"{v:16.1f}" for i, v in enumerate(values)))
    engine.unload()


if __name__ == "__main__":
    main()
