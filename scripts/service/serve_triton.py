"""Run the real ``tritonserver`` binary from the nvidia-pytriton wheel on this repository (CPU).

Only the binary is used, not PyTriton's Python API. Three things make it and its python
backend stub run: LD_LIBRARY_PATH holds the wheel's bundled libraries, the stub for this
Python version sits next to ``libtriton_python.so`` in a backend directory, and this venv's
``bin/`` comes first on PATH (the stub finds the venv's packages through it).

    python -m scripts.service.serve_triton            # Ctrl-C stops it cleanly
    python -m scripts.service.serve_triton --address 0.0.0.0   # reachable from other machines
    python -m scripts.service.serve_triton --replicas 3        # three servers, ports 8010-8012, 8013-8015, 8016-8018

It binds HTTP, gRPC and metrics to 127.0.0.1 unless --address says otherwise. Triton runs in its
own process group; stopping it (or finding it dead) also kills and reaps its python backend stubs
and removes the shared-memory regions it made in /dev/shm, so nothing outlives it.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from scripts.cli import MODEL_REPOSITORY, REPO_ROOT, parser, setup_logging
from scripts.service.launch import ManagedProcess

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 300
"""How long to wait for every model to load; Whisper on 2 CPU cores takes tens of seconds."""
STOP_TIMEOUT_S = 30
"""Grace period for in-flight requests on shutdown before the server is killed."""
FATAL_LOG_MARKERS = ("failed to load '", "Failed to preinitialize Python stub")
"""Log lines that mean a model will never become ready (the second one hangs its load)."""
MAX_REASON_CHARS = 400
DEFAULT_BIND_ADDRESS = "127.0.0.1"
"""Interface of Triton's HTTP, gRPC and metrics endpoints: the edge is its only client."""
REPLICA_PORT_STEP = 3
"""Ports one replica takes (HTTP, gRPC, metrics); replica i starts at the base ports + 3 i."""
POLL_S = 0.5
"""How often a multi-replica serve_triton checks whether a replica exited."""
SHM_DIR = Path("/dev/shm")
SHM_REGION_PREFIX = "triton_python_backend_shm_region_"
"""The python backend's default shared-memory region prefix; each start adds a unique token to it
(backend setting shm-region-prefix-name) so that exactly this server's regions can be removed."""


@dataclass
class Ports:
    http: int = 8010
    grpc: int = 8011
    metrics: int = 8012

    def replica(self, index: int) -> Ports:
        """Ports of replica ``index``: each replica takes the next three consecutive ports."""
        step = REPLICA_PORT_STEP * index
        return Ports(self.http + step, self.grpc + step, self.metrics + step)


def wheel_paths() -> tuple[Path, Path]:
    """(pytriton/tritonserver dir, nvidia_pytriton.libs dir) of the installed wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nvidia-pytriton is not installed in this environment: pip install -r requirements.txt")
    package = Path(next(iter(spec.submodule_search_locations)))
    return package / "tritonserver", package.parent / "nvidia_pytriton.libs"


def _install(src: Path, dst: Path) -> None:
    """Copy unless identical; replace atomically, since a running server may be executing dst."""
    if dst.exists() and filecmp.cmp(src, dst, shallow=False):
        return
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def prepare_backends(target: Path) -> Path:
    """Backend directory whose python/ holds libtriton_python.so, its utils and this Python's stub."""
    server_dir, _ = wheel_paths()
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for item in (server_dir / "backends" / "python").iterdir():
        if item.is_file():
            _install(item, python_dir / item.name)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeError(f"nvidia-pytriton ships no python backend stub for Python {version}")
    _install(stub, python_dir / stub.name)
    return target


def server_env() -> dict[str, str]:
    _, libs = wheel_paths()
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.prefix) / "bin"), env.get("PATH", "")])
    return env


def command(repository: Path, ports: Ports, backends: Path, extra: list[str], address: str = DEFAULT_BIND_ADDRESS,
            shm_prefix: str = SHM_REGION_PREFIX) -> list[str]:
    server_dir, _ = wheel_paths()
    return [
        str(server_dir / "bin" / "tritonserver"), f"--model-repository={repository}",
        f"--backend-directory={backends}", f"--http-address={address}", f"--http-port={ports.http}",
        f"--grpc-address={address}", f"--grpc-port={ports.grpc}", f"--metrics-address={address}",
        f"--metrics-port={ports.metrics}", f"--exit-timeout-secs={STOP_TIMEOUT_S}",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}", *extra,
    ]


def remove_shm_regions(prefix: str, shm_dir: Path = SHM_DIR) -> list[Path]:
    """Delete the shared-memory files whose names start with ``prefix``; returns them."""
    removed = []
    for path in shm_dir.glob(f"{prefix}*"):
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass  # removed by its owner meanwhile
    return removed


