"""An SVG bar chart of bench_jax.py's JSON line (no plotting library needed): decode
and prefill tokens/s per precision, the JAX engine beside llama.cpp.

    python bench/bench_jax.py --json ... | tail -1 > jax.json
    python bench/plot_jax.py jax.json docs/images/jax-vs-llamacpp.svg
"""

from __future__ import annotations

import json
import sys

COLOURS = {"jax": "#3b6fb6", "cpp": "#c8702a"}
NAMES = {"jax": "modelport JAX", "cpp": "llama.cpp"}
LABELS = {"f32": "f32", "int8": "int8 / Q8_0", "int4": "int4 / Q4_1"}


def panel(values: dict[str, float], precisions: list[str], x0: int, title: str, height: int) -> list[str]:
    bottom, band = 40, 110
    top = max(values.values()) * 1.18 or 1.0
    scale = (height - bottom - 60) / top
    parts = [
        f'<text x="{x0 + band * len(precisions) / 2}" y="40" text-anchor="middle">{title}</text>',
        f'<line x1="{x0}" y1="{height - bottom}" x2="{x0 + band * len(precisions)}" y2="{height - bottom}" '
        'stroke="#444"/>',
    ]
    for i, p in enumerate(precisions):
        left = x0 + 10 + i * band
        for j, side in enumerate(("jax", "cpp")):
            v = values.get(f"{side}-{p}", 0.0)
            h = v * scale
            x = left + j * 46
            parts.append(
                f'<rect x="{x}" y="{height - bottom - h:.1f}" width="42" height="{h:.1f}" fill="{COLOURS[side]}"/>'
            )
            parts.append(f'<text x="{x + 21}" y="{height - bottom - h - 4:.1f}" text-anchor="middle">{v:.0f}</text>')
        parts.append(f'<text x="{left + 44}" y="{height - bottom + 16}" text-anchor="middle">{LABELS[p]}</text>')
    return parts


def svg(data: dict) -> str:
    precisions = [p for p in LABELS if f"jax-{p}" in data["decode"]]
    width, height = 120 + 2 * 110 * len(precisions), 320
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">SmolLM2-135M, 2 shared cores '
        f"(load {data['load_average']}), greedy, tokens/s</text>",
    ]
    parts += panel(data["decode"], precisions, 40, "decode (128 tokens)", height)
    parts += panel(data["prefill"], precisions, 80 + 110 * len(precisions), "prefill (500 tokens)", height)
    for j, side in enumerate(("jax", "cpp")):
        parts.append(f'<rect x="{width - 130}" y="{30 + j * 18}" width="12" height="12" fill="{COLOURS[side]}"/>')
        parts.append(f'<text x="{width - 112}" y="{40 + j * 18}">{NAMES[side]}</text>')
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
