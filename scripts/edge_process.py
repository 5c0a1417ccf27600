"""Run the real edge (uvicorn, ``python -m edge``) as a child process, for tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from scripts.serve_triton import REPO_ROOT

EDGE_START_TIMEOUT_S = 30
"""uvicorn plus numpy/PyAV imports take a few seconds on a busy 2-core machine."""


@contextmanager
def running_edge(port: int, triton_url: str, log_path: Path, **settings):
    """Start the edge on 127.0.0.1:port against triton_url; yields "127.0.0.1:port"."""
    env = dict(os.environ, EDGE_PORT=str(port), EDGE_HOST="127.0.0.1", EDGE_TRITON_URL=triton_url,
               **{f"EDGE_{k.upper()}": str(v) for k, v in settings.items()})
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "edge"], cwd=REPO_ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", process)
            yield f"127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(30)


def wait_http(url: str, process: subprocess.Popen, timeout_s: float = EDGE_START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)  # polling interval while the server starts
    raise TimeoutError(f"nothing answered at {url}")


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
