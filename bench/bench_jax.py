"""modelport's JAX engine against llama.cpp on SmolLM2-135M, side by side, one run.

Three precisions, each on both sides with the same weights:

- **f32**: JAX runs the bundled Q4_1 GGUF dequantized to float32 (``--quantize none``);
  llama.cpp runs an F32 GGUF its own quantizer made from that file.
- **int8**: both run a Q8_0 GGUF llama.cpp's quantizer made from the F32 one; JAX
  loads its Q8_0 blocks as they are (``--quantize int8``).
- **int4**: both run the bundled Q4_1 file; JAX loads its Q4_1 blocks as they are
  (``--quantize int4``).

The F32 and Q8_0 files are made once into ``<TMPDIR>/modelport-bench/bench`` (never
committed). Greedy decoding; every repetition runs every side in turn, so drift
of the machine's speed hits all of them. Measured: prefill of a ``--prompt-tokens``
prompt, decode of ``--decode-tokens`` tokens (both through the generation core, one
stream), the JAX decoder's batched step at ``--batch`` rows against one row (the
step the generation core's slots share; llama-cpp-python's high-level API decodes
one sequence, so it has no such figure), the bytes of weights a decode step reads
per second against the machine's copy bandwidth (numpy, read + write), and the
memory each side added when it loaded. Prints medians and the ratios; ``--json``
adds one JSON line for ``bench/plot_jax.py``.

    python bench/bench_jax.py [--reps 3] [--decode-tokens 128] [--prompt-tokens 500] [--batch 8]
                              [--device cpu] [--sides f32,int8,int4] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from modelport.adapters.filesystem import FilesystemModelStore
from modelport.adapters.jax import JaxEngine
from modelport.domain import Completion, GenerationRequest, ModelFormat, ModelInfo, ModelRef, SamplingPolicy
from modelport.ports import EngineOptions

CONTEXT = 1024
CPP_TYPES = {"f32": "F32", "int8": "Q8_0", "int4": "Q4_1"}


def filler(tokens: int) -> str:
    words = "the quick brown fox jumps over the lazy dog and keeps running far away".split()
    return " ".join(words[i % len(words)] for i in range(tokens))


def jax_run(engine: JaxEngine, prompt: str, max_tokens: int) -> tuple[float, float]:
    """(prefill tok/s, decode tok/s) of one request through the generation core."""
    request = GenerationRequest(
        model=ModelRef.parse("smollm2"),
        prompt=prompt,
        sampling=SamplingPolicy.greedy(max_tokens=max_tokens, num_ctx=CONTEXT),
    )
    completion = Completion.fold(engine.stream(request))
    usage = completion.usage
    return usage.prompt_rate, usage.eval_rate  # the rates `modelport generate --verbose` prints


def cpp_run(llm: Any, prompt: str, max_tokens: int) -> tuple[float, float]:
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


class Stepper:
    """The JAX decoder's decode step (and the sampling after it) at ``batch`` rows,
    on a decoder of its own: tokens per second of every row together."""

    def __init__(self, model: ModelInfo, options: EngineOptions, home: str, batch: int) -> None:
        import numpy as np

        from modelport.adapters.jax import runtime
        from modelport.adapters.jax.sampling import SampleMode, pack

        self.rt = runtime.load(model, options, home, slots=batch)
        self.batch, self.np = batch, np
        floats, ints = pack(SamplingPolicy.greedy())
        self.floats = np.tile(np.asarray(floats, np.float32), (batch, 1))
        self.ints = np.tile(np.asarray(ints, np.int32), (batch, 1))
        self.keys = np.tile(self.rt.decoder.key_data(0), (batch, 1))
        self.mode = SampleMode()  # greedy rows only
        self.rate(4)  # compile

    def rate(self, steps: int) -> float:
        np, decoder = self.np, self.rt.decoder
        tokens = np.full((self.batch,), 100, np.int32)
        lengths = np.full((self.batch,), 64, np.int32)
        started = time.perf_counter()
        for i in range(steps):
            positions = np.full((self.batch,), 64 + i, np.int32)
            decoder.decode(tokens, positions, 64 + i + 1)
            tokens = decoder.sample(
                lengths + i + 1, self.floats, self.ints, self.keys, None, self.mode, logprobs=False
            )[0]
        return self.batch * steps / (time.perf_counter() - started)

    def release(self) -> None:
        self.rt.release()


def copy_bandwidth(megabytes: int = 256, reps: int = 5) -> float:
    """Bytes per second numpy moves copying a large array (read + write), best of ``reps``."""
    import numpy as np

    source = np.ones(megabytes * 2**20 // 8)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.nbytes / best


def requantized(source: Path, folder: Path, kind: str) -> Path:
    """``source`` requantized by llama.cpp to ``kind`` (F32, Q8_0), made once and reused."""
    import llama_cpp

    target = folder / f"{source.stem}.{kind}.gguf"
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = {"F32": llama_cpp.LLAMA_FTYPE_ALL_F32, "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}[kind]
        params.allow_requantize = True
        partial = target.with_suffix(".partial")
        with quiet_stderr():  # the quantizer logs every tensor
            status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
        if status != 0:
            raise SystemExit(f"llama_model_quantize to {kind} failed")
        partial.rename(target)
    return target


def gguf_model(path: Path) -> ModelInfo:
    return ModelInfo(
        name=f"{path.stem.lower().replace('.', '-')}:latest",
        format=ModelFormat.GGUF,
        location=str(path.parent),
        primary_file=path.name,
    )


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


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed_load(make: Callable[[], Any]) -> tuple[Any, float, int]:
    before, started = rss(), time.perf_counter()
    value = make()
    return value, time.perf_counter() - started, rss() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="the JAX engine's device: cpu, gpu or auto")
    parser.add_argument("--sides", default="f32,int8,int4", help="the precisions to measure")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    precisions = [p for p in args.sides.split(",") if p]

    import jax
    import llama_cpp

    home = Path(os.environ.get("TMPDIR", "/tmp")) / "modelport-bench"
    bundled = FilesystemModelStore(home / "models").resolve(ModelRef.parse("smollm2"))
    q4_path = Path(bundled.location) / bundled.primary_file
    f32_path = requantized(q4_path, home / "bench", "F32")
    files = {"f32": f32_path, "int8": requantized(f32_path, home / "bench", "Q8_0"), "int4": q4_path}
    jax_models = {"f32": bundled, "int8": gguf_model(files["int8"]), "int4": bundled}
    modes = {"f32": "none", "int8": "int8", "int4": "int4"}
    threads = os.cpu_count() or 1

    runs: dict[str, Callable[[str, int], tuple[float, float]]] = {}
    loads: dict[str, tuple[float, int]] = {}
    weights: dict[str, int] = {}
    steppers: dict[str, tuple[Stepper, Stepper]] = {}
    engines = []
    for p in precisions:
        options = EngineOptions(num_ctx=CONTEXT, device=args.device, home=str(home), slots=1, quantize=modes[p])

        def load_engine(options: EngineOptions = options, model: ModelInfo = jax_models[p]) -> JaxEngine:
            engine = JaxEngine()
            engine.load(model, options)
            return engine

        engine, seconds, grown = timed_load(load_engine)
        engines.append(engine)
        loads[f"jax-{p}"] = (seconds, grown)
        weights[p] = engine._rt.parameter_bytes
        runs[f"jax-{p}"] = lambda prompt, n, engine=engine: jax_run(engine, prompt, n)
        batch_options = EngineOptions(num_ctx=CONTEXT, device=args.device, home=str(home), quantize=modes[p])
        steppers[p] = (
            Stepper(jax_models[p], batch_options, str(home), 1),
            Stepper(jax_models[p], batch_options, str(home), args.batch),
        )

        def load_cpp(path: Path = files[p]) -> Any:
            return llama_cpp.Llama(
                model_path=str(path),
                n_ctx=CONTEXT,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=0,
                verbose=False,
            )

        llm, seconds, grown = timed_load(load_cpp)
        loads[f"cpp-{p}"] = (seconds, grown)
        runs[f"cpp-{p}"] = lambda prompt, n, llm=llm: cpp_run(llm, prompt, n)

    long_prompt, short_prompt = filler(args.prompt_tokens), "Once upon a time"
    for run in runs.values():  # warm-up: every shape used below
        run(long_prompt, 2), run(short_prompt, args.decode_tokens)
    prefill: dict[str, list[float]] = {name: [] for name in runs}
    decode: dict[str, list[float]] = {name: [] for name in runs}
    step: dict[str, list[float]] = {f"{p}@{b}": [] for p in steppers for b in (1, args.batch)}
    bandwidth: list[float] = []
    for _ in range(args.reps):
        bandwidth.append(copy_bandwidth())
        for name, run in runs.items():
            prefill[name].append(run(long_prompt, 1)[0])
            decode[name].append(run(short_prompt, args.decode_tokens)[1])
        for p, (one, many) in steppers.items():
            step[f"{p}@1"].append(one.rate(32))
            step[f"{p}@{args.batch}"].append(many.rate(32))

    med = statistics.median
    pre = {name: med(v) for name, v in prefill.items()}
    dec = {name: med(v) for name, v in decode.items()}
    steps = {name: med(v) for name, v in step.items()}
    copy = med(bandwidth)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"SmolLM2-135M, greedy, {args.reps} reps, medians; JAX {jax.__version__} on {engines[0]._rt.device}, "
        f"llama-cpp-python {llama_cpp.__version__} on {threads} threads; load average {load}; "
        f"numpy copy bandwidth {copy / 1e9:.1f} GB/s (read + write)"
    )
    header = ["", "JAX", "llama.cpp", "JAX/llama.cpp"]
    print(f"{'':44}" + "".join(f"{h:>15}" for h in header[1:]))
    for p in precisions:
        jx, cp = f"jax-{p}", f"cpp-{p}"
        name = f"{p} ({CPP_TYPES[p]})" if p != "f32" else "f32"
        for label, table in (
            (f"prefill tok/s ({args.prompt_tokens} tokens)", pre),
            (f"decode tok/s ({args.decode_tokens} tokens)", dec),
        ):
            print(f"{name + ' ' + label:44}{table[jx]:15.1f}{table[cp]:15.1f}{table[jx] / table[cp]:15.2f}")
        single, many = steps[f"{p}@1"], steps[f"{p}@{args.batch}"]
        print(
            f"{name + f' step tok/s, batch 1 / {args.batch} aggregate':44}{single:15.1f}{many:15.1f}"
            f"{many / single:14.2f}x"
        )
        read = dec[jx] * weights[p]
        print(f"{name + ' weights read/s in decode (of copy bw)':44}{read / 1e9:12.2f} GB{100 * read / copy:14.0f}%")
        print(
            f"{name + ' load s / RSS added MB (JAX, llama.cpp)':44}"
            f"{loads[jx][0]:9.1f} /{loads[jx][1] / 2**20:5.0f}{loads[cp][0]:9.1f} /{loads[cp][1] / 2**20:5.0f}"
        )
    if args.json:
        print(
            json.dumps(
                {
                    "prefill": pre,
                    "decode": dec,
                    "step": steps,
                    "copy_bandwidth": copy,
                    "weights": weights,
                    "loads": loads,
                    "batch": args.batch,
                    "load_average": load,
                    "reps": args.reps,
                }
            )
        )
    for stepper_pair in steppers.values():
        for stepper in stepper_pair:
            stepper.release()
    for engine in engines:
        engine.unload()


if __name__ == "__main__":
    main()
