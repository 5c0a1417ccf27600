"""Side-by-side, in ONE run, on the same machine, audio and Whisper weights:

  (a) this system: edge + Triton ensemble with dynamic batching
  (b) the same with dynamic batching off
  (c) the BASELINE of the original design (loadtest/baselines/inprocess_server.py):
      in-process Whisper per connection on fixed 1 s chunks, no batching
  (d) the streaming PEER (loadtest/baselines/streaming_peer.py), built as WhisperLive-style
      servers are: VAD per connection, faster-whisper int8 in-process, no cross-stream batching
  (f) (a) on the torch engine with its CPU speed options: encoder context 'fit', int8 Linear layers
  (t) (a) on the torch engine, fp32, Whisper's full 30 s window (the default before CTranslate2)

Each is swept with Locust (1, 2, 4, … streams until the SLA breaks); the maximum number of
concurrent real-time streams within the SLA and the ratios go into docs/PERFORMANCE.md.

    python -m loadtest.compare [--sla-p95-ms 3000] [--duration 40]
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from loadtest.sweep import add_arguments, machine, max_within_sla, plot, sweep, table, write_section
from scripts.cli import MODEL_REPOSITORY, REPO_ROOT, parser, setup_logging
from scripts.export import export_whisper, triton_config
from scripts.export.triton_config import EnsembleValues, KoelectraValues, WhisperValues
from scripts.service.launch import ManagedProcess, free_port, running_edge
from scripts.service.serve_triton import Ports, TritonServer

logger = logging.getLogger(__name__)

SYSTEMS = {
    "a": "edge + Triton, dynamic batching (default export)",
    "b": "edge + Triton, batching off",
    "c": "BASELINE in-process 1 s chunks",
    "d": "PEER: VAD + faster-whisper int8 in-process per stream",
    "f": "edge + Triton, torch engine CPU-fast (fit context + int8)",
    "t": "edge + Triton, torch engine fp32 (full context)",
}
BASELINES = ("c", "d")
"""The systems the others are measured against (ratios of their maximum streams)."""
FAST_WHISPER = {"engine": "torch", "encoder_context": "fit", "cpu_int8": True}
"""Whisper values of system (f): the torch engine's CPU speed profile (docs/PERFORMANCE.md)."""
TORCH_WHISPER = {"engine": "torch", "encoder_context": "full", "cpu_int8": False}
"""Whisper values of system (t): the torch engine as the default export had it."""
BASELINE_START_TIMEOUT_S = 120
"""The baseline loads Whisper and the classifier before it answers."""


def variant_repository(source: Path, target: Path, whisper_update: dict, batching: bool = True) -> Path:
    """The exported repository re-rendered from its templates: whisper values changed by
    ``whisper_update``, and every member's dynamic batching off unless ``batching``."""
    off = {} if batching else {"max_queue_delay_us": None}
    whisper_dir, base = same_weights(source / "whisper", target.with_name(target.name + "-weights"),
                                     whisper_update.get("engine"))
    whisper = base.model_copy(update={**off, **whisper_update})
    koelectra = triton_config.read(source / "koelectra", KoelectraValues).model_copy(update=off)
    ensemble = EnsembleValues.of(triton_config.read(source / "ensemble", EnsembleValues).name, whisper, koelectra)
    for values, model_dir in ((whisper, whisper_dir), (koelectra, source / "koelectra"),
                              (ensemble, source / "ensemble")):
        triton_config.write_variant(model_dir, target, values)
    return target


def same_weights(whisper_dir: Path, scratch: Path, engine: str | None) -> tuple[Path, WhisperValues]:
    """The whisper model dir whose ``1/`` a variant on ``engine`` shares, and the exported values
    for it: the export itself, or its weights exported for the other engine into ``scratch`` (with
    the export's own batching, instances and language): every system serves the same Whisper."""
    exported = triton_config.read(whisper_dir, WhisperValues)
    if engine in (None, exported.engine):
        return whisper_dir, exported
    written = export_whisper.export(export_whisper.parse_args([
        "--repository", str(scratch), "--engine", engine, "--instance-kind", exported.instance_kind,
        "--source", str(whisper_dir / "1" / exported.checkpoint)]))
    other = triton_config.read(written, WhisperValues)
    return written, exported.model_copy(update={key: getattr(other, key) for key in (
        "engine", "checkpoint", "compute_type", "inter_threads", "fp16", "encoder_context", "cpu_int8")})


@contextmanager
def edge_on_triton(repository: Path, logs: Path):
    ports = Ports(free_port(), free_port(), free_port())
    with open(logs / "triton.log", "wb") as log, TritonServer(repository, ports, log_file=log), \
            open(logs / "edge.log", "wb") as edge_log, \
            running_edge(free_port(), f"127.0.0.1:{ports.grpc}", edge_log) as edge:
        yield f"ws://{edge.address}"


@contextmanager
def baseline(repository: Path, logs: Path, module: str = "inprocess_server"):
    port = free_port()
    cmd = [sys.executable, "-m", f"loadtest.baselines.{module}", "--port", str(port),
           "--model-repository", str(repository)]
    with open(logs / "baseline.log", "wb") as log:
        server = ManagedProcess("baseline", cmd, log=log)
        server.start(f"http://127.0.0.1:{port}/docs", BASELINE_START_TIMEOUT_S)
        try:
            yield f"ws://127.0.0.1:{port}"
        finally:
            server.stop()


def system_under_test(key: str, repository: Path, tmp: Path, logs: Path):
    """A context manager that runs system ``key`` and yields its WebSocket base URL."""
    if key == "a":
        return edge_on_triton(repository, logs)
    if key == "b":
        return edge_on_triton(variant_repository(repository, tmp / "unbatched", {}, batching=False), logs)
    if key == "f":
        return edge_on_triton(variant_repository(repository, tmp / "fast", FAST_WHISPER), logs)
    if key == "t":
        return edge_on_triton(variant_repository(repository, tmp / "torch", TORCH_WHISPER), logs)
    if key == "d":
        return baseline(repository, logs, "streaming_peer")
    return baseline(repository, logs)


def report(results: dict, args, name: str) -> str:
    best = {key: max_within_sla(levels) for key, levels in results.items()}

    def ratio(a: int, b: int) -> str:
        return "∞ (baseline holds none)" if b == 0 else f"{a / b:.1f}×"

    lines = [f"- **Date:** {dt.date.today()}; **machine:** {machine()}, no GPU; load generated on the same machine",
             f"- **SLA:** segment p95 ≤ {args.sla_p95_ms:.0f} ms; {args.duration} s of load per level; "
             "each stream plays loadtest/audio/dialogue_en.wav in real time (20 ms frames), over and over",
             f"- **Command:** `python -m loadtest.compare --systems {args.systems} --duration {args.duration}`", "",
             "| system | max real-time streams within SLA |", "|---|---:|"]
    lines += [f"| ({key}) {SYSTEMS[key]} | {best[key]} |" for key in results]
    lines += [""] + [f"- ({k}) / ({base}) = **{ratio(best[k], best[base])}**"
                     for base in BASELINES if base in best for k in best if k not in BASELINES]
    for key, levels in results.items():
        lines += ["", f"({key}) {SYSTEMS[key]}", "", table(levels)]
    lines += ["", f"![p50/p95 against streams](img/{name}.png)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    p.add_argument("--systems", default="abcf", help="which of a, b, c, f to run")
    add_arguments(p)
    args = p.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.systems:
            out = args.out.parent / "compare" / key
            out.mkdir(parents=True, exist_ok=True)
            with system_under_test(key, args.model_repository, Path(tmp), out) as host:
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
