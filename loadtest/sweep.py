"""Sweep: run Locust headless at 1, 2, 4, 8, … concurrent streams until the latency SLA breaks.

    python -m loadtest.sweep --host ws://localhost:8000 --label "edge + Triton" [--sla-p95-ms 3000]

Writes Locust's CSV and HTML reports per level under --out, a PNG of p50/p95 against streams,
and a markdown table into docs/PERFORMANCE.md (between markers named after --label).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import logging
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from scripts.cli import REPO_ROOT, machine, parser, setup_logging

logger = logging.getLogger(__name__)

LOCUSTFILE = REPO_ROOT / "loadtest" / "locustfile.py"
PERFORMANCE_MD = REPO_ROOT / "docs" / "PERFORMANCE.md"


@dataclass
class Level:
    streams: int
    segments: int
    failures: int
    p50_ms: float
    p95_ms: float
    within_sla: bool


def run_level(host: str, streams: int, args, out: Path) -> Level:
    prefix = out / f"u{streams}"
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
           "-u", str(streams), "-r", str(streams), "-t", f"{args.duration}s", "--csv", str(prefix),
           "--html", f"{prefix}.html", "--sla-p95-ms", str(args.sla_p95_ms), "--only-summary",
           "--stop-timeout", "120", "--loglevel", "WARNING"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    (out / f"u{streams}.log").write_text(proc.stdout + proc.stderr)
    row = segment_row(Path(f"{prefix}_stats.csv"))
    segments, failures = int(row.get("Request Count", 0)), int(row.get("Failure Count", 0))
    p50, p95 = float(row.get("50%", 0) or 0), float(row.get("95%", 0) or 0)
    ok = proc.returncode == 0 and segments > 0 and failures == 0 and p95 <= args.sla_p95_ms
    level = Level(streams, segments, failures, p50, p95, ok)
    logger.info("%s", level)
    return level


def segment_row(stats_csv: Path) -> dict:
    if not stats_csv.exists():
        return {}
    with open(stats_csv) as f:
        return next((r for r in csv.DictReader(f) if r["Name"] == "segment"), {})


def sweep(host: str, args, out: Path) -> list[Level]:
    levels, streams = [], 1
    while streams <= args.max_streams:
        levels.append(run_level(host, streams, args, out))
        if not levels[-1].within_sla:
            break
        streams *= 2
    return levels


def max_within_sla(levels: list[Level]) -> int:
    return max((lv.streams for lv in levels if lv.within_sla), default=0)


def plot(levels_by_label: dict[str, list[Level]], sla_ms: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, levels in levels_by_label.items():
        xs = [lv.streams for lv in levels]
        line, = ax.plot(xs, [lv.p95_ms for lv in levels], marker="o", label=f"{label} p95")
        ax.plot(xs, [lv.p50_ms for lv in levels], marker=".", linestyle="--", color=line.get_color(),
                label=f"{label} p50")
    ax.axhline(sla_ms, color="red", linewidth=1, label=f"SLA p95 {sla_ms:.0f} ms")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent real-time streams")
    ax.set_ylabel("segment latency (ms)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def table(levels: list[Level]) -> str:
    lines = ["| streams | segments | failures | p50 ms | p95 ms | within SLA |", "|---:|---:|---:|---:|---:|:---:|"]
    lines += [f"| {lv.streams} | {lv.segments} | {lv.failures} | {lv.p50_ms:.0f} | {lv.p95_ms:.0f} | "
              f"{'yes' if lv.within_sla else 'no'} |" for lv in levels]
    return "\n".join(lines)


def write_section(name: str, body: str, path: Path = PERFORMANCE_MD) -> None:
    """Replace (or append) the block between <!-- BEGIN name --> and <!-- END name -->."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = path.read_text() if path.exists() else "# Performance\n"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def describe(args, label: str, levels: list[Level]) -> str:
    return (f"**{label}** — {dt.date.today()}, `{args.host}`; machine: {machine()} (load generated on the "
            f"same machine); model and settings: {args.model}; {args.duration} s per level, SLA p95 ≤ "
            f"{args.sla_p95_ms:.0f} ms; max streams within SLA: **{max_within_sla(levels)}**\n\n{table(levels)}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sla-p95-ms", type=float, default=3000)
    p.add_argument("--duration", type=int, default=40, help="seconds of load per level")
    p.add_argument("--max-streams", type=int, default=256)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench-results" / "sweep")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--host", default="ws://localhost:8000")
    p.add_argument("--label", default="edge + Triton")
    p.add_argument("--model", default="as exported by `make export`: Whisper base (CTranslate2 int8, inter threads 2, "
                   "max batch 16, queue delay 10 ms), koelectra-small-untrained; edge defaults",
                   help="model and settings of the system under test, for the report")
    add_arguments(p)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    levels = sweep(args.host, args, args.out)
    slug = "-".join(re.findall(r"\w+", args.label.lower()))
    plot({args.label: levels}, args.sla_p95_ms, REPO_ROOT / "docs" / "img" / f"sweep-{slug}.png")
    write_section(f"sweep:{slug}", describe(args, args.label, levels) +
                  f"\n\n![p50/p95 against streams](img/sweep-{slug}.png)")
    (args.out / "levels.json").write_text(__import__("json").dumps([asdict(lv) for lv in levels], indent=2))
    print(table(levels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
