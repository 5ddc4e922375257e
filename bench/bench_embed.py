"""modelport's JAX embeddings against sentence-transformers on torch and llama.cpp's
embedding mode, on all-MiniLM-L6-v2, side by side, one run.

The sides, each on the bundled ``all-minilm:l6-v2`` folder:

- **jax**, **jax-bf16**: ``JaxEngine.embed`` (tokenizing included), float32 weights,
  and bfloat16 weights (``dtype="bfloat16"``: products in bfloat16 summed in float32,
  norms and softmax in float32), in this process.
- **torch**, **torch-bf16**: ``SentenceTransformer.encode`` (its default
  ``batch_size`` of 32) on torch's CPU build, float32 and with the model cast to
  bfloat16, in a venv of the bench's own (``<cache>/embed-venv``, made on first use
  with pip: torch is never a modelport dependency), run as a subprocess
  (bench/embed_torch_worker.py) that times each call itself.
- **cpp-f32**, **cpp-f16**: llama-cpp-python's ``Llama(embedding=True)`` with mean
  pooling, on GGUFs made from the same folder by the converter vendored in the
  llama-cpp-python sdist (``convert_hf_to_gguf.py``, run in the bench venv; files in
  ``<cache>``, never committed).

Texts are sentences of mixed lengths (3 to about 90 words) from
bench/data/embed-sentences.txt, drawn in a fixed order. For each ``--batches`` size
one call embeds that many texts; size 1 is the latency of one text (the mean over
``--singles`` texts). Every side is warm (each call below runs once first) and every
repetition runs every side in turn, starting one side later each time, so drift of
the machine's speed hits all of them. Every side runs on the machine's cores (2
here). Prints medians of sentences per second, the ratios of JAX to each other side,
and the cosine of every side's vectors with sentence-transformers' (min over a
batch); ``--json`` adds one JSON line for bench/plot_embed.py. The cache is
``$MODELPORT_BENCH_CACHE``, else ~/.cache/modelport-bench.

    python bench/bench_embed.py [--reps 5] [--batches 1,32,256] [--singles 16]
                                [--sides jax,torch,cpp-f32,cpp-f16] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from bench_jax import quiet_stderr
from bench_serve import CACHE, vendored_llama_cpp

SENTENCES = Path(__file__).resolve().parent / "data" / "embed-sentences.txt"
WORKER = Path(__file__).resolve().parent / "embed_torch_worker.py"
VENV = CACHE / "embed-venv"
# what the bench venv holds: torch's CPU build and the reference library; the
# converter needs transformers (through sentence-transformers), gguf-py's own
# requirements (installed from the vendored tree) and sentencepiece
REQUIREMENTS = ("torch==2.13.0", "sentence-transformers==6.0.1", "sentencepiece")
SIDES = ("jax", "jax-bf16", "torch", "torch-bf16", "cpp-f32", "cpp-f16")
NAMES = {
    "jax": "JAX f32",
    "jax-bf16": "JAX bf16",
    "torch": "torch f32",
    "torch-bf16": "torch bf16",
    "cpp-f32": "llama.cpp F32",
    "cpp-f16": "llama.cpp F16",
}
# the ratios printed: each JAX side against torch f32 and against its own precision
RATIOS = (
    ("jax", "torch"),
    ("jax", "cpp-f32"),
    ("jax-bf16", "torch"),
    ("jax-bf16", "torch-bf16"),
    ("jax-bf16", "cpp-f16"),
)
CPP_BATCH = 512  # llama.cpp's batch (and context) in tokens: texts are packed into it


def texts(count: int, offset: int = 0) -> list[str]:
    """``count`` sentences of the shipped text, in a fixed order that mixes lengths."""
    lines = [line for line in SENTENCES.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [lines[(offset + 7 * i) % len(lines)] for i in range(count)]  # 7 is prime to the 48 lines


def bench_venv() -> Path:
    """The bench venv's python, made (``python -m venv`` and pip) on first use."""
    python = VENV / "bin" / "python"
    marker = VENV / "modelport-bench-requirements.txt"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if python.is_file() and marker.is_file() and marker.read_text() == wanted:
        return python
    print(f"setting up the torch bench venv in {VENV} (pip: {', '.join(REQUIREMENTS)}) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    gguf_py = vendored_llama_cpp() / "gguf-py"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS, str(gguf_py)], check=True)
    marker.write_text(wanted)
    return python


def gguf_file(folder: Path, outtype: str, python: Path) -> Path:
    """``folder`` converted by llama.cpp's own converter to a GGUF of ``outtype``, once."""
    target = CACHE / f"all-minilm-l6-v2.{outtype.upper()}.gguf"
    if target.is_file():
        return target
    partial = target.with_suffix(".partial")
    converter = vendored_llama_cpp() / "convert_hf_to_gguf.py"
    result = subprocess.run(
        [str(python), str(converter), str(folder), "--outtype", outtype, "--outfile", str(partial)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"convert_hf_to_gguf.py failed for {outtype}:\n{result.stderr[-4000:]}")
    partial.rename(target)
    return target


class TorchSide:
    """sentence-transformers in the bench venv, one subprocess kept for the run."""

    def __init__(self, python: Path, folder: Path, threads: int, dtype: str, batch_size: int = 32) -> None:
        self.proc = subprocess.Popen(
            [str(python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.versions = self._ask({"folder": str(folder), "threads": threads, "dtype": dtype, "batch_size": batch_size})

    def _ask(self, message: dict) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the torch worker exited ({self.proc.wait()})")
        return json.loads(line)

    def seconds(self, batch: Sequence[str]) -> float:
        return float(self._ask({"texts": list(batch)})["seconds"])

    def vectors(self, batch: Sequence[str]) -> list[list[float]]:
        return self._ask({"texts": list(batch), "vectors": True})["vectors"]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def timed(embed: Callable[[Sequence[str]], Any]) -> Callable[[Sequence[str]], float]:
    def seconds(batch: Sequence[str]) -> float:
        started = time.perf_counter()
        embed(batch)
        return time.perf_counter() - started

    return seconds


def cosines(ours: Sequence[Sequence[float]], reference: Sequence[Sequence[float]]) -> tuple[float, float]:
    """(min, mean) cosine of each row of ``ours`` with the same row of ``reference``."""
    import numpy as np

    a, b = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(cos.min()), float(cos.mean())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batches", default="1,32,256", help="texts per call, comma-separated")
    parser.add_argument("--singles", type=int, default=16, help="texts timed one by one for batch size 1")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"which of {', '.join(SIDES)}")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b]
    except ValueError:
        parser.error(f"--batches takes whole numbers separated by commas, not {args.batches!r}")
    if not args.batches or min(args.batches) < 1:
        parser.error("--batches needs at least one size, each 1 or more")
    args.sides = [s for s in args.sides.split(",") if s]
    unknown = [s for s in args.sides if s not in SIDES]
    if unknown or not args.sides:
        parser.error(f"--sides takes some of {', '.join(SIDES)}, not {args.sides!r}")
    if "torch" not in args.sides:
        parser.error("--sides needs torch: it is the reference every ratio and cosine is taken against")
    if args.reps < 1 or args.singles < 1:
        parser.error("--reps and --singles must be 1 or more")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    threads = os.cpu_count() or 1

    from modelport.adapters.filesystem import FilesystemModelStore
    from modelport.domain import ModelRef

    model = FilesystemModelStore(CACHE / "models").resolve(ModelRef.parse("all-minilm"))
    folder = Path(model.location)
    python = bench_venv()

    seconds: dict[str, Callable[[Sequence[str]], float]] = {}
    vectors: dict[str, Callable[[Sequence[str]], Any]] = {}
    versions: dict[str, str] = {}
    closers: list[Callable[[], None]] = []
    for side in (s for s in args.sides if s.startswith("torch")):
        torch_side = TorchSide(python, folder, threads, "bfloat16" if side.endswith("bf16") else "float32")
        closers.append(torch_side.close)
        seconds[side], vectors[side] = torch_side.seconds, torch_side.vectors
        versions.update(torch_side.versions)
    for side in (s for s in args.sides if s.startswith("jax")):
        import jax

        from modelport.adapters.jax import JaxEngine
        from modelport.ports import EngineOptions

        engine = JaxEngine()
        dtype = "bfloat16" if side.endswith("bf16") else "float32"
        engine.load(model, EngineOptions(device="cpu", dtype=dtype, home=str(CACHE / "home")))
        closers.append(engine.unload)
        seconds[side], vectors[side] = timed(engine.embed), engine.embed
        versions["jax"] = jax.__version__
    for side in (s for s in args.sides if s.startswith("cpp-")):
        import llama_cpp

        path = gguf_file(folder, side.removeprefix("cpp-"), python)
        with quiet_stderr():
            llm = llama_cpp.Llama(
                model_path=str(path),
                embedding=True,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                n_ctx=CPP_BATCH,
                n_batch=CPP_BATCH,
                n_ubatch=CPP_BATCH,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=0,
                verbose=False,
            )

        def embed(batch: Sequence[str], llm: Any = llm) -> Any:
            return llm.embed(list(batch), normalize=True)

        seconds[side], vectors[side] = timed(embed), embed
        versions["llama-cpp-python"] = llama_cpp.__version__
    sides = [s for s in SIDES if s in args.sides]

    calls: dict[int, list[list[str]]] = {  # the calls one measurement of a size makes
        b: [[t] for t in texts(args.singles, offset=3)] if b == 1 else [texts(b)] for b in args.batches
    }
    check = texts(max(args.batches))
    reference = vectors["torch"](check)
    similarity = {s: cosines(vectors[s](check), reference) for s in sides}
    for side in sides:  # warm-up: every call measured below, once
        for b in args.batches:
            for batch in calls[b]:
                seconds[side](batch)

    rates: dict[str, dict[int, list[float]]] = {s: {b: [] for b in args.batches} for s in sides}
    for rep in range(args.reps):
        order = sides[rep % len(sides) :] + sides[: rep % len(sides)]
        for side in order:
            for b in args.batches:
                spent = sum(seconds[side](batch) for batch in calls[b])
                rates[side][b].append(sum(len(batch) for batch in calls[b]) / spent)
    for close in closers:
        close()

    med = {s: {b: statistics.median(v) for b, v in per.items()} for s, per in rates.items()}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    described = ", ".join(f"{k} {v}" for k, v in versions.items())
    print(
        f"all-MiniLM-L6-v2 embeddings, {args.reps} reps, medians; {described}; {threads} threads; load average {load}"
    )
    pairs = [p for p in RATIOS if p[0] in sides and p[1] in sides]
    columns = [NAMES[s] for s in sides] + [f"{NAMES[a]}/{NAMES[b]}" for a, b in pairs]
    width = max(16, *(len(c) + 2 for c in columns))
    print(f"{'':28}" + "".join(f"{c:>{width}}" for c in columns))
    for b in args.batches:
        label = "batch 1 latency ms" if b == 1 else f"batch {b} sentences/s"
        values = [1000 / med[s][b] if b == 1 else med[s][b] for s in sides]
        ratios = [med[x][b] / med[y][b] for x, y in pairs]
        print(
            f"{label:28}"
            + "".join(f"{v:>{width}.1f}" for v in values)
            + "".join(f"{r:>{width - 1}.2f}x" for r in ratios)
        )
    print(f"{'cosine with torch (min)':28}" + "".join(f"{similarity[s][0]:>{width}.6f}" for s in sides))
    if args.json:
        print(
            json.dumps(
                {
                    "rates": {s: {str(b): v for b, v in per.items()} for s, per in med.items()},
                    "cosine": similarity,
                    "versions": versions,
                    "threads": threads,
                    "load_average": load,
                    "reps": args.reps,
                }
            )
        )


if __name__ == "__main__":
    main()
