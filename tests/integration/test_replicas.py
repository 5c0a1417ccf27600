"""Several tritonserver replicas behind one edge (issue 10): a replica killed mid-stream loses no
segment, a restarted one takes traffic again within the health interval, and with every replica
gone segments get typed errors until one is back, all without restarting the edge."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable

import pytest

from loadtest.compare import variant_repository
from loadtest.flood import StreamReport, dialogue_pcm, stream
from scripts.service.launch import free_port, http_get, running_edge
from scripts.service.serve_triton import Ports, TritonServer
from scripts.speech import DIALOGUE, wer
from tests.integration.test_edge_bad_input import metric, wait_for_metric

SESSIONS = 3
STREAM_S = 30.0
"""Real-time speech per session: the dialogue three times, nine segments."""
HEALTH_INTERVAL_S = 0.5
MAX_WER = 0.3
POLL_S = 0.05
"""Polling period of conditions on the edge's metrics."""


@pytest.fixture(scope="module")
def fast_repository(model_repository, tmp_path_factory):
    """The exported models with whisper's int8 Linear layers (faster on CPU, full 30 s context so
    transcripts stay exact): two replicas share this machine's two cores, and after one is killed
    the other must carry all three streams within their deadlines."""
    return variant_repository(model_repository, tmp_path_factory.mktemp("fast") / "models", {"cpu_int8": True})


@pytest.fixture
def replicas(fast_repository, tmp_path):
    """Two tritonservers of the CPU-fast repository, each on its own free ports."""
    with contextlib.ExitStack() as stack:
        servers = []
        for i in range(2):
            log = stack.enter_context(open(tmp_path / f"triton{i}.log", "wb"))
            servers.append(TritonServer(fast_repository, Ports(free_port(), free_port(), free_port()), log_file=log))
            stack.callback(servers[-1].stop)
            servers[-1].start()
        yield servers


def kill(server: TritonServer) -> None:
    """SIGKILL tritonserver, as a crash would, then reap it (its stubs, its shared memory)."""
    os.kill(server.server.process.pid, signal.SIGKILL)
    server.stop()


def address(server: TritonServer) -> str:
    return f"127.0.0.1:{server.ports.grpc}"


def replica_metric(edge: str, name: str, server: TritonServer) -> float:
    return metric(edge, name, f'{{replica="{address(server)}"}}')


async def wait_until(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(POLL_S)  # polling period


def check_transcripts(report: StreamReport) -> None:
    assert report.errors == [], report.errors
    segments = report.segments
    assert [s["seq"] for s in segments] == list(range(len(DIALOGUE) * 3)), [s["seq"] for s in segments]
    for index, segment in enumerate(segments):
        assert wer(DIALOGUE[index % len(DIALOGUE)], segment["text"]) <= MAX_WER, segment["text"]


def test_a_replica_killed_mid_stream_loses_no_segment_and_takes_traffic_again_once_back(replicas, tmp_path):
    doomed, survivor = replicas
    url = f"{address(doomed)},{address(survivor)}"
    with open(tmp_path / "edge.log", "wb") as log, \
            running_edge(free_port(), url, log, triton_health_interval_s=HEALTH_INTERVAL_S) as edge:
        reports = [StreamReport() for _ in range(SESSIONS)]

        async def kill_mid_call() -> None:
            # Once the doomed replica has a call of this edge in flight, it dies under that call.
            await wait_until(lambda: replica_metric(edge.address, "edge_triton_replica_in_flight", doomed) > 0, 60)
            await asyncio.to_thread(kill, doomed)

        async def scenario() -> None:
            pcm, ws_url = dialogue_pcm(STREAM_S), f"ws://{edge.address}/ws/audio"
            await asyncio.gather(kill_mid_call(), *(stream(ws_url, pcm, r, realtime=True) for r in reports))

        asyncio.run(scenario())
        retries = http_get(f"http://{edge.address}/metrics")[1]
        calls_before = replica_metric(edge.address, "edge_triton_replica_calls_total", doomed)
        doomed.start()
        ready_at = time.monotonic()
        wait_for_metric(edge.address, "edge_triton_replica_ready", f'{{replica="{address(doomed)}"}}',
                        lambda value: value == 1)
        print(f"restarted replica ready in the edge {time.monotonic() - ready_at:.2f} s after Triton was ready")
        asyncio.run(stream(f"ws://{edge.address}/ws/audio", dialogue_pcm(STREAM_S), StreamReport(), realtime=False))
        calls_after = replica_metric(edge.address, "edge_triton_replica_calls_total", doomed)
    for report in reports:
        check_transcripts(report)
    latencies = sorted(s["latency_ms"] for r in reports for s in r.segments)
    print(f"segment latency across the kill: median {latencies[len(latencies) // 2]:.0f} ms, "
          f"max {latencies[-1]:.0f} ms")
    assert 'edge_triton_retries_total{reason="unavailable"}' in retries, retries
    assert calls_after > calls_before  # the restarted replica serves again


OUTAGE_WAIT_S = 2.0
"""The edge's EDGE_OUTAGE_WAIT_S below: how long a segment waits for a replica before its error."""


def test_with_every_replica_gone_segments_get_typed_errors_until_one_is_back(replicas, tmp_path):
    url = ",".join(address(server) for server in replicas)
    with open(tmp_path / "edge.log", "wb") as log, running_edge(
            free_port(), url, log, triton_health_interval_s=HEALTH_INTERVAL_S, triton_timeout_s=15,
            outage_wait_s=OUTAGE_WAIT_S) as edge:
        for server in replicas:
            kill(server)
        lost = StreamReport()
        asyncio.run(stream(f"ws://{edge.address}/ws/audio", dialogue_pcm(10), lost, realtime=False))
        replicas[1].start()
        wait_for_metric(edge.address, "edge_triton_replica_ready", f'{{replica="{address(replicas[1])}"}}',
                        lambda value: value == 1)
        back = StreamReport()
        asyncio.run(stream(f"ws://{edge.address}/ws/audio", dialogue_pcm(STREAM_S), back, realtime=False))
    assert lost.segments == [] and len(lost.errors) == len(DIALOGUE)
    # each waited its EDGE_OUTAGE_WAIT_S for a replica, then got the typed error naming the limit
    assert all(e["code"] == "triton_unavailable" and OUTAGE_WAIT_S * 1000 <= e["latency_ms"] < 15000
               and "EDGE_OUTAGE_WAIT_S" in e["message"] for e in lost.errors), lost.errors
    check_transcripts(back)
