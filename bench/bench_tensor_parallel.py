"""The JAX engine's decode step split over 1..N devices (tensor parallelism), side
by side: tokens per second of every row of the step together, and the bytes of
weights, KV cache and buffers the fullest device holds.

Two models: the bundled SmolLM2-135M (9 heads, 3 KV heads: 1 or 3 devices) and a
random Llama of about 160M parameters built once under ``<TMPDIR>`` (16 heads,
8 KV heads: 1, 2, 4 or 8 devices). On the CPU the devices are virtual
(``--xla_force_host_platform_device_count``, set here before JAX starts): they
share the machine's cores, so the figures show what splitting costs in
collectives, not a speed-up. On a GPU machine it runs unchanged over the real
GPUs (``--device gpu``). Every repetition runs every load in turn, so drift of
the machine's speed hits all of them; medians are printed.

    python bench/bench_tensor_parallel.py [--device cpu] [--shards 1,2,3,4] [--batch 4] [--steps 32]
                                          [--reps 3] [--quantize none] [--models smollm2,llama-160m] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

MODELS = ("smollm2", "llama-160m")
WIDE = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 8,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "bos_token_id": 101,
    "eos_token_id": 102,
    "torch_dtype": "float32",
}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument(
        "--shards", default="1,2,3,4", help="device counts to try (those a model cannot split over are skipped)"
    )
    parser.add_argument("--batch", type=int, default=4, help="rows (slots) of the decode step")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quantize", default="none", choices=("none", "int8", "int4"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--json", action="store_true", help="also print one JSON line of every figure")
    return parser.parse_args()


def wide_folder() -> Path:
    """The random 160M Llama, written once (config, safetensors, the bundled tokenizer)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' tiny-model helper
    from tests.support import tiny_llama

    folder = Path(tempfile.gettempdir()) / "modelport-bench" / "llama-160m"
    if not (folder / "model.safetensors").is_file():
        tiny_llama.build(folder, config=WIDE, scale=0.02)
    return folder


def main() -> None:
    args = parse()
    shards = sorted({int(n) for n in args.shards.split(",")})
    if args.device == "cpu":  # before JAX starts: virtual CPU devices
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={max(shards)}"
        ).strip()
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    from bench_jax import Stepper  # the decode step timed as bench_jax times it

    from modelport.adapters.filesystem import FilesystemModelStore
    from modelport.domain import InvalidRequest, ModelFormat, ModelInfo, ModelRef
    from modelport.ports import EngineOptions

    home = str(Path(tempfile.gettempdir()) / "modelport-bench" / "home")
    devices = jax.devices(args.device)
    print(
        f"{len(devices)} {args.device} devices ({devices[0].device_kind}), {os.cpu_count()} CPU cores; "
        f"batch {args.batch}, {args.steps} steps x {args.reps} reps, --quantize {args.quantize}"
    )
    models = {}
    for name in args.models.split(","):
        if name == "smollm2":
            models[name] = FilesystemModelStore("/nonexistent-modelport-store").resolve(ModelRef.parse("smollm2"))
        else:
            models[name] = ModelInfo(
                name=name, format=ModelFormat.SAFETENSORS, location=str(wide_folder()), primary_file="config.json"
            )
    steppers: dict[tuple[str, int], Stepper] = {}
    for name, model in models.items():
        for n in shards:
            if n > len(devices):
                continue
            options = EngineOptions(
                num_ctx=256, device=args.device, home=home, quantize=args.quantize, tensor_parallel=n
            )
            try:
                steppers[(name, n)] = Stepper(model, options, home, args.batch)
            except InvalidRequest as exc:
                print(f"  {name} on {n}: skipped ({exc})")
    rates: dict[tuple[str, int], list[float]] = {key: [] for key in steppers}
    for _ in range(args.reps):
        for key, stepper in steppers.items():
            rates[key].append(stepper.rate(args.steps))
    print(f"\n{'model':<12}{'devices':>8}{'decode tok/s':>14}{'vs 1':>7}{'MB per device':>15}{'MB in all':>11}")
    figures = []
    for (name, n), stepper in steppers.items():
        rate = statistics.median(rates[(name, n)])
        one = statistics.median(rates[(name, 1)]) if (name, 1) in rates else rate
        decoder = stepper.rt.decoder
        per_device, total = decoder.bytes_per_device, stepper.rt.parameter_bytes + decoder.nbytes
        print(f"{name:<12}{n:>8}{rate:>14.1f}{rate / one:>7.2f}{per_device / 1e6:>15.1f}{total / 1e6:>11.1f}")
        figures.append(
            {
                "model": name,
                "devices": n,
                "decode_tok_s": rate,
                "bytes_per_device": per_device,
                "bytes": total,
                "rates": rates[(name, n)],
            }
        )
    if args.json:
        print(json.dumps({"device": args.device, "batch": args.batch, "quantize": args.quantize, "figures": figures}))


if __name__ == "__main__":
    main()
