"""Run the service's processes as children: start, wait until healthy, and stop them for sure.

Used by ``make run``, the integration tests and the benchmarks, for the edge, tritonserver and
the comparison baseline alike.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
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

CREDENTIAL_SETTINGS = ("API_KEYS_FILE", "API_KEY_HASHES", "JWT_SECRET", "JWT_PUBLIC_KEY_FILE")
"""EDGE_* variables that configure credentials: with any of them set, the launcher leaves auth on."""
EDGE_START_TIMEOUT_S = 30
"""uvicorn plus numpy/PyAV imports take a few seconds on a busy 2-core machine."""
EDGE_STOP_GRACE_S = 70
"""How long a stopped edge may take before it is killed: its drain (EDGE_DRAIN_GRACE_S, 30 s by
default) plus the longest call of results still in flight (EDGE_TRITON_TIMEOUT_S 15 s + 5 s) and
a margin.
An edge with no open session exits at once."""
HEALTH_POLL_S = 0.2
"""Polling interval while a server starts: readiness has no push notification."""
GROUP_EXIT_TIMEOUT_S = 10
"""How long the leftovers of a stopped child's process group (SIGKILLed) may take to vanish."""
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
"""prctl(2) options (linux/prctl.h)."""


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False


def become_subreaper() -> None:
    """Make orphaned descendants (a killed server's workers) children of this process, so that
    they can be reaped here instead of lingering as zombies under a PID 1 that does not reap."""
    if not _prctl(PR_SET_CHILD_SUBREAPER, 1):
        logger.debug("cannot become a child subreaper on this system")


def _terminate_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if this process dies without stopping it (even by SIGKILL)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes (zombies included) of process group ``pgid`` (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # Fields after the parenthesised command: state, ppid, pgrp, ...
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        if int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if it is (an orphan adopted by) our child and has exited."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not ours: its own parent (or init) reaps it


def kill_group(pgid: int, timeout_s: float = GROUP_EXIT_TIMEOUT_S) -> list[int]:
    """SIGKILL what is left of process group ``pgid`` and wait until it is gone; returns the
    pids still there after ``timeout_s`` (empty when all went)."""
    deadline = time.monotonic() + timeout_s
    while members := group_members(pgid):
        if time.monotonic() > deadline:
            return members
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:  # only zombies are left
            pass
        for pid in members:
            _reap(pid)
        time.sleep(HEALTH_POLL_S)  # polling for the group to be gone, bounded by the deadline
    return []


def free_port() -> int:
    """A TCP port nothing listens on right now (for tests and benchmarks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManagedProcess:
    """One child process: ``start()`` returns once ``health_url`` answers 200; ``stop()`` sends
    SIGTERM and kills the process if it has not exited after ``stop_grace_s``.

    The child gets SIGTERM if this process dies without stopping it (Linux: when the thread that
    started it ends, so start children from a thread that outlives them). With ``own_group`` it leads a
    new session (its own process group, out of reach of the terminal's Ctrl-C, which this process
    relays as a stop), and ``stop()`` also kills and reaps whatever its group still holds once it has exited (the
    workers it forked), so nothing outlives it."""

    def __init__(self, name: str, cmd: list[str], *, env: dict[str, str] | None = None, log: IO | None = None,
                 stop_grace_s: float = EDGE_STOP_GRACE_S, cwd: Path = REPO_ROOT, own_group: bool = False,
                 stop_signal: int = signal.SIGTERM):
        self.name, self.cmd, self.env, self.log, self.cwd = name, cmd, env, log, cwd
        self.stop_grace_s, self.own_group, self.stop_signal = stop_grace_s, own_group, stop_signal
        self.process: subprocess.Popen | None = None

    def start(self, health_url: str | Callable[[], bool], timeout_s: float,
              check: Callable[[], None] | None = None) -> ManagedProcess:
        """Start and wait for health (a URL that answers 200, or a probe that returns True);
        ``check`` runs while waiting and raises to give up early."""
        logger.info("starting %s: %s", self.name, " ".join(self.cmd))
        if self.own_group:
            become_subreaper()
        self.process = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdout=self.log,
                                        stderr=subprocess.STDOUT if self.log else None,
                                        start_new_session=self.own_group, preexec_fn=_terminate_with_parent)
        try:
            wait_http(health_url, self.process, timeout_s, check)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> int | None:
        """The exit code; None if the process was never started. The child is always reaped."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(self.stop_grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s: killing it", self.name, self.stop_grace_s)
                self.process.kill()
        code = self.process.wait()
        if self.own_group:
            self._kill_leftovers()
        return code

    def _kill_leftovers(self) -> None:
        left = kill_group(self.process.pid)
        if left:
            logger.error("%s: processes %s of its group did not exit", self.name, left)

    def poll(self) -> int | None:
        """The exit code if the child has exited (reaping it), else None."""
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.process.poll()

    def wait(self) -> int:
        """Block until the process exits by itself."""
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.process.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def wait_http(url: str | Callable[[], bool], process: subprocess.Popen, timeout_s: float,
              check: Callable[[], None] | None = None) -> None:
    """Return once ``url`` answers 2xx (or the probe ``url`` returns True); fail fast if the process
    exits first or ``check`` raises."""
    deadline = time.monotonic() + timeout_s
    probe = url if callable(url) else lambda: _answers(url)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        if probe():
            return
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


def edge_process(port: int, triton_url: str, log: IO | None = None, host: str = "127.0.0.1",
                 **settings: object) -> tuple[ManagedProcess, str]:
    """The (unstarted) edge on host:port against triton_url, and its /healthz URL; extra EDGE_*
    settings are given as keyword arguments."""
    # `make run`, the tests and benchmarks run the edge open on purpose, unless the environment
    # (EDGE_AUTH, EDGE_ALLOWED_ORIGINS) or a keyword argument chooses otherwise (docs/SECURITY.md).
    credentials = any(f"EDGE_{name}" in os.environ for name in CREDENTIAL_SETTINGS)
    defaults = () if credentials else (("auth", "none"), ("allowed_origins", "*"))
    settings = {**{key: value for key, value in defaults if f"EDGE_{key.upper()}" not in os.environ}, **settings}
    env = dict(os.environ, EDGE_PORT=str(port), EDGE_HOST=host, EDGE_TRITON_URL=triton_url,
               **{f"EDGE_{key.upper()}": str(value) for key, value in settings.items()})
    env.pop("TRITON_URL", None)  # EDGE_TRITON_URL is the one that applies
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return ManagedProcess("edge", [sys.executable, "-m", "edge"], env=env, log=log), f"http://{probe_host}:{port}/healthz"


@contextmanager
def running_edge(port: int, triton_url: str, log: IO | None = None, host: str = "127.0.0.1",
                 **settings: object) -> Iterator[RunningEdge]:
    """The edge (``python -m edge``) on host:port against triton_url, with extra EDGE_* settings
    given as keyword arguments; yields once /healthz answers, stops it on exit."""
    edge, health_url = edge_process(port, triton_url, log, host, **settings)
    edge.start(health_url, EDGE_START_TIMEOUT_S)
    try:
        yield RunningEdge(health_url.removeprefix("http://").removesuffix("/healthz"), edge)
    finally:
        edge.stop()
