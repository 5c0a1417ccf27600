"""`make run`'s supervisor against a real Triton crash: tritonserver killed with SIGKILL is
restarted, the edge takes traffic again within a few health intervals of Triton being ready, the
segments of a live stream that found it down are answered late instead of lost, and SIGTERM
leaves no tritonserver, no python backend stub and no /dev/shm region behind."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.client import stream
from moderation.protocol import ErrorEvent, SegmentEvent
from scripts.cli import REPO_ROOT
from scripts.service.launch import free_port, http_get, wait_http
from scripts.service.serve_triton import READY_TIMEOUT_S, STOP_TIMEOUT_S, Ports
from scripts.speech import DIALOGUE, ENGLISH_SENTENCE, wer, write_dialogue

HEALTH_INTERVAL_S = 2.0
"""The edge's default EDGE_TRITON_HEALTH_INTERVAL_S."""
RECOVERY_LIMIT_S = 2 * HEALTH_INTERVAL_S + 2.0
"""Edge ready again after Triton is: one probe interval, plus one probe's deadline of slack."""
RESTART_LIMIT_S = READY_TIMEOUT_S + 30
"""Killed Triton is back: first backoff plus model loading."""
MAX_WER = 0.3
OUTAGE_WAIT_S = 120
"""EDGE_OUTAGE_WAIT_S of the service here: a slow CI machine's restart must fit in it."""
STUB = "triton_python_b"
"""triton_python_backend_stub as /proc/<pid>/comm shows it (15 characters)."""
SHM_MARK = "triton_python_backend_shm_region_"


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of pid, None when it does not exist."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1]), int(fields[2])


def processes() -> dict[int, tuple[str, int, int, str]]:
    """pid -> (state, ppid, pgid, comm) of every process."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        stat = proc_stat(int(entry.name))
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if stat:
            found[int(entry.name)] = (*stat, comm)
    return found


def tritonserver_of(service: int) -> int | None:
    return next((pid for pid, (_, ppid, _, comm) in processes().items()
                 if ppid == service and comm == "tritonserver"), None)


def stubs_of(triton: int) -> dict[int, list[Path]]:
    """Stub pid -> the /dev/shm files named on its command line, for Triton's process group."""
    stubs = {}
    for pid, (_, _, pgid, comm) in processes().items():
        if pgid == triton and comm == STUB:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            stubs[pid] = [Path("/dev/shm") / a.lstrip("/") for a in args if SHM_MARK in a]
    return stubs


