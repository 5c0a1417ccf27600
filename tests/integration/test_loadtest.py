"""Short headless Locust runs of loadtest/locustfile.py against the real edge and Triton."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.cli import REPO_ROOT

RUN_SECONDS = 20
"""Long enough for each user to finish one real-time session of the ~12 s fixture."""


def locust(edge: str, out: Path, sla_ms: float, users: int = 2) -> tuple[subprocess.CompletedProcess, dict]:
    prefix = out / "run"
    cmd = [sys.executable, "-m", "locust", "-f", str(REPO_ROOT / "loadtest" / "locustfile.py"), "--headless",
           "--host", f"ws://{edge}", "-u", str(users), "-r", str(users), "-t", f"{RUN_SECONDS}s",
           "--stop-timeout", "90", "--csv", str(prefix), "--sla-p95-ms", str(sla_ms), "--only-summary"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    with open(f"{prefix}_stats.csv") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    return proc, rows


@pytest.mark.parametrize(("sla_ms", "passes"), [(120_000, True), (1, False)])
def test_headless_locust_records_segments_and_enforces_the_sla(edge, tmp_path, sla_ms, passes):
    proc, rows = locust(edge, tmp_path, sla_ms)
    output = proc.stdout + proc.stderr
    segment = rows.get(("WS", "segment"))
    assert segment is not None, output
    assert int(segment["Request Count"]) >= 3, output  # at least one full session's segments
    assert int(segment["Failure Count"]) == 0, output
    assert float(segment["95%"]) > 0
    assert "segment latency:" in output
    assert "Traceback" not in output and "ConnectionError" not in output, output  # a quiet stop
    assert (proc.returncode == 0) is passes, output
    if not passes:
        assert "SLA broken" in output
