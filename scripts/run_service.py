"""Run the whole service locally: tritonserver (CPU) first, then the edge on port 8000.

    python -m scripts.run_service        # Ctrl-C stops both

Edge settings come from EDGE_* environment variables (see docs/OPERATIONS.md); the edge is
pointed at this Triton unless EDGE_TRITON_URL/TRITON_URL says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from scripts.serve_triton import REPO_ROOT, Ports, TritonServer

logger = logging.getLogger(__name__)

EDGE_STOP_TIMEOUT_S = 15
"""Grace period for open WebSocket sessions when the edge is stopped."""


def start_edge(grpc_port: int) -> subprocess.Popen:
    env = dict(os.environ)
    if "EDGE_TRITON_URL" not in env and "TRITON_URL" not in env:
        env["EDGE_TRITON_URL"] = f"localhost:{grpc_port}"
    return subprocess.Popen([sys.executable, "-m", "edge"], cwd=REPO_ROOT, env=env)


def stop_edge(edge: subprocess.Popen) -> None:
    if edge.poll() is None:
        edge.terminate()
        try:
            edge.wait(EDGE_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            edge.kill()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-repository", type=Path, default=REPO_ROOT / "model_repository")
    args = p.parse_args(argv)
    ports = Ports()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    triton, edge = TritonServer(args.model_repository, ports), None
    try:
        triton.start()
        edge = start_edge(ports.grpc)
        print(f"Service up: ws://localhost:{os.environ.get('EDGE_PORT', '8000')}/ws/audio "
              f"(Triton gRPC localhost:{ports.grpc}). Ctrl-C stops it.", flush=True)
        return edge.wait()
    except KeyboardInterrupt:
        logger.info("stopping edge and tritonserver")
        return 0
    finally:
        if edge is not None:
            stop_edge(edge)
        triton.stop()


if __name__ == "__main__":
    sys.exit(main())
