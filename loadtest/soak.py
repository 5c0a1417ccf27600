"""Soak: N real-time streams for a long time against a fresh tritonserver and edge, with the
memory (RSS) of both sampled from start to end, to show that nothing grows under steady load.

Each stream plays the English dialogue in real time, in sessions of SESSION_S seconds one after
another (so session set-up and tear-down are soaked too):

    python -m loadtest.soak [--streams 2] [--minutes 30] [--sample-s 60]

Triton's RSS is that of tritonserver and its python backend stubs together. A tritonserver that
dies is restarted at once, as `make run`'s supervisor would (after its 1 s backoff), and counted:
tritonserver 2.51 can crash under ensemble load (docs/OPERATIONS.md).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from loadtest.flood import StreamReport, dialogue_pcm, stream
from scripts.cli import MODEL_REPOSITORY, parser, setup_logging
from scripts.service.launch import free_port, running_edge
from scripts.service.serve_triton import Ports, TritonServer, stop_on_sigterm

logger = logging.getLogger(__name__)

SESSION_S = 60.0
"""Speech per session; each stream opens the next session when one ends."""
MIB = 1 << 20


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and all its descendants, in MiB."""
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / MIB


async def run_stream(url: str, until: float, report: StreamReport) -> None:
    pcm = dialogue_pcm(SESSION_S)
    while time.monotonic() < until:
        await stream(url, pcm, report, realtime=True)


CHECK_S = 1.0
"""How often the soak checks that tritonserver is alive."""


async def sample(pids: dict[str, Callable[[], int]], every_s: float, until: float, samples: list[dict]) -> None:
    start = time.monotonic()
    while True:
        samples.append({"minute": round((time.monotonic() - start) / 60, 1),
                        **{name: round(tree_rss_mib(pid()), 1) for name, pid in pids.items()}})
        logger.info("rss MiB: %s", samples[-1])
        if time.monotonic() >= until:
            return
        await asyncio.sleep(min(every_s, max(until - time.monotonic(), 0)))  # sampling period


async def keep_alive(triton: TritonServer, until: float, crashes: list[float]) -> None:
    """Restart tritonserver whenever it has died; the minute of each crash goes into ``crashes``."""
    start = time.monotonic()
    while time.monotonic() < until:
        if triton.poll() is not None:
            crashes.append(round((time.monotonic() - start) / 60, 1))
            logger.error("tritonserver died at minute %.1f: restarting it", crashes[-1])
            await asyncio.to_thread(lambda: (triton.stop(), triton.start()))
        await asyncio.sleep(CHECK_S)  # polling period: child exits have no notification here


async def soak(url: str, streams: int, seconds: float, edge_pid: int, triton: TritonServer, every_s: float):
    until = time.monotonic() + seconds
    reports = [StreamReport() for _ in range(streams)]
    samples: list[dict] = []
    crashes: list[float] = []
    pids = {"edge": lambda: edge_pid, "triton": lambda: triton.server.process.pid}
    sampler = asyncio.create_task(sample(pids, every_s, until, samples))
    watcher = asyncio.create_task(keep_alive(triton, until, crashes))
    await asyncio.gather(*(run_stream(url, until, r) for r in reports))
    await sampler  # its last sample is taken at the end
    await watcher
    return reports, samples, crashes


def report_lines(streams: int, minutes: float, reports: list[StreamReport], samples: list[dict],
                 crashes: list[float]) -> list[str]:
    events = StreamReport([e for r in reports for e in r.events])
    p50, p95 = events.percentile_ms(50), events.percentile_ms(95)
    first, last = samples[0], samples[-1]
    return [
        "| streams | minutes | segments | errors | p50 ms | p95 ms | edge RSS MiB start → end "
        "| Triton RSS MiB start → end | Triton crashes (minute) |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {streams} | {minutes:g} | {len(events.segments)} | {len(events.errors)} | "
        f"{'–' if p50 is None else f'{p50:.0f}'} | {'–' if p95 is None else f'{p95:.0f}'} | "
        f"{first['edge']:.0f} → {last['edge']:.0f} | {first['triton']:.0f} → {last['triton']:.0f} | "
        f"{', '.join(f'{m:g}' for m in crashes) or 'none'} |",
        "", "| minute | edge RSS MiB | Triton RSS MiB |", "|---:|---:|---:|",
        *(f"| {s['minute']:g} | {s['edge']:.0f} | {s['triton']:.0f} |" for s in samples),
    ]


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    stop_on_sigterm()
    p = parser(__doc__)
    p.add_argument("--streams", type=int, default=2, help="concurrent real-time streams")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--sample-s", type=float, default=60.0, help="seconds between RSS samples")
    args = p.parse_args(argv)
    ports = Ports(free_port(), free_port(), free_port())
    with tempfile.TemporaryDirectory() as logs, open(Path(logs) / "triton.log", "wb") as triton_log, \
            open(Path(logs) / "edge.log", "wb") as edge_log, \
            TritonServer(MODEL_REPOSITORY, ports, log_file=triton_log) as triton, \
            running_edge(free_port(), f"127.0.0.1:{ports.grpc}", edge_log) as edge:
        reports, samples, crashes = asyncio.run(soak(f"ws://{edge.address}/ws/audio", args.streams,
                                                     args.minutes * 60, edge.process.process.pid, triton,
                                                     args.sample_s))
    print("\n".join(report_lines(args.streams, args.minutes, reports, samples, crashes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