def outside_address() -> str | None:
    """This machine's address on its default route (no packet is sent), None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: only selects the outgoing interface
        except OSError:
            return None
        address = sock.getsockname()[0]
    return None if address.startswith("127.") else address


def accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def check_transcript(edge: str, wav: Path) -> None:
    result = asyncio.run(asyncio.wait_for(stream(wav, f"ws://{edge}/ws/audio", language="en"), 180))
    assert not result.of_type(ErrorEvent), result.of_type(ErrorEvent)
    text = " ".join(s.text for s in result.of_type(SegmentEvent))
    assert wer(ENGLISH_SENTENCE, text) <= MAX_WER, text


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)  # polling a condition with a deadline
    pytest.fail(f"not within {timeout_s:.0f} s: {what}")


@pytest.fixture
def service(model_repository, tmp_path):
    """python -m scripts.service.run_service on free ports, as `make run` starts it; yields (process, ports, edge)."""
    ports, edge_port = Ports(free_port(), free_port(), free_port()), free_port()
    # The whole `make run` stack, Redis and the job worker included, on ports and folders of its own.
    env = dict(os.environ, EDGE_PORT=str(edge_port), EDGE_HOST="127.0.0.1", EDGE_TRITON_TIMEOUT_S="60",
               EDGE_TRITON_HEALTH_INTERVAL_S=str(HEALTH_INTERVAL_S), EDGE_OUTAGE_WAIT_S=str(OUTAGE_WAIT_S),
               REDIS_PORT=str(free_port()),
               REDIS_DATA_DIR=str(tmp_path / "redis"), JOBS_DATA_DIR=str(tmp_path / "jobs"),
               JOBS_METRICS_PORT=str(free_port()), POSTGRES_PORT=str(free_port()),
               POSTGRES_DATA_DIR=str(tmp_path / "postgres"), EDGE_CLIPS_DIR=str(tmp_path / "clips"))
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    env.pop("EDGE_TRITON_URL", None)
    env.pop("TRITON_URL", None)
    cmd = [sys.executable, "-m", "scripts.service.run_service", f"--http-port={ports.http}",
           f"--grpc-port={ports.grpc}", f"--metrics-port={ports.metrics}"]
    with open(tmp_path / "service.log", "wb") as log:
        process = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://127.0.0.1:{edge_port}/readyz", process, READY_TIMEOUT_S + 60)
            yield process, ports, f"127.0.0.1:{edge_port}"
        finally:
            if process.poll() is None:  # the test failed before its own SIGTERM
                process.terminate()
                try:
                    process.wait(STOP_TIMEOUT_S + 30)
                except subprocess.TimeoutExpired:
                    process.kill()
            process.wait()


def test_killed_triton_is_restarted_and_nothing_outlives_the_service(service, english_wav, capsys, tmp_path):
    process, ports, edge = service
    assert postgres_of(tmp_path / "postgres"), "run_service started no PostgreSQL"
    first = tritonserver_of(process.pid)
    assert first, "run_service has no tritonserver child"
    outside = outside_address()
    for port in vars(ports).values():  # Triton binds to 127.0.0.1 only
        assert accepts("127.0.0.1", port) and not (outside and accepts(outside, port)), (port, outside)
    stubs = stubs_of(first)
    assert stubs and all(p.exists() for shm in stubs.values() for p in shm), stubs
    check_transcript(edge, english_wav)

    killed = time.monotonic()
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: (pid := tritonserver_of(process.pid)) != first and pid, 60, "a new tritonserver")
    assert proc_stat(first) is None, "the killed tritonserver was not reaped"
    wait_for(lambda: not any(proc_stat(pid) for pid in stubs), 30, "the killed server's stubs gone")
    assert not [p for shm in stubs.values() for p in shm if p.exists()], "the killed server's shm regions remain"

    wait_for(lambda: http_get_ok(f"http://127.0.0.1:{ports.http}/v2/health/ready"), RESTART_LIMIT_S, "Triton ready")
    triton_ready = time.monotonic()
    wait_for(lambda: http_get_ok(f"http://{edge}/readyz"), RECOVERY_LIMIT_S, "the edge ready again")
    recovery_s = time.monotonic() - triton_ready
    with capsys.disabled():
        print(f"\nTriton ready again {triton_ready - killed:.1f} s after kill -9; edge ready {recovery_s:.2f} s "
              f"after that ({time.monotonic() - killed:.1f} s in all)", flush=True)
    check_transcript(edge, english_wav)

    stubs.update(stubs_of(second))
    process.send_signal(signal.SIGTERM)
    assert process.wait(STOP_TIMEOUT_S + 30) == 0
    left = {pid: info for pid, info in processes().items()
            if pid in (first, second, *stubs) or info[2] in (first, second)}
    assert not left, f"processes of the service remain: {left}"
    assert not [p for shm in stubs.values() for p in shm if p.exists()], "shm regions of the service remain"
    assert not postgres_of(tmp_path / "postgres"), "the service's PostgreSQL outlived it"


def postgres_of(data_dir: Path) -> list[int]:
    """PostgreSQL processes serving ``data_dir`` (the embedded one's postmaster names it)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"postgres") and str(data_dir).encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_a_live_streams_segments_are_answered_late_not_lost_while_triton_restarts(service, tmp_path, capsys):
    process, _, edge = service
    triton = tritonserver_of(process.pid)
    sentences = DIALOGUE * 2
    wav = write_dialogue(sentences, tmp_path / "dialogue_twice.wav")
    killed: list[float] = []

    def kill_at_first_result(event) -> None:  # the rest of the stream meets the outage
        if isinstance(event, SegmentEvent) and not killed:
            os.kill(triton, signal.SIGKILL)
            killed.append(time.monotonic())

    result = asyncio.run(asyncio.wait_for(stream(wav, f"ws://{edge}/ws/audio", realtime=True, language="en",
                                                 on_event=kill_at_first_result), 300))
    assert killed and tritonserver_of(process.pid) not in (None, triton), "Triton was not killed and restarted"
    assert not result.of_type(ErrorEvent), result.of_type(ErrorEvent)
    segments = result.of_type(SegmentEvent)
    assert [s.seq for s in segments] == list(range(len(sentences))), segments
    assert segments[0].late is None and any(s.late for s in segments), [(s.seq, s.late) for s in segments]
    for segment, sentence in zip(segments, sentences, strict=True):
        assert wer(sentence, segment.text) <= MAX_WER, (sentence, segment.text)
        if segment.late:  # its latency counts the wait for the restarted server
            assert segment.latency_ms > 1000, segment
    late = [f"{s.latency_ms / 1000:.1f}" for s in segments if s.late]
    with capsys.disabled():
        print(f"\nkill -9 at the first result: {len(late)} of {len(segments)} segments late (latency "
              f"{', '.join(late)} s), none lost", flush=True)


def http_get_ok(url: str) -> bool:
    try:
        return http_get(url)[0] == 200
    except OSError:
        return False
