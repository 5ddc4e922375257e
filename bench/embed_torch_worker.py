"""The torch side of bench_embed.py: sentence-transformers in the bench's own venv.

Run by bench_embed.py with that venv's python (torch is never a modelport
dependency); it speaks JSON lines on stdin and stdout. The first line it reads is
``{"folder": ..., "threads": ..., "dtype": "float32" | "bfloat16", "batch_size": ...}``;
it loads the model (cast to ``dtype``), answers
``{"torch": version, "sentence_transformers": version}``, then answers every
``{"texts": [...], "vectors": bool}`` with ``{"seconds": s, "vectors": [...] | null}``,
the seconds of one ``SentenceTransformer.encode`` call, timed here so the pipe's cost
is left out. An empty line or end of input ends it.

    <bench venv>/bin/python bench/embed_torch_worker.py
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    setup = json.loads(sys.stdin.readline())
    import sentence_transformers
    import torch

    torch.set_num_threads(int(setup["threads"]))
    model = sentence_transformers.SentenceTransformer(setup["folder"], device="cpu")
    model = model.to(getattr(torch, setup["dtype"]))
    batch_size = int(setup["batch_size"])
    reply({"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__})
    for line in sys.stdin:
        if not line.strip():
            break
        request = json.loads(line)
        started = time.perf_counter()
        vectors = model.encode(request["texts"], batch_size=batch_size, convert_to_tensor=True).float().numpy()
        seconds = time.perf_counter() - started
        reply({"seconds": seconds, "vectors": vectors.tolist() if request.get("vectors") else None})


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
