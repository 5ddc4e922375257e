"""An SVG bar chart of bench_serve.py's JSON line (no plotting library needed):
aggregate decode tokens/s per number of streams, modelport beside llama-server.

    python bench/bench_serve.py ... | tail -1 > serve.json
    python bench/plot_serve.py serve.json docs/images/serve-throughput.svg

With several precisions (``--quants q4_1,q8_0,f32``) the first is drawn into the
file named and each other one beside it (``serve-throughput-q8_0.svg``, ...).
"""

from __future__ import annotations

import json
import statistics
import sys

COLOURS = {"modelport": "#3b6fb6", "modelport-jax": "#5a9e4b", "llama-server": "#c8702a"}


def svg(rates: dict[str, list[float]], title: str) -> str:
    streams = sorted({int(key.split("@")[1]) for key in rates})
    sides = [side for side in COLOURS if any(key.startswith(side + "@") for key in rates)]
    value = {key: statistics.median(v) for key, v in rates.items()}
    top = max(value.values()) * 1.15
    height, left, bottom, band = 300, 50, 40, 50 * len(sides) + 40
    width = max(560, left + 30 + len(streams) * band)
    scale = (height - bottom - 40) / top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{title}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#444"/>',
    ]
    for i, n in enumerate(streams):
        x0 = left + 20 + i * band
        for j, side in enumerate(sides):
            v = value.get(f"{side}@{n}", 0.0)
            h = v * scale
            x = x0 + j * 50
            parts.append(
                f'<rect x="{x}" y="{height - bottom - h:.1f}" width="44" height="{h:.1f}" fill="{COLOURS[side]}"/>'
            )
            parts.append(f'<text x="{x + 22}" y="{height - bottom - h - 4:.1f}" text-anchor="middle">{v:.0f}</text>')
        parts.append(
            f'<text x="{x0 + 25 * len(sides) - 3}" y="{height - bottom + 16}" text-anchor="middle">{n} stream'
            f"{'s' if n > 1 else ''}</text>"
        )
    for j, side in enumerate(sides):
        parts.append(f'<rect x="{left + 20}" y="{34 + j * 18}" width="12" height="12" fill="{COLOURS[side]}"/>')
        parts.append(f'<text x="{left + 38}" y="{44 + j * 18}">{side}</text>')
    parts.append(
        f'<text x="14" y="{(height - bottom) / 2}" transform="rotate(-90 14 {(height - bottom) / 2})" '
        'text-anchor="middle">aggregate decode tok/s</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    source, target = sys.argv[1], sys.argv[2]
    with open(source, encoding="utf-8") as handle:
        data = json.loads(handle.read().strip().splitlines()[-1])
    runs = {"q4_1": data} if "rates" in data else data  # one precision, or {precision: figures}
    for i, (quant, figures) in enumerate(runs.items()):
        # the first precision gets ``target``; the others ``<target>-<precision>.svg``
        path = target if i == 0 else target.removesuffix(".svg") + f"-{quant}.svg"
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(svg(figures["rates"], f"SmolLM2-135M {quant.upper()}, 2 cores, greedy, 128 tokens a stream"))


if __name__ == "__main__":
    main()
