"""Benchmark the whisper model on a real tritonserver: dynamic batching on vs off, one run.

Both variants are served side by side from a temporary repository that links to the exported
whisper model; each concurrency level runs a closed loop (every client sends its next request
as soon as the previous one returns) over speech clips of 1.5-6 s, the length of VAD segments.

    python -m scripts.bench.whisper [--concurrency 1 4 8] [--requests-per-client 3]
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as grpcclient

from moderation.triton import ensemble_inputs
from scripts.bench.triton_stats import model_counts
from scripts.cli import MODEL_REPOSITORY, REPO_ROOT, parser, setup_logging
from scripts.export import triton_config
from scripts.export.triton_config import WhisperValues
from scripts.service.launch import free_port
from scripts.service.serve_triton import Ports, TritonServer
from scripts.speech import BENCH_SENTENCES, read_wav, synthesize

logger = logging.getLogger(__name__)

VARIANTS = {"whisper_batched": True, "whisper_unbatched": False}


def build_repository(source: Path, target: Path) -> None:
    """Two renderings of the exported whisper config (batching on/off) over the same version dir."""
    exported = triton_config.read(source, WhisperValues)
    for name, batched in VARIANTS.items():
        update = {"name": name} if batched else {"name": name, "max_queue_delay_us": None}
        triton_config.write_variant(source, target, exported.model_copy(update=update))


async def closed_loop(url: str, model: str, clips: list[np.ndarray], clients: int, per_client: int):
    client = grpcclient.InferenceServerClient(url)
    latencies: list[float] = []

    async def worker(index: int) -> None:
        for i in range(per_client):
            clip = clips[(index + i) % len(clips)]
            start = time.perf_counter()
            await client.infer(model, ensemble_inputs(clip, "en"), client_timeout=600)
            latencies.append(time.perf_counter() - start)

    try:
        before = await model_counts(client, model)
        start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        elapsed = time.perf_counter() - start
        after = await model_counts(client, model)
    finally:
        await client.close()
    executions = after[1] - before[1]
    return {
        "model": model, "concurrency": clients, "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(latencies, 50) * 1000), "p95_ms": float(np.percentile(latencies, 95) * 1000),
        "mean_batch": (after[0] - before[0]) / max(executions, 1),
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| dynamic batching | concurrency | requests | req/s | p50 ms | p95 ms | mean batch |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        on = "on" if VARIANTS[r["model"]] else "off"
        lines.append(f"| {on} | {r['concurrency']} | {r['requests']} | {r['requests_per_s']:.2f} | "
                     f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['mean_batch']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--requests-per-client", type=int, default=3)
    p.add_argument("--output", type=Path, default=REPO_ROOT / "bench-results" / "whisper.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = [read_wav(synthesize(s, tmp / f"clip{i}.wav")) for i, s in enumerate(BENCH_SENTENCES)]
        build_repository(args.model_repository / "whisper", tmp / "repo")
        ports = Ports(free_port(), free_port(), free_port())
        with open(tmp / "triton.log", "wb") as log, TritonServer(tmp / "repo", ports, log_file=log):
            url = f"127.0.0.1:{ports.grpc}"
            asyncio.run(closed_loop(url, "whisper_batched", clips, 1, 1))  # warm-up
            asyncio.run(closed_loop(url, "whisper_unbatched", clips, 1, 1))
            rows = [asyncio.run(closed_loop(url, model, clips, c, args.requests_per_client))
                    for c in args.concurrency for model in VARIANTS]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": platform.platform(), "rows": rows}, indent=2))
    print(markdown(rows))


if __name__ == "__main__":
    main()
