"""What the classifier costs per segment inside Triton, with and without its category output, and
with and without the character n-gram model blended in.

Renderings of the exported koelectra config over the same files are served side by side: as
exported (``harmful`` and the category heads, CATEGORY_PROBS returned, blended with the n-gram
model where the export is a blend), without categories (HARMFUL_PROB only), and, for a blended
export, KoELECTRA alone (its model_info.json without the blend). Real comments (BEEP! dev, as
long as a segment's transcript) are sent one request each, one at a time, as a live segment's
text reaches the classifier; Triton's own statistics give the time inside the model
(compute_infer) per request.

    python -m scripts.bench.classifier --data ../shared/data [--requests 300]
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as grpcclient

from moderation.triton import text_inputs
from scripts.bench.triton_stats import compute_ns
from scripts.cli import MODEL_REPOSITORY, REPO_ROOT, machine, parser, setup_logging
from scripts.export import triton_config
from scripts.export.triton_config import KoelectraValues
from scripts.service.launch import free_port
from scripts.service.serve_triton import Ports, TritonServer
from scripts.train.build_classifier import data_files
from scripts.train.datasets import read_labelled

logger = logging.getLogger(__name__)

WITH, WITHOUT, ALONE = "koelectra_categories", "koelectra_harmful_only", "koelectra_without_ngram"
WARM_UP = 10
LABELS = {WITH: "as exported: HARMFUL_PROB + CATEGORY_PROBS", WITHOUT: "HARMFUL_PROB only",
          ALONE: "KoELECTRA alone (no n-gram blend), + CATEGORY_PROBS"}


def unblended(source: Path, work: Path) -> Path | None:
    """A copy of a blended export's model dir whose model_info.json has no blend (its other files
    linked), else None."""
    info = json.loads((source / "1" / "model_info.json").read_text(encoding="utf-8"))
    blend = info.pop("blend", None)
    if blend is None:
        return None
    (work / "1").mkdir(parents=True)
    for path in (source / "1").iterdir():
        if path.name not in ("model_info.json", blend["ngram"]):
            (work / "1" / path.name).symlink_to(path.resolve())
    (work / "1" / "model_info.json").write_text(json.dumps(info), encoding="utf-8")
    return work


def build_repository(source: Path, target: Path, work: Path) -> tuple[tuple[str, ...], list[str]]:
    """The variants over the exported koelectra; returns its category heads and the variants."""
    exported = triton_config.read(source, KoelectraValues)
    if not exported.categories:
        raise SystemExit(f"{source} has no category heads: export a classifier trained on K-MHaS (make classifier)")
    triton_config.write_variant(source, target, exported.model_copy(update={"name": WITH}))
    triton_config.write_variant(source, target, exported.model_copy(update={"name": WITHOUT, "categories": ()}))
    alone = unblended(source, work)
    if alone is None:
        return exported.categories, [WITH, WITHOUT]
    triton_config.write_variant(alone, target, exported.model_copy(update={"name": ALONE}))
    return exported.categories, [WITH, WITHOUT, ALONE]


async def one_at_a_time(url: str, model: str, texts: list[str]) -> dict:
    client = grpcclient.InferenceServerClient(url)
    latencies = []
    try:
        for text in texts[:WARM_UP]:
            await client.infer(model, text_inputs([text]), client_timeout=60)
        before = await compute_ns(client, model)
        for text in texts:
            start = time.perf_counter()
            result = await client.infer(model, text_inputs([text]), client_timeout=60)
            latencies.append(time.perf_counter() - start)
            categories_back = result.as_numpy("CATEGORY_PROBS") is not None
            if result.as_numpy("HARMFUL_PROB") is None or categories_back != (model != WITHOUT):
                raise RuntimeError(f"{model} did not return what its config declares")
        after = await compute_ns(client, model)
    finally:
        await client.close()
    requests = after[0] - before[0]
    return {"model": model, "requests": len(texts), "compute_ms_per_request": (after[1] - before[1]) / requests / 1e6,
            "client_p50_ms": float(np.percentile(latencies, 50) * 1000),
            "client_p95_ms": float(np.percentile(latencies, 95) * 1000)}


def mean_of(first: dict, second: dict) -> dict:
    """Two runs of one variant as one row: their requests together, their timings averaged."""
    return {"model": first["model"], "requests": first["requests"] + second["requests"],
            **{key: (first[key] + second[key]) / 2 for key in ("compute_ms_per_request", "client_p50_ms",
                                                              "client_p95_ms")}}


def markdown(rows: list[dict], heads: tuple[str, ...]) -> str:
    lines = ["| koelectra output | requests | inside Triton, ms per segment | client p50 ms | client p95 ms |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        what = LABELS[r["model"]].replace("CATEGORY_PROBS", f"CATEGORY_PROBS ({len(heads)})")
        lines.append(f"| {what} | {r['requests']} | {r['compute_ms_per_request']:.2f} | {r['client_p50_ms']:.2f} | "
                     f"{r['client_p95_ms']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    p.add_argument("--data", type=Path, required=True, help="directory with BEEP! (as ../shared/data)")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--output", type=Path, default=REPO_ROOT / "bench-results" / "classifier.json")
    args = p.parse_args(argv)
    texts = read_labelled(data_files(args.data)["beep_dev"]).texts[:args.requests]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        heads, variants = build_repository(args.model_repository / "koelectra", tmp / "repo", tmp / "unblended")
        ports = Ports(free_port(), free_port(), free_port())
        with open(tmp / "triton.log", "wb") as log, TritonServer(tmp / "repo", ports, log_file=log):
            url = f"127.0.0.1:{ports.grpc}"
            # each variant twice, in an order and its reverse, so none gets the machine's warmer half
            order = [*variants, *reversed(variants)]
            rows = [asyncio.run(one_at_a_time(url, model, texts)) for model in order]
    merged = [mean_of(rows[i], rows[len(rows) - 1 - i]) for i in range(len(variants))]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    print(markdown(merged, heads))


if __name__ == "__main__":
    main()
