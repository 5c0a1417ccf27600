"""Run the real ``tritonserver`` binary from the nvidia-pytriton wheel on this repository (CPU).

Only the binary is used, not PyTriton's Python API. Three things make it and its python
backend stub run: LD_LIBRARY_PATH holds the wheel's bundled libraries, the stub for this
Python version sits next to ``libtriton_python.so`` in a backend directory, and this venv's
``bin/`` comes first on PATH (the stub finds the venv's packages through it).

    python -m scripts.serve_triton            # Ctrl-C stops it cleanly
"""

from __future__ import annotations

import filecmp
import importlib.util
import logging
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from scripts.cli import MODEL_REPOSITORY, REPO_ROOT, parser, setup_logging
from scripts.launch import ManagedProcess

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 300
"""How long to wait for every model to load; Whisper on 2 CPU cores takes tens of seconds."""
STOP_TIMEOUT_S = 30
"""Grace period for in-flight requests on shutdown before the server is killed."""
FATAL_LOG_MARKERS = ("failed to load '", "Failed to preinitialize Python stub")
"""Log lines that mean a model will never become ready (the second one hangs its load)."""
MAX_REASON_CHARS = 400


@dataclass
class Ports:
    http: int = 8010
    grpc: int = 8011
    metrics: int = 8012


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


def command(repository: Path, ports: Ports, backends: Path, extra: list[str]) -> list[str]:
    server_dir, _ = wheel_paths()
    return [
        str(server_dir / "bin" / "tritonserver"), f"--model-repository={repository}",
        f"--backend-directory={backends}", f"--http-port={ports.http}", f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}", f"--exit-timeout-secs={STOP_TIMEOUT_S}", *extra,
    ]


class TritonServer:
    """A tritonserver child process; ``start()`` returns once every model is ready."""

    def __init__(self, repository: Path, ports: Ports, extra_args: list[str] | None = None, log_file: IO | None = None):
        self.repository, self.ports = repository, ports
        self.extra_args = extra_args or []
        self.log_file = log_file
        self.server: ManagedProcess | None = None

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> TritonServer:
        backends = prepare_backends(REPO_ROOT / ".cache" / "triton-backends")
        # Triton drains in-flight requests for STOP_TIMEOUT_S after SIGTERM; it is killed after that.
        self.server = ManagedProcess("tritonserver", command(self.repository, self.ports, backends, self.extra_args),
                                     env=server_env(), log=self.log_file, stop_grace_s=STOP_TIMEOUT_S + 5)
        try:
            self.server.start(f"http://127.0.0.1:{self.ports.http}/v2/health/ready", timeout_s, self._check_log)
        except RuntimeError as exc:
            reasons = self.failures()
            if reasons and "could not load" not in str(exc):
                raise RuntimeError(f"{exc}; the log says: " + " | ".join(reasons)) from exc
            raise
        logger.info("tritonserver ready: HTTP %d, gRPC %d, metrics %d", *vars(self.ports).values())
        return self

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
        return None if self.server is None else self.server.stop()

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


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    p.add_argument("--http-port", type=int, default=Ports.http)
    p.add_argument("--grpc-port", type=int, default=Ports.grpc)
    p.add_argument("--metrics-port", type=int, default=Ports.metrics)
    args, extra = p.parse_known_args(argv)
    server = TritonServer(args.model_repository, Ports(args.http_port, args.grpc_port, args.metrics_port), extra)
    stop_on_sigterm()
    try:
        server.start()
        print(f"Triton ready: gRPC localhost:{args.grpc_port}, HTTP localhost:{args.http_port}. Ctrl-C stops it.",
              flush=True)
        return server.wait()
    except KeyboardInterrupt:
        logger.info("stopping tritonserver")
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
