"""Side-by-side, in ONE run, on the same machine, audio and Whisper weights:

  (a) this system: edge + Triton ensemble with dynamic batching
  (b) the same with dynamic batching off
  (c) the BASELINE of the original design (loadtest/baselines/inprocess_server.py):
      in-process Whisper per connection on fixed 1 s chunks, no batching
  (f) (a) with Whisper's CPU speed options: encoder context 'fit' and int8 Linear layers

Each is swept with Locust (1, 2, 4, … streams until the SLA breaks); the maximum number of
concurrent real-time streams within the SLA and the ratios go into docs/PERFORMANCE.md.

    python -m loadtest.compare [--sla-p95-ms 3000] [--duration 40]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from loadtest.sweep import REPO_ROOT, add_arguments, machine, max_within_sla, plot, sweep, table, write_section
from scripts.edge_process import running_edge, wait_http
from scripts.export.pbtxt import link_model, parameters, without_dynamic_batching
from scripts.serve_triton import Ports, TritonServer, free_port

logger = logging.getLogger(__name__)

SYSTEMS = {
    "a": "edge + Triton, dynamic batching",
    "b": "edge + Triton, batching off",
    "c": "BASELINE in-process 1 s chunks",
    "f": "edge + Triton, dynamic batching, CPU-fast whisper (fit context + int8)",
}
FAST_PARAMETERS = {"encoder_context": "fit", "cpu_int8": "true"}
"""Whisper parameters of system (f): the CPU speed profile measured in docs/PERFORMANCE.md."""


def unbatched_repository(source: Path, target: Path) -> Path:
    for model in ("whisper", "koelectra", "ensemble"):
        config = (source / model / "config.pbtxt").read_text()
        link_model(source / model, target / model, without_dynamic_batching(config))
    return target


def fast_repository(source: Path, target: Path) -> Path:
    """The exported repository with whisper switched to the CPU-fast parameters."""
    for model in ("whisper", "koelectra", "ensemble"):
        config = (source / model / "config.pbtxt").read_text()
        if model == "whisper":
            for key, value in FAST_PARAMETERS.items():
                config = re.sub(rf'parameters {{ key: "{key}" .*\n', "", config)
            config += parameters(FAST_PARAMETERS)
        link_model(source / model, target / model, config)
    return target


@contextmanager
def edge_on_triton(repository: Path, logs: Path):
    ports = Ports(free_port(), free_port(), free_port())
    with open(logs / "triton.log", "wb") as log, TritonServer(repository, ports, log_file=log):
        with running_edge(free_port(), f"127.0.0.1:{ports.grpc}", logs / "edge.log") as edge:
            yield f"ws://{edge}"


@contextmanager
def baseline(repository: Path, logs: Path):
    port = free_port()
    with open(logs / "baseline.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "loadtest.baselines.inprocess_server", "--port", str(port),
                                 "--model-repository", str(repository)], cwd=REPO_ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://127.0.0.1:{port}/docs", proc, timeout_s=120)
            yield f"ws://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(30)


def report(results: dict, args, name: str) -> str:
    best = {key: max_within_sla(levels) for key, levels in results.items()}
    ratio = (lambda a, b: "∞ (baseline holds none)" if b == 0 else f"{a / b:.1f}×")
    lines = [f"- **Date:** {dt.date.today()}; **machine:** {machine()}, no GPU; load generated on the same machine",
             f"- **SLA:** segment p95 ≤ {args.sla_p95_ms:.0f} ms; {args.duration} s of load per level; "
             "each stream plays loadtest/audio/dialogue_en.wav in real time (20 ms frames), over and over",
             f"- **Command:** `python -m loadtest.compare --systems {args.systems} --duration {args.duration}`", "",
             "| system | max real-time streams within SLA |", "|---|---:|"]
    lines += [f"| ({key}) {SYSTEMS[key]} | {best[key]} |" for key in results]
    lines += [""] + [f"- ({k}) / (c) = **{ratio(best[k], best['c'])}**" for k in best if k != "c" and "c" in best]
    for key, levels in results.items():
        lines += ["", f"({key}) {SYSTEMS[key]}", "", table(levels)]
    lines += ["", f"![p50/p95 against streams](img/{name}.png)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-repository", type=Path, default=REPO_ROOT / "model_repository")
    p.add_argument("--systems", default="abcf", help="which of a, b, c, f to run")
    add_arguments(p)
    args = p.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for key in args.systems:
            out = args.out.parent / "compare" / key
            out.mkdir(parents=True, exist_ok=True)
            if key == "a":
                server = edge_on_triton(args.model_repository, out)
            elif key == "b":
                server = edge_on_triton(unbatched_repository(args.model_repository, tmp / "unbatched"), out)
            elif key == "f":
                server = edge_on_triton(fast_repository(args.model_repository, tmp / "fast"), out)
            else:
                server = baseline(args.model_repository, out)
            with server as host:
                logger.info("sweeping (%s) %s at %s", key, SYSTEMS[key], host)
                results[key] = sweep(host, args, out)
    name = "compare" if set("abc") <= set(args.systems) else f"compare-{args.systems}"
    plot({f"({k}) {SYSTEMS[k]}": v for k, v in results.items()}, args.sla_p95_ms,
         REPO_ROOT / "docs" / "img" / f"{name}.png")
    write_section(name, report(results, args, name))
    print(report(results, args, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
