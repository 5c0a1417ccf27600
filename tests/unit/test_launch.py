"""The one launcher: waits for health, fails fast on a dead child, kills one that ignores SIGTERM,
leaves nothing of a child's process group behind; Triton's bind address and shm clean-up; the
supervisor's restart policy."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scripts.service.launch import ManagedProcess, free_port, group_members
from scripts.service.run_service import (
    MAX_RESTARTS,
    RESTART_BACKOFF_INITIAL_S,
    RESTART_BACKOFF_MAX_S,
    RESTART_WINDOW_S,
    SUPERVISE_POLL_S,
    Supervisor,
)
from scripts.service.serve_triton import Ports, command, remove_shm_regions, replicas

STUBBORN_SERVER = textwrap.dedent("""
    import http.server, signal, sys
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # like an edge stuck on a leaked session
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()
""")


def test_a_child_that_ignores_sigterm_is_killed_after_its_grace_period(tmp_path):
    port = free_port()
    child = ManagedProcess("stubborn", [sys.executable, "-c", STUBBORN_SERVER, str(port)], stop_grace_s=0.5,
                           cwd=tmp_path)
    child.start(f"http://127.0.0.1:{port}/", timeout_s=30)
    assert child.process.poll() is None
    assert child.stop() == -signal.SIGKILL


def test_a_child_that_exits_before_it_is_healthy_fails_fast(tmp_path):
    child = ManagedProcess("broken", [sys.executable, "-c", "raise SystemExit(3)"], cwd=tmp_path)
    with pytest.raises(RuntimeError, match="exited with 3"):
        child.start(f"http://127.0.0.1:{free_port()}/", timeout_s=30)


LEADER_WITH_WORKER = textwrap.dedent("""
    import http.server, subprocess, sys, time
    # a worker in the leader's process group, like tritonserver's python backend stubs
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(worker.pid, flush=True)
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()
""")


def _alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("crash", [False, True], ids=["stopped", "killed"])
def test_a_child_in_its_own_group_leaves_no_worker_and_no_zombie(tmp_path, crash):
    port = free_port()
    log = open(tmp_path / "child.log", "wb")
    child = ManagedProcess("leader", [sys.executable, "-c", LEADER_WITH_WORKER, str(port)], cwd=tmp_path, log=log,
                           stop_grace_s=5, own_group=True)
    child.start(f"http://127.0.0.1:{port}/", timeout_s=30)
    leader = child.process.pid
    worker = int((tmp_path / "child.log").read_text().split()[0])
    assert os.getpgid(worker) == leader and os.getpgid(leader) == leader != os.getpgrp()
    if crash:
        os.kill(leader, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.poll() == -signal.SIGKILL
    child.stop()
    log.close()
    assert not _alive(leader) and not _alive(worker)
    assert group_members(leader) == []


def test_triton_binds_to_loopback_unless_told_and_names_its_own_shm_regions(tmp_path):
    default = command(tmp_path, Ports(1, 2, 3), tmp_path, [], shm_prefix="triton_python_backend_shm_region_abc_")
    for flag in ("--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
                 "--backend-config=python,shm-region-prefix-name=triton_python_backend_shm_region_abc_"):
        assert flag in default
    assert "--grpc-address=0.0.0.0" in command(tmp_path, Ports(1, 2, 3), tmp_path, [], address="0.0.0.0")


def test_only_this_servers_shm_regions_are_removed(tmp_path):
    mine, other = tmp_path / "triton_python_backend_shm_region_abc_1", tmp_path / "triton_python_backend_shm_region_x"
    mine.touch()
    other.touch()
    assert remove_shm_regions("triton_python_backend_shm_region_abc_", tmp_path) == [mine]
    assert other.exists() and not mine.exists()


class FakeChild:
    """Exits (poll returns 1) at the scripted polls; records starts and stops."""

    def __init__(self, log: list[str], name: str, exits: set[int] = frozenset()):
        self.log, self.name, self.exits, self.polls = log, name, exits, 0

    def start(self):
        self.log.append(f"start {self.name}")

    def poll(self):
        self.polls += 1
        return 1 if self.polls in self.exits else None

    def stop(self):
        self.log.append(f"stop {self.name}")


class FakeTime:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def sleep(self, seconds: float):
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_dead_child_is_restarted_with_growing_backoff_until_the_limit():
    log, clock = [], FakeTime()
    crashing = FakeChild(log, "triton", exits=set(range(1, 100)))
    supervisor = Supervisor({"triton": crashing, "edge": FakeChild(log, "edge")}, lambda: clock.now, clock.sleep)
    assert supervisor.run() == 1
    backoffs = [s for s in clock.sleeps if s != SUPERVISE_POLL_S]
    assert backoffs == [min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_INITIAL_S * 2 ** i) for i in range(MAX_RESTARTS)]
    assert log.count("start triton") == MAX_RESTARTS + 1 and log.count("start edge") == 1
    supervisor.stop()
    assert log[-2:] == ["stop edge", "stop triton"]


def test_restarts_older_than_the_window_no_longer_count():
    clock = FakeTime()
    supervisor = Supervisor({"triton": FakeChild([], "triton")}, lambda: clock.now, clock.sleep)
    supervisor.restarts["triton"] = [0.0] * MAX_RESTARTS
    assert supervisor.backoff_s("triton") is None
    clock.now = RESTART_WINDOW_S + 1
    assert supervisor.backoff_s("triton") == RESTART_BACKOFF_INITIAL_S


def test_replicas_take_consecutive_ports_and_are_bound_like_one_server(tmp_path):
    servers = replicas(tmp_path, Ports(9010, 9011, 9012), 3, [], "127.0.0.1")
    assert [(s.ports.http, s.ports.grpc, s.ports.metrics) for s in servers] == [
        (9010, 9011, 9012), (9013, 9014, 9015), (9016, 9017, 9018)]
    assert all(s.address == "127.0.0.1" and s.server is None for s in servers)  # nothing started yet