class TritonServer:
    """A tritonserver child process; ``start()`` returns once every model is ready."""

    def __init__(self, repository: Path, ports: Ports, extra_args: list[str] | None = None, log_file: IO | None = None,
                 address: str = DEFAULT_BIND_ADDRESS):
        self.repository, self.ports, self.address = repository, ports, address
        self.extra_args = extra_args or []
        self.log_file = log_file
        self.server: ManagedProcess | None = None
        self.shm_prefix: str | None = None
        """This start's shared-memory region prefix (unique per start)."""

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> TritonServer:
        """Start (again, after ``stop()``) and wait until every model is ready."""
        backends = prepare_backends(REPO_ROOT / ".cache" / "triton-backends")
        self.shm_prefix = f"{SHM_REGION_PREFIX}{uuid.uuid4().hex[:12]}_"
        cmd = command(self.repository, self.ports, backends, self.extra_args, self.address, self.shm_prefix)
        # Triton drains in-flight requests for STOP_TIMEOUT_S after SIGTERM; it is killed after that.
        self.server = ManagedProcess("tritonserver", cmd, env=server_env(), log=self.log_file,
                                     stop_grace_s=STOP_TIMEOUT_S + 5, own_group=True)
        probe_host = "127.0.0.1" if self.address in ("0.0.0.0", "::") else self.address
        try:
            self.server.start(f"http://{probe_host}:{self.ports.http}/v2/health/ready", timeout_s, self._check_log)
        except BaseException as exc:
            self._remove_shm()  # ManagedProcess.start stopped the server and its stubs
            if isinstance(exc, RuntimeError):
                self._explain(exc)
            raise
        logger.info("tritonserver ready on %s: HTTP %d, gRPC %d, metrics %d", self.address, *vars(self.ports).values())
        return self

    def _explain(self, exc: RuntimeError) -> None:
        """Raise ``exc`` with the model-loading errors of the log added, if there are any."""
        reasons = self.failures()
        if reasons and "could not load" not in str(exc):
            raise RuntimeError(f"{exc}; the log says: " + " | ".join(reasons)) from exc

    def _remove_shm(self) -> None:
        if not self.shm_prefix:
            return
        removed = remove_shm_regions(self.shm_prefix)
        if removed:
            logger.info("removed %d shared-memory region(s) left by tritonserver", len(removed))

    def _check_log(self) -> None:
        """While loading: a model that failed (or whose python stub never started) leaves Triton
        not ready, or makes it exit, with the reason only in its log: raise with that reason now."""
        reasons = self.failures()
        if reasons:
            raise RuntimeError("tritonserver could not load its models: " + " | ".join(reasons))

    def failures(self) -> list[str]:
        """Model-loading errors in the server's log (only when it logs to a file)."""
        path = Path(getattr(self.log_file, "name", "") or "")
        if not path.is_file():
            return []
        lines = path.read_text(errors="replace").splitlines()
        return [line.strip()[:MAX_REASON_CHARS] for line in lines if any(m in line for m in FATAL_LOG_MARKERS)]

    def stop(self) -> int | None:
        """Stop the server (or reap it if it died), its stubs and its shared memory; its exit code."""
        if self.server is None:
            return None
        code = self.server.stop()
        self._remove_shm()
        return code

    def poll(self) -> int | None:
        """The exit code if the server has exited, else None."""
        if self.server is None:
            raise RuntimeError("tritonserver was never started")
        return self.server.poll()

    def wait(self) -> int:
        if self.server is None:
            raise RuntimeError("tritonserver was never started")
        return self.server.wait()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so Ctrl-C and `kill` stop the children the same way."""
    def interrupt(*_):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, interrupt)


def add_address_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=DEFAULT_BIND_ADDRESS,
                   help="interface Triton's HTTP, gRPC and metrics endpoints bind to (0.0.0.0: all; "
                        f"default {DEFAULT_BIND_ADDRESS})")


def replicas(repository: Path, ports: Ports, count: int, extra: list[str], address: str) -> list[TritonServer]:
    """``count`` servers of one repository on consecutive ports (see Ports.replica)."""
    return [TritonServer(repository, ports.replica(i), extra, address=address) for i in range(count)]


def serve(servers: list[TritonServer]) -> int:
    """Start every server, then wait until one exits; its exit code."""
    for server in servers:
        server.start()
    grpc = ", ".join(f"{s.address}:{s.ports.grpc}" for s in servers)
    print(f"Triton ready ({len(servers)} replica{'s' * (len(servers) > 1)}): gRPC {grpc}. Ctrl-C stops it.", flush=True)
    while True:
        for server in servers:
            if (code := server.poll()) is not None:
                logger.error("tritonserver on gRPC port %d exited with %s", server.ports.grpc, code)
                return code
        time.sleep(POLL_S)  # polling interval: child exits have no notification here


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    p.add_argument("--http-port", type=int, default=Ports.http)
    p.add_argument("--grpc-port", type=int, default=Ports.grpc)
    p.add_argument("--metrics-port", type=int, default=Ports.metrics)
    add_replicas_argument(p)
    add_address_argument(p)
    args, extra = p.parse_known_args(argv)
    servers = replicas(args.model_repository, Ports(args.http_port, args.grpc_port, args.metrics_port),
                       args.replicas, extra, args.address)
    stop_on_sigterm()
    try:
        return serve(servers)
    except KeyboardInterrupt:
        logger.info("stopping tritonserver")
        return 0
    finally:
        for server in reversed(servers):
            server.stop()


def add_replicas_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replicas", type=int, default=1, choices=range(1, 33), metavar="N",
                   help="tritonserver processes on consecutive ports (default 1)")


if __name__ == "__main__":
    sys.exit(main())
