"""An SVG bar chart of bench_embed.py's JSON line (no plotting library needed):
sentences per second per batch size, every side beside the others.

    python bench/bench_embed.py --json ... | tail -1 > embed.json
    python bench/plot_embed.py embed.json docs/images/embed-vs-torch.svg
"""

from __future__ import annotations

import json
import sys

COLOURS = {
    "jax": "#3b6fb6",
    "jax-bf16": "#7fa6dd",
    "torch": "#b63b3b",
    "torch-bf16": "#dd8f8f",
    "cpp-f32": "#c8702a",
    "cpp-f16": "#e6ad74",
}
NAMES = {
    "jax": "modelport JAX f32",
    "jax-bf16": "modelport JAX bf16",
    "torch": "sentence-transformers f32",
    "torch-bf16": "sentence-transformers bf16",
    "cpp-f32": "llama.cpp F32",
    "cpp-f16": "llama.cpp F16",
}


def svg(data: dict) -> str:
    rates = data["rates"]
    sides = [s for s in COLOURS if s in rates]
    batches = list(next(iter(rates.values())))
    bar, gap, bottom, height = 26, 40, 40, 340
    band = bar * len(sides) + gap
    width = 60 + band * len(batches) + 230
    top = max(v for per in rates.values() for v in per.values()) * 1.15
    scale = (height - bottom - 60) / top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<text x="{(width - 230) / 2}" y="18" text-anchor="middle" font-size="14">all-MiniLM-L6-v2 embeddings, '
        f"{data['threads']} cores (load {data['load_average']}), sentences/s, medians of {data['reps']}</text>",
        f'<line x1="40" y1="{height - bottom}" x2="{40 + band * len(batches)}" y2="{height - bottom}" stroke="#444"/>',
    ]
    for i, b in enumerate(batches):
        left = 50 + i * band
        for j, side in enumerate(sides):
            v = rates[side][b]
            h = v * scale
            x = left + j * bar
            parts.append(
                f'<rect x="{x}" y="{height - bottom - h:.1f}" width="{bar - 3}" height="{h:.1f}" '
                f'fill="{COLOURS[side]}"/>'
            )
            parts.append(
                f'<text x="{x + bar / 2 - 1}" y="{height - bottom - h - 4:.1f}" text-anchor="middle" '
                f'font-size="10">{v:.0f}</text>'
            )
        label = "1 text at a time" if b == "1" else f"batch of {b}"
        parts.append(
            f'<text x="{left + bar * len(sides) / 2}" y="{height - bottom + 16}" text-anchor="middle">{label}</text>'
        )
    for j, side in enumerate(sides):
        y = 40 + j * 18
        parts.append(f'<rect x="{width - 220}" y="{y}" width="12" height="12" fill="{COLOURS[side]}"/>')
        parts.append(f'<text x="{width - 202}" y="{y + 10}">{NAMES[side]}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    source, target = sys.argv[1], sys.argv[2]
    with open(source, encoding="utf-8") as handle:
        data = json.loads(handle.read().strip().splitlines()[-1])
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(svg(data))


if __name__ == "__main__":
    main()
