"""Builds of llama-cpp-python against each other: bench_gguf.py under each, same run.

Each build is a site-packages folder holding a ``llama_cpp`` package (a venv where it
was installed with other flags, ``pip install --no-deps ...``). The builds take turns,
round after round, each round running ``bench_gguf.py`` once per build with that
folder first on ``PYTHONPATH`` (so drift of the machine's speed hits every build), and
the medians are printed with their ratio to the first build.

    python bench/bench_builds.py portable=/tmp/vA/lib/python3.11/site-packages \\
        avx512=/tmp/vX/lib/python3.11/site-packages [--rounds 3] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).with_name("bench_gguf.py")
ROW = re.compile(r"^(prefill|decode) tok/s \((\d+) tokens\)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$")
CPU_ROW = re.compile(r"^llama\.cpp per CPU-second of this process: prefill ([\d.]+) tok/s, decode ([\d.]+) tok/s")


def isolate(site: Path, into: Path) -> Path:
    """A folder with only the build's llama_cpp and its dist-info, so that nothing else
    of that venv shadows this environment's packages."""
    into.mkdir(parents=True)
    for entry in site.iterdir():
        if entry.name == "llama_cpp" or re.match(r"llama_cpp_python-.*\.dist-info$", entry.name):
            (into / entry.name).symlink_to(entry)
    if not (into / "llama_cpp").exists():
        raise SystemExit(f"no llama_cpp in {site}")
    return into


def system_info(path: Path) -> str:
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode().strip())"
    env = dict(os.environ, PYTHONPATH=str(path))
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def bench(path: Path, reps: int, extra: list[str]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(path))
    done = subprocess.run(
        [sys.executable, str(BENCH), "--reps", str(reps), *extra], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        return {"failed": float(done.returncode)}
    found = {}
    for line in done.stdout.splitlines():
        match = ROW.match(line.strip())
        if match:
            kind = match.group(1)
            found[f"{kind} modelport"] = float(match.group(3))
            found[f"{kind} llama.cpp"] = float(match.group(4))
        match = CPU_ROW.match(line.strip())
        if match:
            found["prefill cpu-s"], found["decode cpu-s"] = float(match.group(1)), float(match.group(2))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs="+", help="LABEL=SITE_PACKAGES")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    args, extra = parser.parse_known_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-builds-"))
    builds = {}
    for item in args.builds:
        label, _, site = item.partition("=")
        builds[label] = isolate(Path(site), scratch / label)
    for label, path in builds.items():
        print(f"{label}: {system_info(path)}", flush=True)
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in builds}
    for number in range(args.rounds):
        for label, path in builds.items():
            result = bench(path, args.reps, extra)
            runs[label].append(result)
            print(f"round {number + 1} {label}: {result}", flush=True)

    keys = [
        "prefill modelport",
        "prefill llama.cpp",
        "decode modelport",
        "decode llama.cpp",
        "prefill cpu-s",
        "decode cpu-s",
    ]
    first = next(iter(builds))
    medians = {
        label: {k: statistics.median([r[k] for r in results if k in r] or [0.0]) for k in keys}
        for label, results in runs.items()
    }
    print(
        f"\nmedians of {args.rounds} rounds x {args.reps} reps (tok/s; cpu-s: llama.cpp's tokens per "
        f"CPU-second of its process); ratio to '{first}'"
    )
    print(f"{'build':<12}" + "".join(f"{k:>20}" for k in keys))
    for label, values in medians.items():
        cells = []
        for k in keys:
            base = medians[first][k]
            ratio = values[k] / base if base else 0.0
            cells.append(f"{values[k]:>12.1f} ({ratio:4.2f})")
        print(f"{label:<12}" + "".join(f"{c:>20}" for c in cells))


if __name__ == "__main__":
    main()
