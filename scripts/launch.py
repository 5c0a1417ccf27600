"""Run the service's processes as children: start, wait until healthy, and stop them for sure.

Used by ``make run``, the integration tests and the benchmarks, for the edge, tritonserver and
the comparison baseline alike.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from scripts.cli import REPO_ROOT

logger = logging.getLogger(__name__)

EDGE_START_TIMEOUT_S = 30
"""uvicorn plus numpy/PyAV imports take a few seconds on a busy 2-core machine."""
EDGE_STOP_GRACE_S = 15
"""How long a stopped edge may take to close its sessions before it is killed."""
HEALTH_POLL_S = 0.2
"""Polling interval while a server starts: readiness has no push notification."""


def free_port() -> int:
    """A TCP port nothing listens on right now (for tests and benchmarks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManagedProcess:
    """One child process: ``start()`` returns once ``health_url`` answers 200; ``stop()`` sends
    SIGTERM and kills the process if it has not exited after ``stop_grace_s``."""

    def __init__(self, name: str, cmd: list[str], *, env: dict[str, str] | None = None, log: IO | None = None,
                 stop_grace_s: float = EDGE_STOP_GRACE_S, cwd: Path = REPO_ROOT):
        self.name, self.cmd, self.env, self.log, self.cwd = name, cmd, env, log, cwd
        self.stop_grace_s = stop_grace_s
        self.process: subprocess.Popen | None = None

    def start(self, health_url: str, timeout_s: float, check: Callable[[], None] | None = None) -> ManagedProcess:
        """Start and wait for health; ``check`` runs while waiting and raises to give up early."""
        logger.info("starting %s: %s", self.name, " ".join(self.cmd))
        self.process = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdout=self.log,
                                        stderr=subprocess.STDOUT if self.log else None)
        try:
            wait_http(health_url, self.process, timeout_s, check)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> int | None:
        """The exit code; None if the process was never started."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(self.stop_grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s: killing it", self.name, self.stop_grace_s)
                self.process.kill()
        return self.process.wait()

    def wait(self) -> int:
        """Block until the process exits by itself."""
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.process.wait()


def wait_http(url: str, process: subprocess.Popen, timeout_s: float, check: Callable[[], None] | None = None) -> None:
    """Return once ``url`` answers 2xx; fail fast if the process exits first or ``check`` raises."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if check is not None:
                check()
            time.sleep(HEALTH_POLL_S)
    raise TimeoutError(f"nothing answered at {url} within {timeout_s:.0f} s")


def http_get(url: str) -> tuple[int, str]:
    """Status and body, also for error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass(frozen=True)
class RunningEdge:
    address: str
    """host:port to connect to."""
    process: ManagedProcess


@contextmanager
def running_edge(port: int, triton_url: str, log: IO | None = None, host: str = "127.0.0.1",
                 **settings: object) -> Iterator[RunningEdge]:
    """The edge (``python -m edge``) on host:port against triton_url, with extra EDGE_* settings
    given as keyword arguments; yields once /healthz answers, stops it on exit."""
    env = dict(os.environ, EDGE_PORT=str(port), EDGE_HOST=host, EDGE_TRITON_URL=triton_url,
               **{f"EDGE_{key.upper()}": str(value) for key, value in settings.items()})
    env.pop("TRITON_URL", None)  # EDGE_TRITON_URL is the one that applies
    edge = ManagedProcess("edge", [sys.executable, "-m", "edge"], env=env, log=log)
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    edge.start(f"http://{probe_host}:{port}/healthz", EDGE_START_TIMEOUT_S)
    try:
        yield RunningEdge(f"{probe_host}:{port}", edge)
    finally:
        edge.stop()
